"""Width search with the evolutionary searches' machinery: KL / perplexity fitness against a
direct computation on the sliced model, staged selection's survivor counts, kept widths on a
lattice of multiples (band, reload), the executors agreeing, the new flags on the command line."""
import copy
import json
import math
import zlib

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig

from prunekit.api import prune
from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.methods import SearchConfig
from prunekit.methods.width.evolve import Plan, evolve_population as search
from prunekit.methods.width.fitness import width_evaluator
from prunekit.methods.width.genome import Shape, Space, crossover, snap
from prunekit.methods.width.slicing import shape_of, sliced_model
from prunekit.models.adapter import ModelAdapter
from prunekit.solvers.evolution import draw_windows

from .conftest import VOCAB, make_tiny_model


def _ids(n=6, length=32, seed=0):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def _space(shape, keep=0.7, multiple=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Space.build(shape, keep, [torch.rand(shape.kv_heads, shape.pairs, generator=g) for _ in range(shape.layers)],
                       [torch.rand(shape.intermediate, generator=g) for _ in range(shape.layers)], False,
                       multiple=multiple)


def _wide_llama(seed=0):
    """Head dim 32 and MLP width 256: room for a multiple of 16 on both."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=512,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    model.config.use_cache = False
    return model.eval()


# ---------------------------------------------------------------- fitness


def _brute_kl(p_logits, q_logits):
    p, q = F.log_softmax(p_logits.double(), -1), F.log_softmax(q_logits.double(), -1)
    return (p.exp() * (p - q)).sum(-1)


def test_kl_fitness_zero_for_dense_and_equals_direct_computation():
    model, ids = make_tiny_model("llama"), _ids()
    dense_logits = model(ids).logits.detach()
    shape = shape_of(ModelAdapter(model))
    space = _space(shape)
    full = space.with_ratios([shape.pairs] * shape.layers, [shape.intermediate] * shape.layers, shape.layers)
    pruned = space.mutate(space.initial(0.7), 0.0, 1.0, 1.0, torch.Generator().manual_seed(1))
    small = sliced_model(copy.deepcopy(model), pruned, shape)       # the physically smaller model
    with torch.no_grad():
        small_logits = small(ids).logits
    ev = width_evaluator(model, ids, shape, "kl", topk=0)
    every, some = list(range(ids.shape[0])), [1, 4]
    assert ev.score([full], every) == [0.0]
    direct = float(_brute_kl(dense_logits, small_logits).mean())
    assert direct > 1e-3
    assert ev.score([pruned], every)[0] == pytest.approx(direct, rel=1e-4)
    assert ev.score([pruned], some)[0] == pytest.approx(float(_brute_kl(dense_logits[some], small_logits[some]).mean()),
                                                        rel=1e-4)
    assert ev.score([full], some)[0] == pytest.approx(0.0, abs=1e-7)
    ppl = width_evaluator(make_tiny_model("llama"), ids, shape, "ppl")
    nll = F.cross_entropy(small_logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    assert ppl.score([pruned], every)[0] == pytest.approx(math.exp(float(nll)), rel=1e-4)


# ---------------------------------------------------------------- staged selection


class _Recorder:
    """A fake executor: a deterministic score per (genome, windows), every scored pair logged."""
    name = "recorder"

    def __init__(self):
        self.log = []       # (genome key, windows, score)

    def score(self, genomes, windows):
        out = [zlib.crc32(g.key() + bytes(windows)) / 2**32 for g in genomes]
        self.log += [(g.key(), tuple(windows), s) for g, s in zip(genomes, out)]
        return out


def test_staged_selection_keeps_stated_survivors_on_the_width_path():
    shape = Shape(4, 64, 4, 2, 16, 128)
    space = _space(shape)
    stages = [(64, 5), (96, 3)]          # 2 then 3 windows of 32 tokens; the last keeps top_k = 3
    plan = Plan(0.7, 0.05, 4, 8, 4, 2, 2, 3, 0, stages, fixed_windows=2, pool_windows=40, seqlen=32)
    rec = _Recorder()
    out = search(space, space.initial(0.7, 0.05), shape, plan, rec, progress=False)
    rows = out["history"][1:]
    assert [r["generation"] for r in rows] == [0, 1, 2, 3, 4]
    for r in rows:
        children, parents = (8, 0) if r["generation"] == 0 else (4 + 2 + 2, 3)
        s0, s1 = r["stages"]
        assert (s0["tokens"], s0["evaluated"], s0["survivors"]) == (64, children, 5)
        assert (s1["tokens"], s1["evaluated"], s1["survivors"]) == (96, 5 + parents, 3)
        # the last stage's pool: every genome scored on that generation's last-stage windows
        last = tuple(draw_windows(40, 96, 32, 0, r["generation"], 1))
        pool = {k: s for k, w, s in rec.log if w == last}
        assert len(pool) == 5 + parents and r["best"] == min(pool.values())
        first = tuple(draw_windows(40, 64, 32, 0, r["generation"], 0))
        assert len({k for k, w, _ in rec.log if w == first}) == children
    # the result: the lowest score on the fixed windows among the start and every generation's winner
    judged = {k: s for k, w, s in rec.log if w == (0, 1)}
    assert len(judged) >= 2 and out["initial_fitness"] == judged[space.initial(0.7, 0.05).key()]
    assert out["best"].key() == min(judged, key=judged.get)
    assert out["final_fitness"] == min(judged.values()) <= out["initial_fitness"]
    assert out["history"][-1]["fixed"] == out["final_fitness"]
    assert out["evaluations"] == len(rec.log) == len({(k, w) for k, w, _ in rec.log})   # nothing scored twice


class _Deceiver(_Recorder):
    """Random scores on drawn windows, but on the fixed set (windows 0 and 1) the start beats
    everything: whatever the minibatches pick, the search must return the start."""

    def __init__(self, start: bytes):
        super().__init__()
        self.start = start

    def score(self, genomes, windows):
        out = super().score(genomes, windows)
        if tuple(windows) == (0, 1):
            out = [0.5 if g.key() == self.start else 1.0 + s for g, s in zip(genomes, out)]
        return out


def test_width_search_never_returns_worse_than_its_start_on_the_fixed_set():
    shape = Shape(4, 64, 4, 2, 16, 128)
    space = _space(shape)
    init = space.initial(0.7, 0.05)
    plan = Plan(0.7, 0.05, 3, 8, 4, 2, 2, 3, 0, [(64, 5), (96, 3)], fixed_windows=2, pool_windows=40, seqlen=32)
    rec = _Deceiver(init.key())
    out = search(space, init, shape, plan, rec, progress=False)
    last = tuple(draw_windows(40, 96, 32, 0, 3, 1))
    pool = {k: s for k, w, s in rec.log if w == last}
    assert min(pool, key=pool.get) != init.key()          # the last generation's winner is another genome
    assert len({k for k, w, _ in rec.log if w == (0, 1)}) >= 3       # winners were judged on the fixed set
    assert out["best"].key() == init.key()
    assert out["final_fitness"] == out["initial_fitness"] == 0.5
    assert all(r["fixed"] == 0.5 for r in out["history"])


# ---------------------------------------------------------------- width multiple


def test_lattice_is_kept_by_initialisation_mutation_and_crossover():
    shape = Shape(6, 64, 4, 2, 32, 256)
    space = _space(shape, multiple=16)
    step = shape.unit_step(16)
    assert step == 8 and all(c % 8 == 0 for cs in space.attn_choices for c in cs)
    assert all(c % 16 == 0 for cs in space.mlp_choices for c in cs) and len(space.mlp_choices[0]) > 3
    g = torch.Generator().manual_seed(0)
    pop = [space.initial(0.7, 0.02)]
    for _ in range(300):
        a = pop[int(torch.randint(len(pop), (), generator=g))]
        b = pop[int(torch.randint(len(pop), (), generator=g))]
        pop.append(space.mutate(a, 0.0, 0.5, 0.5, g) if float(torch.rand((), generator=g)) < 0.7 else crossover(a, b, g))
    for genome in pop:
        w = genome.widths(shape)
        assert all(d % 16 == 0 for d in w["head_dim"]) and all(m % 16 == 0 for m in w["mlp"])


def test_initialisation_steps_off_uniform_when_the_lattice_is_coarse():
    shape = Shape(4, 64, 4, 2, 16, 128)
    space = _space(shape, multiple=32)
    uniform = space.initial(0.7)                      # no band: every block rounded alike
    assert len(set(uniform.widths(shape)["mlp"])) == 1
    kept = lambda g: g.params(shape) / shape.dense_params
    assert abs(kept(uniform) - 0.7) > 0.03
    fitted = space.initial(0.7, 0.03)
    assert abs(kept(fitted) - 0.7) <= 0.03 and all(m % 32 == 0 for m in fitted.widths(shape)["mlp"])
    # the blocks that moved one step toward the target are those gaining the largest share of
    # their MLP scores by it (or, shrinking, losing the smallest)
    u, f = uniform.widths(shape)["mlp"], fitted.widths(shape)["mlp"]
    step = 32 if kept(uniform) < 0.7 else -32
    moved = [b for b in range(4) if f[b] != u[b]]
    assert moved and all(f[b] == u[b] + step for b in moved) and len(moved) < 4
    share = lambda b: space._moved_share(b, u[b] + step, u[b]) * (1 if step > 0 else -1)
    assert min(share(b) for b in moved) >= max(share(c) for c in range(4) if c not in moved)
    assert snap(100, 32, 128) == 96 and snap(127, 32, 128) == 128 and snap(10, 32, 128) == 32


def test_width_multiple_output_is_on_the_lattice_in_band_and_reloads(tmp_path):
    model = _wide_llama()
    res = prune(model, SearchConfig(keep=0.7, generations=2, population=6, mutants=4, crossovers=2, randoms=2, top_k=3,
                                    band=0.02, fitness_seqlen=32, width_multiple=16), _ids(4, 64), progress=False)
    small, d = res.model, res.details
    adapter = ModelAdapter(small)
    widths = d["widths"]
    for b, block in enumerate(adapter.layers):
        lins = adapter.block_linears(block)
        head_dim = lins["self_attn.k_proj"].out_features // 2
        assert head_dim % 16 == 0 and lins["mlp.down_proj"].in_features % 16 == 0
        assert (head_dim, lins["mlp.down_proj"].in_features) == (widths["head_dim"][b], widths["mlp"][b])
    assert min(widths["head_dim"]) < 32 or min(widths["mlp"]) < 256       # something was pruned
    kept = sum(lin.weight.numel() for _, lin in adapter.all_linears())
    assert kept == d["block_params_kept"] and abs(kept / d["block_params_dense"] - 0.7) <= 0.02 + 1e-12
    for row in d["history"][1:]:
        assert 0.68 - 1e-9 <= row["kept_min"] and row["kept_max"] <= 0.72 + 1e-9
    small.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m", trust_remote_code=True).eval()
    x = _ids(2, 24, seed=3)
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, small(x).logits)


def test_refusals_are_one_line():
    with pytest.raises(PrunekitError, match="cannot fit") as e:
        prune(make_tiny_model("llama"), SearchConfig(keep=0.7, width_multiple=32), _ids(), progress=False)
    assert "head dim 16" in str(e.value) and "\n" not in str(e.value)
    for bad in (dict(stages="64:4,128:2", top_k=3), dict(stages="64:2,128:3", top_k=3), dict(fitness="mse"),
                dict(width_multiple=0), dict(executor="dask")):
        with pytest.raises(PrunekitError) as e:
            SearchConfig(keep=0.7, **bad)
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------- reformation check


def _reform_run(reform, **kw):
    cfg = SearchConfig(keep=0.7, generations=1, population=4, mutants=2, crossovers=1, randoms=1, top_k=2, band=0.05,
                       fitness_windows=2, fitness_seqlen=32, reform=reform, **kw)
    return prune(make_tiny_model("llama"), cfg, _ids(4, 32), progress=False)


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


@pytest.mark.parametrize("fitness", ["ppl", "kl"])
def test_reformation_is_kept_only_where_it_lowers_the_fitness(fitness, monkeypatch):
    """reform admm equals admm-always where ADMM helps and reform none where it hurts (an ADMM
    that scrambles the projections), and its check scores what the search scores."""
    import prunekit.methods.width.search_llm as search_module

    kw = dict(fitness=fitness, kl_topk=0)
    checked, always, masked = _reform_run("admm", **kw), _reform_run("admm-always", **kw), _reform_run("none", **kw)
    check = checked.details["reform_check"]
    assert check["fitness_masked"] == pytest.approx(checked.details["final_fitness"], rel=1e-6)
    assert check["tokens"] == 2 * 32
    assert _same_weights(checked, always if check["admm_kept"] else masked)
    assert "reform_check" not in always.details and "admm_final_residual_max" in always.details

    real = search_module.admm_reform
    monkeypatch.setattr(search_module, "admm_reform", lambda w, *a: (real(w, *a)[0].flip(0), [0.0]))
    broken = _reform_run("admm", **kw)
    assert not broken.details["reform_check"]["admm_kept"]
    assert broken.details["reform_check"]["fitness_reformed"] > broken.details["reform_check"]["fitness_masked"]
    assert _same_weights(broken, masked)


# ---------------------------------------------------------------- executors


def _run(**kw):
    cfg = SearchConfig(keep=0.7, generations=2, population=6, mutants=3, crossovers=2, randoms=1, top_k=2, band=0.05,
                       fitness="kl", kl_topk=0, stages="64:4,128:2", fitness_windows=2, fitness_seqlen=32,
                       reform="none", **kw)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # float sums depend on the thread count: as in the workers
    try:
        return prune(make_tiny_model("llama"), cfg, _ids(6, 32), progress=False).details
    finally:
        torch.set_num_threads(threads)


def test_executors_give_identical_results():
    runs = {"in-process": _run(), "workers=2": _run(workers=2)}
    try:
        import ray  # noqa: F401
        runs["ray"] = _run(executor="ray", workers=2)
    except ImportError:
        pass
    ref = runs["in-process"]
    assert ref["evaluations"] > 0 and ref["final_fitness"] > 0
    for name, d in runs.items():
        for key in ("genome", "history", "initial_fitness", "final_fitness", "evaluations"):
            assert d[key] == ref[key], (name, key)
    assert runs["workers=2"]["executor"] == "2 local processes"
    if "ray" not in runs:
        pytest.skip("ray is not installed: in-process and workers=2 agree; ray not compared")


# ---------------------------------------------------------------- command line


def test_cli_kl_stages_and_multiple(tmp_path, tokenizer, data_dir, capsys):
    src = tmp_path / "wide"
    _wide_llama().save_pretrained(src)
    tokenizer.save_pretrained(src)
    args = ["prune", "--model", str(src), "--method", "search", "--keep", "0.7", "--generations", "1", "--population",
            "4", "--mutants", "2", "--crossovers", "1", "--randoms", "1", "--top-k", "2", "--band", "0.05",
            "--fitness-seqlen", "32", "--calib", "wikitext2:validation", "--nsamples", "4", "--seqlen", "32",
            "--eval", "none", "--data-dir", data_dir]
    out = tmp_path / "out"
    assert main(args + ["--fitness", "kl", "--kl-topk", "0", "--stages", "32:3,64:2", "--width-multiple", "16",
                        "--output", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "fitness       kl " in summary and "stages 32:3,64:2" in summary and "widths        multiple 16" in summary
    meth = json.loads((out / "prunekit_report.json").read_text())["method"]
    assert meth["fitness"] == "kl" and meth["stages"] == [[32, 3], [64, 2]]
    assert all(w % 16 == 0 for w in meth["widths"]["mlp"] + meth["widths"]["head_dim"])
    assert meth["history"][1]["stages"][1]["survivors"] == 2
    assert (out / "search_history.png").stat().st_size > 1000
    assert main(args + ["--width-multiple", "64", "--output", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--width-multiple 64 cannot fit" in err[0]
    assert main(args + ["--stages", "32:3,64:1", "--output", str(tmp_path / "bad")]) == 2
    assert "--top-k" in capsys.readouterr().err


def test_summary_reads_reports_written_before_the_fitness_option():
    from prunekit.methods.width import SearchMethod

    old = {"method": {"name": "search", "config": {"keep": 0.8, "score": "importance", "reform": "admm",
                                                   "generations": 5},
                      "genome": {"depth": 2, "attn": [1.0, 0.75], "mlp": [0.8, 0.7]}, "kept_fraction": 0.8,
                      "initial_fitness_ppl": 20.5, "fitness_ppl": 18.25, "evaluations": 30,
                      "fitness_protocol": "first 2 calibration windows x 256 tokens"}}
    lines = SearchMethod.summary_lines(old)
    assert "  fitness       ppl 20.5 (initialisation) -> 18.25 (best; 30 evaluations" in lines[1]
    assert not any(line.startswith("  widths") for line in lines)
