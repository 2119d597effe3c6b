"""What the evo-depth tests share: calibration ids, the six-block model whose ShortGPT choice is
second best, and evo-depth's search run on a block stack without the rest of prune()."""
from __future__ import annotations

import torch

from prunekit.engine.stack import BlockStack
from prunekit.methods.depth.base import DepthState
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, plain_model


def calib(n=8, length=32, seed=0):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def six_block_model():
    model = plain_model("llama", seed=0, layers=6)   # ShortGPT picks the second-best pair here
    return model, calib(8, 32, seed=1)


def run_evo_depth(model, ids, **kw):
    from prunekit.methods.evo import EvoDepth, EvoDepthConfig

    adapter = ModelAdapter(model)
    method = EvoDepth(EvoDepthConfig(**kw), adapter)
    method.check()
    state = DepthState(adapter)
    method.search(BlockStack(adapter, ids), state, progress=False)
    state.install()
    return method.details
