"""Models larger than memory: read blocks from safetensors on demand, write pruned blocks at once,
resume a killed run, evaluate block by block, and decide when to stream (see docs/methods.md, "Streaming")."""
from .checkpoint import CheckpointFiles, StreamedModel
from .driver import DEFAULT_SHARD_BYTES, stream_prune
from .evaluate import stream_counts, stream_kl, stream_perplexity
from .memory import available_memory
from .mode import DEFAULT_STREAM_ABOVE, Mode, choose_mode, decide_mode, weight_bytes
from .runstate import RunState, partial_dir
from .writer import ShardWriter

__all__ = ["CheckpointFiles", "StreamedModel", "stream_prune", "stream_perplexity", "stream_kl", "stream_counts",
           "ShardWriter", "RunState", "partial_dir", "DEFAULT_SHARD_BYTES", "DEFAULT_STREAM_ABOVE", "Mode",
           "choose_mode", "decide_mode", "weight_bytes", "available_memory"]
