from .sequential import BlockInputs, BlockVisitor, LayerwiseEngine
from .stack import BlockStack

__all__ = ["BlockVisitor", "LayerwiseEngine", "BlockInputs", "BlockStack"]
