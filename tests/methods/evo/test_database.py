"""evo-sparsity's database: levels equal the block pruned directly, a uniform input is sequential
pruning."""
from __future__ import annotations

import copy

import pytest
import torch

from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, plain_model


def calib(n=8, length=32, seed=0):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("base", ["sparsegpt", "wanda"])
def test_database_reproduces_block_pruned_directly(base, tmp_path):
    from prunekit import api
    from prunekit.methods import SparseGPTConfig, WandaConfig
    from prunekit.methods.evo.database import Level, SparsityDatabase

    model = plain_model("llama", layers=3)
    ids = calib(4, 32)
    levels = [Level(0.3), Level(0.5), Level(0.7)]
    db, built = SparsityDatabase.open_or_build(ModelAdapter(model), ids, base, levels, {}, tmp_path, progress=False)
    assert built
    for block, k in ((0, 1), (2, 2)):
        direct = copy.deepcopy(model)
        cfg = (SparseGPTConfig if base == "sparsegpt" else WandaConfig)(sparsity=levels[k].sparsity,
                                                                           layers=f"{block}:{block + 1}")
        api.prune(direct, cfg, ids, progress=False)
        work = copy.deepcopy(model.model.layers[block])
        db.load_into(block, k, work)
        for name, lin in ModelAdapter(model).block_linears(work).items():
            assert torch.equal(lin.weight, ModelAdapter(direct).block_linears(direct.model.layers[block])[name].weight)
    again, built = SparsityDatabase.open_or_build(ModelAdapter(model), ids, base, levels, {}, tmp_path, progress=False)
    assert not built and again.root == db.root
    per_level = sum(lin.weight.numel() * 4 for _, lin in ModelAdapter(model).all_linears())
    assert db.size_bytes() >= 3 * per_level                       # float32 weights of every level
    other, built = SparsityDatabase.open_or_build(ModelAdapter(model), calib(4, 32, seed=9), base, levels, {},
                                                  tmp_path, progress=False)
    assert built and other.root != db.root                        # keyed by the calibration


@pytest.mark.slow
@pytest.mark.parametrize("base", ["sparsegpt", "wanda"])
@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_uniform_input_database_is_sequential_pruning(base, family, tmp_path):
    """Built on the uniformly pruned prefix: the all-target candidate is the uniformly pruned model
    and any other level of block i equals block i pruned directly after blocks 0..i-1 at the target;
    building leaves the model dense. Gemma 3's blocks differ (sliding, sliding, full, sliding: other
    masks and rotary bases, a window shorter than the calibration), so each must get its own inputs."""
    from prunekit import api
    from prunekit.methods import SparseGPTConfig, WandaConfig
    from prunekit.methods.evo.database import Level, SparsityDatabase

    from tests.helpers.models import tiny_model

    config = SparseGPTConfig if base == "sparsegpt" else WandaConfig
    model = plain_model("llama", layers=3) if family == "llama" else tiny_model("gemma3", layers=4)
    n_blocks = len(model.model.layers)
    before = copy.deepcopy(model.state_dict())
    ids = calib(4, 32)
    levels, target = [Level(0.3), Level(0.5), Level(0.7)], 1
    db, _ = SparsityDatabase.open_or_build(ModelAdapter(model), ids, base, levels, {}, tmp_path, progress=False,
                                           inputs="uniform", target=target)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    dense_db, _ = SparsityDatabase.open_or_build(ModelAdapter(model), ids, base, levels, {}, tmp_path,
                                                 progress=False)
    assert dense_db.root != db.root

    uniform = copy.deepcopy(model)
    api.prune(uniform, config(sparsity=0.5), ids, progress=False)
    for block in range(n_blocks):
        work = copy.deepcopy(model.model.layers[block])
        db.load_into(block, target, work)
        ref = ModelAdapter(uniform).block_linears(uniform.model.layers[block])
        assert all(torch.equal(lin.weight, ref[n].weight) for n, lin in ModelAdapter(model).block_linears(work).items())

    direct = copy.deepcopy(model)
    api.prune(direct, config(sparsity=0.5, layers="0:2"), ids, progress=False)
    api.prune(direct, config(sparsity=0.7, layers=f"2:{n_blocks}"), ids, progress=False)
    work = copy.deepcopy(model.model.layers[2])
    db.load_into(2, 2, work)
    ref = ModelAdapter(direct).block_linears(direct.model.layers[2])
    assert all(torch.equal(lin.weight, ref[n].weight) for n, lin in ModelAdapter(model).block_linears(work).items())
    dense_work = copy.deepcopy(model.model.layers[2])
    dense_db.load_into(2, 2, dense_work)
    assert not torch.equal(ModelAdapter(model).block_linears(dense_work)["mlp.down_proj"].weight,
                           ref["mlp.down_proj"].weight)          # the inputs made a difference


def test_runs_that_need_the_same_folder_at_once_build_it_once(tmp_path):
    """Two builders of one folder side by side: the second waits for the first, then reuses its
    folder (without the lock it would build again, and its rename onto the finished folder fail)."""
    import threading
    import time

    from prunekit.methods.evo.database import build_once

    calls, results = [], []

    def build(tmp):
        calls.append(tmp)
        time.sleep(0.5)
        (tmp / "block_0000.safetensors").write_bytes(b"x")
        return {"built_by": len(calls)}

    root = tmp_path / "lib" / "shapes-abc"
    threads = [threading.Thread(target=lambda: results.append(build_once(root, build))) for _ in range(2)]
    threads[0].start()
    time.sleep(0.1)
    threads[1].start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sorted(results) == [False, True]
    assert (root / "meta.json").is_file() and sorted(p.name for p in root.parent.iterdir()) == ["shapes-abc", "shapes-abc.lock"]
