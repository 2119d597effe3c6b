from .sequential import BlockVisitor, LayerwiseEngine, BlockInputs

__all__ = ["BlockVisitor", "LayerwiseEngine", "BlockInputs"]
