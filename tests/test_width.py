"""Width search end to end on tiny models: slicing equals masking (also after reload with the
shipped modeling code), the parameter band holds, the seed fixes the search, crossover genes."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from prunekit.api import prune
from prunekit.cli import main
from prunekit.methods import SearchConfig
from prunekit.methods.width.genome import Shape, Space, crossover
from prunekit.models.adapter import ModelAdapter

from .conftest import VOCAB, generate_step_lengths, make_tiny_model
from .tiny_models import structured_model


def _ids(n=4, length=64, seed=0):
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "opt"])
def test_sliced_model_equals_masked_model_and_reloads(family, tmp_path):
    model = make_tiny_model(family)
    if family in ("qwen2", "opt"):   # biases: removed rows must lose their biases too
        with torch.no_grad():
            for block in ModelAdapter(model).layers:
                for name in ("q_proj", "k_proj", "v_proj"):
                    getattr(block.self_attn, name).bias.normal_(0, 0.5)
                if family == "opt":
                    block.fc1.bias.normal_(0, 0.5)
    dense_params = sum(p.numel() for p in model.parameters())
    res = prune(model, SearchConfig(keep=0.7, generations=2, population=6, mutants=4, crossovers=2, randoms=2,
                                    top_k=3, band=0.05, fitness_seqlen=32), _ids(), progress=False)
    small = res.model
    ids = _ids(2, 24, seed=1)
    with torch.no_grad():
        masked = model(ids).logits            # the dense model, left masked and reformed
        assert torch.allclose(small(ids).logits, masked, atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < dense_params
    assert res.details["block_params_kept"] == sum(
        lin.weight.numel() for _, lin in ModelAdapter(small).all_linears())
    small.save_pretrained(tmp_path / "w")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "w", trust_remote_code=True).eval()
    x = ids[:1, :6]
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, masked, atol=1e-5)
        a = reloaded.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=6, do_sample=False, use_cache=True,
                              pad_token_id=0)
        b = reloaded.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=6, do_sample=False, use_cache=False,
                              pad_token_id=0)
    assert torch.equal(a, b)


def test_uniform_mlp_only_result_is_a_standard_checkpoint(tmp_path):
    model = make_tiny_model("llama")
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


def test_band_holds_and_seed_fixes_the_search():
    cfg = dict(keep=0.7, generations=3, population=8, mutants=4, crossovers=2, randoms=2, top_k=3, band=0.02,
               fitness_seqlen=32, reform="none")
    runs = [prune(make_tiny_model("llama"), SearchConfig(**cfg), _ids(), progress=False) for _ in range(2)]
    assert runs[0].details["genome"] == runs[1].details["genome"]
    assert runs[0].details["history"] == runs[1].details["history"]
    for row in runs[0].details["history"][1:]:
        assert 0.68 - 1e-9 <= row["kept_min"] and row["kept_max"] <= 0.72 + 1e-9
    best = [h["best"] for h in runs[0].details["history"][1:]]
    assert best == sorted(best, reverse=True)          # survivors never get worse
    other = prune(make_tiny_model("llama"), SearchConfig(**{**cfg, "seed": 1}), _ids(), progress=False)
    assert other.details["history"] != runs[0].details["history"]


def test_crossover_takes_every_gene_from_one_parent():
    shape = Shape(4, 64, 4, 2, 16, 128)
    g = torch.Generator().manual_seed(0)
    space = Space.build(shape, 0.7, [torch.rand(2, 8, generator=g) for _ in range(4)],
                        [torch.rand(128, generator=g) for _ in range(4)], False)
    a = space.mutate(space.initial(0.7), 0, 1.0, 1.0, g)
    b = space.mutate(space.initial(0.7), 0, 1.0, 1.0, g)
    for _ in range(10):
        c = crossover(a, b, g)
        for i in range(4):
            assert torch.equal(c.attn[i], a.attn[i]) or torch.equal(c.attn[i], b.attn[i])
            assert torch.equal(c.mlp[i], a.mlp[i]) or torch.equal(c.mlp[i], b.mlp[i])


def test_cli_search_saves_a_smaller_remote_code_checkpoint(tiny_model_dir, tmp_path, data_dir, capsys, tokenizer):
    out = tmp_path / "search"
    assert main(["prune", "--model", str(tiny_model_dir), "--method", "search", "--keep", "0.7", "--generations", "1",
                 "--population", "4", "--mutants", "2", "--crossovers", "1", "--randoms", "1", "--top-k", "2",
                 "--band", "0.05", "--fitness-seqlen", "32", "--calib", "wikitext2:validation", "--nsamples", "4",
                 "--seqlen", "64", "--eval", "wikitext2", "--eval-seqlen", "64", "--eval-windows", "1",
                 "--data-dir", data_dir, "--output", str(out)]) == 0
    assert "fitness       ppl" in capsys.readouterr().out
    report = json.loads((out / "prunekit_report.json").read_text())
    assert (out / "search_history.png").stat().st_size > 1000
    reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert sum(p.numel() for p in reloaded.parameters()) == report["model"]["params_total"]
    assert report["model"]["params_total"] < sum(p.numel() for p in make_tiny_model("llama").parameters())
    assert generate_step_lengths(reloaded) == [5, 1, 1, 1]    # decodes with the KV cache by default
    assert main(["prune", "--model", str(tiny_model_dir), "--method", "search", "--keep", "1.5",
                 "--output", str(tmp_path / "bad")]) == 2
    assert "--keep 1.5 is outside" in capsys.readouterr().err
    gemma2 = tmp_path / "gemma2"     # no width modeling code for Gemma yet
    structured_model("gemma2").save_pretrained(gemma2)
    tokenizer.save_pretrained(gemma2)
    assert main(["prune", "--model", str(gemma2), "--method", "search", "--keep", "0.8", "--calib",
                 "wikitext2:validation", "--data-dir", data_dir, "--output", str(tmp_path / "o")]) == 2
    assert "width search supports" in capsys.readouterr().err
