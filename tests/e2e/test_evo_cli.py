"""evo-depth, evo-sparsity and owl through the command line: registered like every method, their
options from their configs, a reloadable checkpoint whose weights are what the report says."""
import json

from transformers import AutoModelForCausalLM

from prunekit.cli import main
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import plain_model


def _args(model_dir, out, data_dir, method, *extra):
    return ["prune", "--model", str(model_dir), "--method", method, "--calib", "wikitext2:validation",
            "--nsamples", "4", "--seqlen", "32", "--eval", "none", "--data-dir", data_dir, "--output", str(out), *extra]


def _deep_dir(tmp_path, tokenizer, layers=5):
    path = tmp_path / "deep"
    plain_model("llama", layers=layers).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_evo_depth_cli_drops_exactly_k_blocks(tmp_path, tokenizer, data_dir, capsys, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_PROGRESS_SECONDS", "0")      # off a terminal: a log line per generation
    src, out = _deep_dir(tmp_path, tokenizer), tmp_path / "evo"
    assert main(_args(src, out, data_dir, "evo-depth", "--remove-layers", "2", "--stages", "32:2,64:1",
                      "--generations", "3", "--offspring", "3", "--kl-topk", "0")) == 0
    captured = capsys.readouterr()
    summary = captured.out
    assert "layers        5 -> 3" in summary and "search        kl" in summary
    gens = [e.split()[4] for e in captured.err.splitlines() if e.startswith("prunekit: evo-depth") and "generation" in e]
    assert gens == ["1/3", "2/3", "3/3"], captured.err
    report = json.loads((out / "prunekit_report.json").read_text())
    meth = report["method"]
    assert len(meth["removed"]) == 2 and meth["final_fitness"] <= meth["initial_fitness"] + 1e-9
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 3
    assert (out / "evolution.png").read_bytes()[:4] == b"\x89PNG"


def test_owl_cli_block_sparsities_average_the_target(tiny_model_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "owl"
    assert main(_args(tiny_model_dir, out, data_dir, "owl", "--sparsity", "0.5", "--lam", "0.1")) == 0
    report = json.loads((out / "prunekit_report.json").read_text())
    sp = report["method"]["block_sparsity"]
    assert abs(sum(sp) / len(sp) - 0.5) < 1e-9 and all(0.4 - 1e-9 <= s <= 0.6 + 1e-9 for s in sp)
    saved = ModelAdapter(AutoModelForCausalLM.from_pretrained(out))
    for i, block in enumerate(saved.layers):        # Wanda per row: each row keeps round((1 - s) * in)
        for lin in saved.block_linears(block).values():
            kept = int((lin.weight != 0).sum())
            assert kept == lin.out_features * round((1 - sp[i]) * lin.in_features), (i, kept)


def test_evo_sparsity_cli_and_flag_errors(tiny_model_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "evs"
    assert main(_args(tiny_model_dir, out, data_dir, "evo-sparsity", "--sparsity", "0.5", "--base", "wanda",
                      "--stages", "32:2,64:1", "--generations", "2", "--offspring", "2", "--kl-topk", "0",
                      "--database-dir", str(tmp_path / "db"))) == 0
    report = json.loads((out / "prunekit_report.json").read_text())
    assert abs(report["method"]["mean_level_sparsity"] - 0.5) < 1e-12
    assert report["method"]["database"]["bytes"] > 0
    capsys.readouterr()
    assert main(_args(tiny_model_dir, tmp_path / "bad", data_dir, "owl", "--sparsity", "0.5", "--outlier-m", "0")) == 2
    assert capsys.readouterr().err.strip() == "prunekit prune: error: --outlier-m must be positive"
    assert main(_args(tiny_model_dir, tmp_path / "bad", data_dir, "owl", "--sparsity", "0.5", "--keep", "0.5")) == 2
    assert "--keep does not apply to method owl" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
