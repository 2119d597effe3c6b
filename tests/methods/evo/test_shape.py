"""evo-shape: the library against a variant computed directly, the masked candidate against the
saved DeciLM model, parameter accounting, the exhaustive optimum on a tiny space, a saved shape
re-applied, KL 0 at the dense shape, and the executors agreeing."""
import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from prunekit.api import prune
from prunekit.engine.stack import BlockStack
from prunekit.errors import ConfigError, PrunekitError
from prunekit.methods import EvoShapeConfig
from prunekit.methods.evo import latency
from prunekit.methods.evo.library import ShapeLibrary, ShapeLoader
from prunekit.methods.evo.shape import EvoShape, build_model, level_costs, shape_file
from prunekit.models.adapter import ModelAdapter
from prunekit.scoring.fitness import AssembledEvaluator
from prunekit.solvers import kv_groups as kvg
from prunekit.solvers.shapes import ShapeSpace
from prunekit.solvers.width import closed_form_reform

from tests.helpers.models import plain_model
from tests.helpers.shapes import saved_and_masked


def _ids(n=4, length=32, seed=0):
    return torch.randint(3, 300, (n, length), generator=torch.Generator().manual_seed(seed))


def _library(model, ids, tmp_path, widths=(32, 64), kvs=(1,)):
    return ShapeLibrary.open_or_build(ModelAdapter(model), ids, list(widths), list(kvs), 0.01, tmp_path, progress=False)[0]


def _dense_inputs(model, ids, layer, module):
    """What `module` of block `layer` sees in the dense model's own forward (hooks, no engine)."""
    seen = []
    target = getattr(ModelAdapter(model).layers[layer].mlp if module == "down" else
                     ModelAdapter(model).layers[layer].self_attn, module if module != "down" else "down_proj")
    h = target.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().reshape(-1, inp[0].shape[-1])))
    with torch.no_grad():
        model(ids)
    h.remove()
    return torch.cat(seen).double()


def test_the_library_holds_what_a_direct_computation_gives(tmp_path):
    model = plain_model("llama")
    ids = _ids()
    lib = _library(model, ids, tmp_path)
    block = ModelAdapter(model).layers[1]
    var = lib.variant(1, (1, 1))                       # KV heads 1, MLP width 32
    # down_proj: the exact least-squares fit of the kept columns on the dense inputs of block 1
    x = _dense_inputs(model, ids, 1, "down")
    h = x.T @ x
    idx = var["idx"]
    omit = torch.ones(x.shape[1], dtype=torch.bool)
    omit[idx] = False
    direct = closed_form_reform(block.mlp.down_proj.weight.detach(), h, omit, damp=0.01)[:, idx]
    assert torch.allclose(var["down"], direct.float(), atol=1e-4, rtol=1e-3)
    assert len(idx) == 32 and torch.equal(idx, idx.sort().values)
    # keys: rows averaged within the group, weighted per dim by the queries' energy on these inputs
    xq = _dense_inputs(model, ids, 1, "q_proj")
    q = (xq @ block.self_attn.q_proj.weight.detach().double().T).pow(2).sum(0).reshape(4, 16)
    k = kvg.merge_keys(kvg.heads_of(block.self_attn.k_proj.weight.detach(), 2), 1, kvg.key_weights(q, 2, True))
    assert torch.allclose(var["k"], k.reshape(16, 64), atol=1e-5)


def test_the_masked_candidate_computes_what_the_saved_decilm_model_computes(tmp_path):
    model = plain_model("llama")
    ids = _ids()
    lib = _library(model, ids, tmp_path)
    genome = ((0, 3), (1, 1), (2, 0))                   # no attention; 1 KV head and width 32; no MLP
    small, saved, masked = saved_and_masked(model, lib, genome, ids)
    assert torch.allclose(saved, masked, atol=1e-5)
    from prunekit.models.decilm import BlockShape, shapes_of
    assert shapes_of(ModelAdapter(small)) == [BlockShape(0, 128), BlockShape(1, 32), BlockShape(2, 0)]


def test_every_candidate_has_the_parameters_the_accounting_says(tmp_path):
    import random
    model = plain_model("llama", layers=4)
    ids = _ids()
    adapter = ModelAdapter(model)
    lib = _library(model, ids, tmp_path)
    attention, mlp = level_costs(adapter, lib.attention_levels, lib.mlp_levels)
    full = 4 * (attention[-1] + mlp[-1])
    space = ShapeSpace(tuple(attention), tuple(mlp), 4, int(0.55 * full))
    rng = random.Random(0)
    genome = space.fill(tuple([(2, 3)] * 4), rng)
    for _ in range(6):
        genome = space.mutate(genome, rng, 2)
        small = build_model(adapter, lib, genome)
        kept = sum(p.numel() for _, lin in ModelAdapter(small).all_linears() for p in lin.parameters())
        assert kept == space.cost(genome) <= space.budget and space.maximal(genome)


