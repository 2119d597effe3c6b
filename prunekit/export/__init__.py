from .atomic import atomic_dir, check_output_dir
from .save import save_checkpoint

__all__ = ["atomic_dir", "check_output_dir", "save_checkpoint"]
