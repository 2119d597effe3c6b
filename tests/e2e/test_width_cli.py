"""The width search through the command line: a smaller remote-code checkpoint, KL stages and
multiples, Gemma 2 refused."""
import json

import pytest

from transformers import AutoModelForCausalLM

from prunekit.cli import main

from tests.helpers.models import generate_step_lengths, plain_model, tiny_model


@pytest.mark.slow
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
    assert report["model"]["params_total"] < sum(p.numel() for p in plain_model("llama").parameters())
    assert generate_step_lengths(reloaded) == [5, 1, 1, 1]    # decodes with the KV cache by default
    assert main(["prune", "--model", str(tiny_model_dir), "--method", "search", "--keep", "1.5",
                 "--output", str(tmp_path / "bad")]) == 2
    assert "--keep 1.5 is outside" in capsys.readouterr().err
    gemma2 = tmp_path / "gemma2"     # no width modeling code for Gemma yet
    tiny_model("gemma2").save_pretrained(gemma2)
    tokenizer.save_pretrained(gemma2)
    assert main(["prune", "--model", str(gemma2), "--method", "search", "--keep", "0.8", "--calib",
                 "wikitext2:validation", "--data-dir", data_dir, "--output", str(tmp_path / "o")]) == 2
    assert "width search supports" in capsys.readouterr().err


def _wide_llama(seed=0):
    """Head dim 32 and MLP width 256: room for a multiple of 16 on both."""
    return tiny_model("llama", 3, seed=seed, windowed=False, intermediate=256, positions=512, head_dim=32)


@pytest.mark.slow
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