def _evaluator(model, ids, lib):
    adapter = ModelAdapter(model)
    return AssembledEvaluator(BlockStack(adapter, ids), ShapeLoader(lib, adapter), "kl", 0)


def test_kl_is_zero_for_the_dense_shape(tmp_path):
    model = plain_model("llama")
    ids = _ids()
    lib = _library(model, ids, tmp_path)
    ev = _evaluator(model, ids, lib)
    dense, cut = ev.score([((2, 3),) * 3, ((1, 1),) * 3], list(range(4)))
    assert abs(dense) < 1e-6 and cut > 1e-3


@pytest.mark.slow
def test_the_search_finds_the_exhaustive_optimum_of_a_tiny_space(tmp_path):
    model = plain_model("llama", layers=2)
    ids = _ids(4, 32)
    cfg = EvoShapeConfig(keep=0.5, mlp_widths="0.5", width_multiple=8, kv_heads="1", stages="128:1",
                         generations=12, offspring=8, kl_topk=0, library_dir=str(tmp_path))
    res = prune(copy.deepcopy(model), cfg, ids, progress=False)
    lib = ShapeLibrary(res.details["library"]["path"])
    adapter = ModelAdapter(model)
    attention, mlp = level_costs(adapter, lib.attention_levels, lib.mlp_levels)
    space = ShapeSpace(tuple(attention), tuple(mlp), 2, res.details["budget"])
    every = list(space.every())
    scores = _evaluator(model, ids, lib).score(every, list(range(4)))
    best = every[min(range(len(every)), key=lambda i: scores[i])]
    found = tuple((lib.attention_levels.index(k), lib.mlp_levels.index(w)) for k, w in res.details["shape"])
    assert len(every) > 5
    assert found == best and res.details["final_fitness"] == pytest.approx(min(scores), rel=1e-6)


def test_the_latency_table_times_every_variant_in_its_blocks_and_is_reused(tmp_path):
    model = plain_model("llama", layers=4)
    adapter = ModelAdapter(model)
    lib = _library(model, _ids(), tmp_path, widths=(32, 64), kvs=(1,))
    build = lambda g: build_model(adapter, lib, g)
    table, now = latency.open_or_measure(adapter, lib, build, "cpu", 2, 16, reps=3)
    assert now and table["attention"][0] == 0 and table["mlp"][0] == 0
    assert len(table["attention"]) == len(lib.attention_levels) and len(table["mlp"]) == len(lib.mlp_levels)
    assert min(table["attention"][1:] + table["mlp"][1:]) > 0
    # blocks cycle through the levels: attention 1,2,1,2 and MLP 1,2,3,1 over 4 blocks; 3 timed forwards each
    assert latency.covering_genomes(lib, 4) == [((1, 1), (2, 2), (1, 3), (2, 1))]
    assert table["timings_per_variant"] == {"attention:1": 6, "attention:2": 6, "mlp:1": 6, "mlp:2": 3, "mlp:3": 3}
    # fewer blocks than levels: a second model times the rest
    assert latency.covering_genomes(lib, 2) == [((1, 1), (2, 2)), ((1, 3), (2, 1))]
    again, now = latency.open_or_measure(adapter, lib, build, "cpu", 2, 16, reps=3)
    assert not now and again == table


