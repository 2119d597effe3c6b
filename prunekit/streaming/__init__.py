"""Models larger than memory: read blocks from safetensors on demand, write pruned blocks at once,
resume a killed run (see docs/methods.md, "Streaming")."""
from .checkpoint import CheckpointFiles, StreamedModel
from .driver import DEFAULT_SHARD_BYTES, stream_prune
from .evaluate import stream_perplexity
from .runstate import RunState, partial_dir
from .writer import ShardWriter

__all__ = ["CheckpointFiles", "StreamedModel", "stream_prune", "stream_perplexity", "ShardWriter", "RunState",
           "partial_dir", "DEFAULT_SHARD_BYTES"]
