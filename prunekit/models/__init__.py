from .adapter import ModelAdapter, SUPPORTED_MODEL_TYPES
from .loading import load_model, resolve_model_source

__all__ = ["ModelAdapter", "SUPPORTED_MODEL_TYPES", "load_model", "resolve_model_source"]