@pytest.mark.slow
def test_under_a_latency_budget_the_search_finds_the_exhaustive_optimum(tmp_path):
    model = plain_model("llama", layers=2)
    ids = _ids(4, 32)
    adapter = ModelAdapter(model)
    lib = _library(model, ids, tmp_path, widths=(64,), kvs=(1,))
    # a table that makes the dense attention cheap and the half MLP dear, so latency, not parameters, binds
    table = {"attention": [0.0, 3.0, 1.0], "mlp": [0.0, 4.0, 5.0], "device": "cpu", "batch": 1, "seqlen": 512,
             "threads": torch.get_num_threads(), "reps": 5, "measure_s": 0.0}
    latency.table_path(lib, "cpu", 1, 512).write_text(json.dumps(table))
    cfg = EvoShapeConfig(max_latency=0.5, mlp_widths="0.5", width_multiple=8, kv_heads="1", stages="128:1",
                         generations=12, offspring=8, kl_topk=0, library_dir=str(tmp_path))
    res = prune(copy.deepcopy(model), cfg, ids, progress=False)
    d = res.details
    assert d["library"]["path"] == str(lib.root) and d["latency"]["measured_now"] is False
    attention, mlp = level_costs(adapter, lib.attention_levels, lib.mlp_levels)
    space = ShapeSpace(tuple(attention), tuple(mlp), 2, d["budget"], (0.0, 3.0, 1.0), (0.0, 4.0, 5.0), 0.5 * 2 * 6.0)
    every = list(space.every())
    scores = _evaluator(model, ids, lib).score(every, list(range(4)))
    best = every[min(range(len(every)), key=lambda i: scores[i])]
    found = tuple((lib.attention_levels.index(k), lib.mlp_levels.index(w)) for k, w in d["shape"])
    assert d["budget"] == space.full and len(every) > 3
    assert found == best and space.latency(found) <= 6.0
    assert d["kept_latency"] == pytest.approx(space.latency(found) / 12.0)


def test_a_saved_shape_reapplied_gives_identical_weights_and_the_output_reloads(tmp_path):
    model = plain_model("llama", layers=4)
    ids = _ids()
    cfg = EvoShape.example_config(str(tmp_path / "lib"))
    res = prune(copy.deepcopy(model), cfg, ids, progress=False)
    report = {"method": res.details, "model": {"source": "tiny"}}
    (tmp_path / "shape.json").write_text(json.dumps(shape_file(report)))
    again = prune(copy.deepcopy(model), EvoShapeConfig(shape=str(tmp_path / "shape.json"),
                                                       library_dir=str(tmp_path / "lib2")), ids, progress=False)
    a, b = res.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again.details["shape"] == res.details["shape"]
    res.model.save_pretrained(tmp_path / "out")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "out", trust_remote_code=True)
    with torch.no_grad():
        assert torch.allclose(back(ids).logits, res.model(ids).logits, atol=1e-6)


def test_refusals():
    with pytest.raises(ConfigError, match="keep"):
        EvoShapeConfig()
    with pytest.raises(ConfigError, match="mlp_widths"):
        EvoShapeConfig(keep=0.5, mlp_widths="0.5,1.5")
    with pytest.raises(PrunekitError, match="evo-shape writes the Nemotron-NAS .* opt model"):
        prune(plain_model("opt"), EvoShapeConfig(keep=0.5), _ids(), progress=False)
    with pytest.raises(ConfigError, match="divisors"):
        prune(plain_model("llama"), EvoShapeConfig(keep=0.5, kv_heads="3"), _ids(), progress=False)


def test_workers_score_every_candidate_as_this_process_does_and_leave_the_model_alone(tmp_path):
    # the workers write candidates into their model's weights; shared with the caller's, they used
    # to race and to change the model the output is built from
    import random
    from prunekit.methods.evo.shape import ShapeFactory
    from prunekit.scoring.executors import make_executor
    model, ids = plain_model("llama"), _ids()
    lib = _library(model, ids, tmp_path, widths=(64,))
    before = copy.deepcopy(model.state_dict())
    rng = random.Random(0)
    cands = [tuple((rng.randrange(3), rng.randrange(3)) for _ in range(3)) for _ in range(60)]
    workers = make_executor("local", 2, ShapeFactory(model, ids, lib.root, "kl", 0))
    try:
        two = workers.score(cands, [0, 1, 2, 3])
    finally:
        workers.close()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    here = _evaluator(copy.deepcopy(model), ids, lib).score(cands, [0, 1, 2, 3])
    assert two == here and len(set(here)) > 10


@pytest.mark.slow
def test_executors_give_identical_results(tmp_path):
    def run(**kw):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            cfg = EvoShapeConfig(keep=0.6, mlp_widths="0.5", width_multiple=8, stages="64:2,128:1", generations=2,
                                 offspring=3, kl_topk=0, library_dir=str(tmp_path), **kw)
            return prune(plain_model("llama"), cfg, _ids(), progress=False)
        finally:
            torch.set_num_threads(threads)
    ref, two = run(), run(workers=2)
    for key in ("shape", "history", "initial_fitness", "final_fitness", "evaluations", "uniform_starts"):
        assert two.details[key] == ref.details[key], key
    # the output is built from the caller's model, which the workers must not have written into
    a, b = ref.model.state_dict(), two.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert two.details["executor"] == "2 local processes"
