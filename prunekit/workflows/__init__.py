"""What each command does, as library functions: `prunekit prune` is `prune_model`, `eval` is
`evaluate_model`, `analyze` is `analyze_model`, `bench` is `bench_model`. Each returns the report
(a dict, the same as the JSON it writes) and writes the same files as the command line."""
from .analyze import analyze_model
from .bench import bench_model
from .evaluate import evaluate_model
from .export import export_model
from .prune import prune_model
from .recipe import run_recipe
from .recover import recover_model
from .stream import stream_prune_model

__all__ = ["prune_model", "evaluate_model", "analyze_model", "bench_model", "stream_prune_model", "recover_model",
           "run_recipe", "export_model"]
