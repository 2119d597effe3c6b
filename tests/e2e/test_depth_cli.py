"""Depth pruning, analysis and the benchmark through the command line: a physically smaller
checkpoint, CKA and scores, exact counts and ratios."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from prunekit.api import prune
from prunekit.cli import main
from prunekit.methods import ShortGPTConfig
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, generate_step_lengths, plain_model


def deep_model(family="llama", layers=8, seed=0):
    return plain_model(family, seed, layers)


def test_cli_depth_prune_writes_a_smaller_checkpoint(tiny_model_dir, tmp_path, data_dir, capsys):
    src = tmp_path / "deep"
    deep_model("llama", 8).save_pretrained(src)
    AutoTokenizerDir = tiny_model_dir  # the tokenizer saved with the tiny model
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(AutoTokenizerDir).save_pretrained(src)
    out = tmp_path / "slm"
    assert main(["prune", "--model", str(src), "--method", "slm", "--ratio", "0.25", "--calib", "wikitext2:validation",
                 "--nsamples", "3", "--seqlen", "32", "--eval", "wikitext2", "--eval-seqlen", "64",
                 "--eval-windows", "1", "--data-dir", data_dir, "--output", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "layers        8 -> 6" in summary
    report = json.loads((out / "prunekit_report.json").read_text())
    assert report["calibration"]["nsamples"] == 3 and report["method"]["depth"]["layers_after"] == 6
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 6
    assert generate_step_lengths(reloaded) == [5, 1, 1, 1]    # decodes with the KV cache by default
    size = lambda d: (d / "model.safetensors").stat().st_size
    per_block = sum(p.numel() for p in ModelAdapter(reloaded).layers[0].parameters()) * 4
    assert size(src) - size(out) == pytest.approx(2 * per_block, rel=0.01)
    assert main(["prune", "--model", str(src), "--method", "slm", "--sparsity", "0.5", "--calib", "wikitext2:validation",
                 "--data-dir", data_dir, "--output", str(tmp_path / "x")]) == 2
    assert "--sparsity does not apply to method slm" in capsys.readouterr().err
    assert main(["prune", "--model", str(src), "--method", "shortgpt", "--remove-layers", "8", "--calib", "wikitext2:validation",
                 "--data-dir", data_dir, "--output", str(tmp_path / "y")]) == 2
    assert "cannot remove 8 of 8" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_analyze_writes_cka_and_scores(tiny_model_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "analysis"
    assert main(["analyze", "--model", str(tiny_model_dir), "--calib", "wikitext2:validation", "--nsamples", "2",
                 "--seqlen", "16", "--data-dir", data_dir, "--output", str(out)]) == 0
    report = json.loads((out / "analysis.json").read_text())
    cka = torch.tensor(report["cka"])
    assert cka.shape == (3, 3) and torch.allclose(cka.diagonal(), torch.ones(3, dtype=cka.dtype))
    assert len(report["block_influence"]) == 3 and len(report["adjacent_cosine"]) == 2
    assert report["tokens"] == 32
    assert (out / "cka.png").stat().st_size > 1000 and (out / "layer_scores.png").stat().st_size > 1000
    skipped = tmp_path / "skipped"
    assert main(["analyze", "--model", str(tiny_model_dir), "--calib", "wikitext2:validation", "--nsamples", "2",
                 "--seqlen", "16", "--skip-first", "4", "--data-dir", data_dir, "--output", str(skipped)]) == 0
    assert json.loads((skipped / "analysis.json").read_text())["tokens"] == 24


@pytest.mark.slow
def test_cli_bench_reports_exact_counts_and_ratios(tmp_path, tokenizer):
    dense, small = deep_model("llama", 4), deep_model("llama", 4)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(6))
    prune(small, ShortGPTConfig(remove_layers=2), ids, progress=False)
    for name, m in (("dense", dense), ("small", small)):
        m.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(tmp_path / "small"), "--baseline", str(tmp_path / "dense"), "--seqlen", "32",
                 "--prompt-len", "8", "--new-tokens", "4", "--reps", "2", "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["ratios"]["layers"] == 0.5
    assert res["pruned"]["params_total"] == sum(p.numel() for p in small.parameters())
    assert res["ratios"]["params"] == pytest.approx(res["pruned"]["params_total"] / res["baseline"]["params_total"])
    assert res["pruned"]["disk_bytes"] < res["baseline"]["disk_bytes"]
    assert res["pruned"]["prefill_s"] > 0 and res["pruned"]["decode_tokens_per_s"] > 0
    assert res["ratios"]["paired_rounds"] and len(res["pruned"]["prefill_all_s"]) == 2
