from .sources import TextSource, load_source, parse_data_spec, default_data_dir
from .calibration import Calibration, sample_windows, self_generated_windows, build_calibration

__all__ = ["TextSource", "load_source", "parse_data_spec", "default_data_dir", "Calibration",
           "sample_windows", "self_generated_windows", "build_calibration"]
