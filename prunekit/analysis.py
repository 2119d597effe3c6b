"""Layer-similarity analysis that motivates depth pruning (the SLM paper, arXiv 2502.19159; ShortGPT,
arXiv 2403.03853; docs/methods.md): the linear CKA
of every pair of decoder-block outputs (token-level examples, float64), the cosine similarity of
adjacent blocks' outputs, and ShortGPT's block influence of every block."""
from __future__ import annotations

import torch

from .data.calibration import Calibration
from .errors import PrunekitError
from .engine.stack import BlockStack
from .models.adapter import ModelAdapter
from .models.plumbing import cache_disabled
from .solvers.similarity import block_influence, cka_matrix, mean_token_cosine


@torch.no_grad()
def analyze_layers(model, calibration: Calibration | torch.Tensor, device: str = "cpu", skip_first: int = 0) -> dict:
    """`skip_first` drops the first positions of every window from all statistics: the first
    token's hidden state is often orders of magnitude larger (an attention sink) and can
    dominate a linear CKA."""
    ids = calibration.input_ids if isinstance(calibration, Calibration) else calibration
    adapter = ModelAdapter(model)
    with cache_disabled(model):
        states = BlockStack(adapter, ids, device).all_inputs(list(adapter.layers))
    if not 0 <= skip_first < ids.shape[1]:
        raise PrunekitError(f"--skip-first {skip_first} must be in [0, {ids.shape[1]})")
    states = [s[:, skip_first:] for s in states]
    outputs = states[1:]
    cka = cka_matrix([o.float() for o in outputs])
    n = len(outputs)
    return {
        "layers": n,
        "tokens": int(outputs[0].shape[0] * outputs[0].shape[1]),
        "skip_first": skip_first,
        "cka": cka.tolist(),
        "adjacent_cosine": [mean_token_cosine(outputs[i], outputs[i + 1]) for i in range(n - 1)],
        "block_influence": [block_influence(states[i], states[i + 1]) for i in range(n)],
    }
