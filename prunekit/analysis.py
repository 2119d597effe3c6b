"""Layer-similarity analysis that motivates depth pruning (algorithms.md 7.1, 8): the linear CKA
of every pair of decoder-block outputs (token-level examples, float64), the cosine similarity of
adjacent blocks' outputs, and ShortGPT's block influence of every block."""
from __future__ import annotations

import torch

from .data.calibration import Calibration
from .methods.depth.stack import BlockStack
from .models.adapter import ModelAdapter
from .solvers.similarity import block_influence, cka_matrix, mean_token_cosine


@torch.no_grad()
def analyze_layers(model, calibration: Calibration | torch.Tensor, device: str = "cpu") -> dict:
    ids = calibration.input_ids if isinstance(calibration, Calibration) else calibration
    adapter = ModelAdapter(model)
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False
    try:
        states = BlockStack(adapter, ids, device).all_inputs(list(adapter.layers))
    finally:
        model.config.use_cache = use_cache
    outputs = states[1:]
    cka = cka_matrix([o.float() for o in outputs])
    n = len(outputs)
    return {
        "layers": n,
        "tokens": int(ids.numel()),
        "cka": cka.tolist(),
        "adjacent_cosine": [mean_token_cosine(outputs[i], outputs[i + 1]) for i in range(n - 1)],
        "block_influence": [block_influence(states[i], states[i + 1]) for i in range(n)],
    }
