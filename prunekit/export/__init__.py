from .save import check_output_dir, save_checkpoint, atomic_dir

__all__ = ["check_output_dir", "save_checkpoint", "atomic_dir"]
