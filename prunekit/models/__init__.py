from .adapter import ModelAdapter, SUPPORTED_ARCHITECTURES
from .loading import load_model, resolve_model_source

__all__ = ["ModelAdapter", "SUPPORTED_ARCHITECTURES", "load_model", "resolve_model_source"]
