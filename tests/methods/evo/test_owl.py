"""The OWL method prunes each block at its own sparsity."""
from __future__ import annotations

import pytest
import torch

from prunekit.methods.base import Job
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, plain_model


def calib(n=8, length=32, seed=0):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def test_owl_method_prunes_each_block_at_its_sparsity():
    from prunekit.methods.evo import OWL, OWLConfig

    model = plain_model("llama", layers=4)
    ids = calib(4, 32)
    method = OWL(OWLConfig(sparsity=0.6, lam=0.1, outlier_m=3.0), ModelAdapter(model))
    method.run(Job(ids, progress=False))
    s = method.details["block_sparsity"]
    assert sum(s) / 4 == pytest.approx(0.6) and max(s) - min(s) > 0.05
    for i, block in enumerate(model.model.layers):
        for lin in ModelAdapter(model).block_linears(block).values():
            per_row = (lin.weight == 0).sum(1)
            kept = round((1 - s[i]) * lin.in_features)
            assert (per_row == lin.in_features - kept).all()     # Wanda: an exact count per row
