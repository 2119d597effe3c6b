"""evo-sparsity assembles levels with the exact mean."""
from __future__ import annotations

import copy

import pytest
import torch

from prunekit.methods.base import Job
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, plain_model


def calib(n=8, length=32, seed=0):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow
def test_evo_sparsity_assembles_levels_with_exact_mean(tmp_path):
    from prunekit.methods.evo import EvoSparsity, EvoSparsityConfig
    from prunekit.methods.evo.database import SparsityDatabase

    model = plain_model("llama", layers=4)
    dense = copy.deepcopy(model)
    ids = calib(6, 32)
    cfg = EvoSparsityConfig(sparsity=0.5, base="wanda", level_step=0.1, level_span=2, stages="64:4,192:1",
                            generations=6, offspring=6, kl_topk=0, database_dir=str(tmp_path))
    method = EvoSparsity(cfg, ModelAdapter(model))
    method.check()
    method.run(Job(ids, progress=False))
    d = method.details
    assert d["levels"] == ["0.3000", "0.4000", "0.5000", "0.6000", "0.7000"]
    assert d["mean_level_sparsity"] == pytest.approx(0.5, abs=1e-12)
    assert d["block_sparsity"] != [0.5] * 4                     # the search moved away from uniform
    assert d["final_fitness"] <= d["initial_fitness"]           # elitism on full-calibration stages
    db = SparsityDatabase(d["database"]["path"])
    assert d["database"]["bytes"] == db.size_bytes() > 0
    levels = [round(x, 4) for x in (0.3, 0.4, 0.5, 0.6, 0.7)]
    adapter = ModelAdapter(model)
    for i, block in enumerate(model.model.layers):
        work = copy.deepcopy(dense.model.layers[i])
        db.load_into(i, levels.index(round(d["block_sparsity"][i], 4)), work)
        for name, lin in adapter.block_linears(block).items():
            assert torch.equal(lin.weight, adapter.block_linears(work)[name].weight)
            zeros = float((lin.weight == 0).double().mean())
            assert zeros == pytest.approx(d["block_sparsity"][i], abs=1 / lin.in_features)
