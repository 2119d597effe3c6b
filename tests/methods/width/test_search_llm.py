"""The width search method: a uniform MLP-only result is a standard checkpoint, the band holds and
the seed fixes the search, width multiples, refusals, reformation, executors, old reports."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from prunekit.api import prune
from prunekit.errors import PrunekitError
from prunekit.methods import SearchConfig
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, plain_model, tiny_model


def _ids(n=4, length=64, seed=0):
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def test_uniform_mlp_only_result_is_a_standard_checkpoint(tmp_path):
    model = plain_model("llama")
    res = prune(model, SearchConfig(keep=0.95, generations=0, band=0.05, fitness_seqlen=32), _ids(), progress=False)
    small = res.model
    assert type(small).__name__ == "LlamaForCausalLM"      # attention untouched at 0.95, one MLP width
    assert small.config.intermediate_size < 128
    small.save_pretrained(tmp_path / "s")
    assert not list((tmp_path / "s").glob("*.py"))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()
    ids = _ids(1, 16, seed=2)
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, model(ids).logits, atol=1e-5)


@pytest.mark.slow
def test_band_holds_and_seed_fixes_the_search():
    cfg = dict(keep=0.7, generations=3, population=8, mutants=4, crossovers=2, randoms=2, top_k=3, band=0.02,
               fitness_seqlen=32, reform="none")
    runs = [prune(plain_model("llama"), SearchConfig(**cfg), _ids(), progress=False) for _ in range(2)]
    assert runs[0].details["genome"] == runs[1].details["genome"]
    assert runs[0].details["history"] == runs[1].details["history"]
    for row in runs[0].details["history"][1:]:
        assert 0.68 - 1e-9 <= row["kept_min"] and row["kept_max"] <= 0.72 + 1e-9
    best = [h["best"] for h in runs[0].details["history"][1:]]
    assert best == sorted(best, reverse=True)          # survivors never get worse
    other = prune(plain_model("llama"), SearchConfig(**{**cfg, "seed": 1}), _ids(), progress=False)
    assert other.details["history"] != runs[0].details["history"]


def _fitness_ids(n=6, length=32, seed=0):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def _wide_llama(seed=0):
    """Head dim 32 and MLP width 256: room for a multiple of 16 on both."""
    return tiny_model("llama", 3, seed=seed, windowed=False, intermediate=256, positions=512, head_dim=32)


@pytest.mark.slow
def test_width_multiple_output_is_on_the_lattice_in_band_and_reloads(tmp_path):
    model = _wide_llama()
    res = prune(model, SearchConfig(keep=0.7, generations=2, population=6, mutants=4, crossovers=2, randoms=2, top_k=3,
                                    band=0.02, fitness_seqlen=32, width_multiple=16), _fitness_ids(4, 64), progress=False)
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
    x = _fitness_ids(2, 24, seed=3)
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, small(x).logits)


def test_refusals_are_one_line():
    with pytest.raises(PrunekitError, match="cannot fit") as e:
        prune(plain_model("llama"), SearchConfig(keep=0.7, width_multiple=32), _fitness_ids(), progress=False)
    assert "head dim 16" in str(e.value) and "\n" not in str(e.value)
    for bad in (dict(stages="64:4,128:2", top_k=3), dict(stages="64:2,128:3", top_k=3), dict(fitness="mse"),
                dict(width_multiple=0), dict(executor="dask")):
        with pytest.raises(PrunekitError) as e:
            SearchConfig(keep=0.7, **bad)
        assert "\n" not in str(e.value)


def _reform_run(reform, **kw):
    cfg = SearchConfig(keep=0.7, generations=1, population=4, mutants=2, crossovers=1, randoms=1, top_k=2, band=0.05,
                       fitness_windows=2, fitness_seqlen=32, reform=reform, **kw)
    return prune(plain_model("llama"), cfg, _fitness_ids(4, 32), progress=False)


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


@pytest.mark.slow
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


def _run(**kw):
    cfg = SearchConfig(keep=0.7, generations=2, population=6, mutants=3, crossovers=2, randoms=1, top_k=2, band=0.05,
                       fitness="kl", kl_topk=0, stages="64:4,128:2", fitness_windows=2, fitness_seqlen=32,
                       reform="none", **kw)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # float sums depend on the thread count: as in the workers
    try:
        return prune(plain_model("llama"), cfg, _fitness_ids(6, 32), progress=False).details
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
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
