"""Streaming through the command line: equal to in memory, bf16 kept, chosen above the threshold,
its flags checked."""
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from prunekit.cli import main
from prunekit.streaming import weight_bytes

from tests.helpers.checkpoints import pruned_pair as _pruned_pair


@pytest.mark.slow
def test_cli_stream_equals_in_memory_and_keeps_bf16(tiny_model_dir, tmp_path, data_dir, capsys):
    from safetensors import safe_open

    from prunekit.cli import main

    def tensors(folder):
        out = {}
        for f in sorted(Path(folder).glob("*.safetensors")):
            with safe_open(f, "pt") as st:
                out.update({k: st.get_tensor(k) for k in st.keys()})
        return out

    common = ["prune", "--model", str(tiny_model_dir), "--method", "wanda", "--sparsity", "0.5", "--calib",
              "wikitext2:validation", "--nsamples", "4", "--seqlen", "32", "--eval", "wikitext2", "--eval-seqlen",
              "64", "--eval-windows", "2", "--data-dir", data_dir]
    assert main(common + ["--output", str(tmp_path / "mem")]) == 0
    assert main(common + ["--output", str(tmp_path / "str"), "--stream"]) == 0
    mem, streamed = tensors(tmp_path / "mem"), tensors(tmp_path / "str")
    assert set(mem) == set(streamed) and all(torch.equal(mem[k], streamed[k]) for k in mem)
    a = json.loads((tmp_path / "mem" / "prunekit_report.json").read_text())
    b = json.loads((tmp_path / "str" / "prunekit_report.json").read_text())
    assert b["streamed"] and b["method"]["name"] == "wanda"
    assert b["eval"]["wikitext2"]["protocol"] == a["eval"]["wikitext2"]["protocol"] == "wt2-64/2"
    assert abs(b["eval"]["wikitext2"]["ppl"] - a["eval"]["wikitext2"]["ppl"]) < 1e-4 * a["eval"]["wikitext2"]["ppl"]
    capsys.readouterr()
    assert main(common + ["--output", str(tmp_path / "x"), "--resume", "--eval", "none"]) == 0   # --resume streams
    assert "  mode          streamed (--resume)" in capsys.readouterr().out
    assert torch.equal(tensors(tmp_path / "x")["model.layers.1.mlp.up_proj.weight"],
                       streamed["model.layers.1.mlp.up_proj.weight"])

    bf16 = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(bf16)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(bf16)
    args = common + ["--output", str(tmp_path / "bfout"), "--stream", "--eval", "none"]
    args[args.index(str(tiny_model_dir))] = str(bf16)
    assert main(args) == 0
    assert {t.dtype for t in tensors(tmp_path / "bfout").values()} == {torch.bfloat16}


def _tensors(folder) -> dict:
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            out.update({k: st.get_tensor(k) for k in st.keys()})
    return out


def _report(folder) -> dict:
    return json.loads((Path(folder) / "prunekit_report.json").read_text())


@pytest.mark.slow
def test_cli_prune_streams_above_the_threshold_and_says_so(tiny_model_dir, tmp_path, data_dir, capsys):
    common = ["prune", "--model", str(tiny_model_dir), "--method", "wanda", "--sparsity", "0.5", "--calib",
              "wikitext2:validation", "--nsamples", "4", "--seqlen", "32", "--eval", "wikitext2", "--eval-seqlen",
              "64", "--eval-windows", "2", "--data-dir", data_dir, "--eval-dense"]
    assert main(common + ["--output", str(tmp_path / "mem")]) == 0          # default threshold: a tiny model fits
    out = capsys.readouterr().out
    assert "  mode          in memory (auto: " in out and "of weights ≤ 0.5 × " in out
    assert main(common + ["--output", str(tmp_path / "auto"), "--stream-above", "1e-9"]) == 0
    out = capsys.readouterr().out
    assert "  mode          streamed (auto: " in out and "of weights > 1e-09 × " in out
    mem, streamed = _tensors(tmp_path / "mem"), _tensors(tmp_path / "auto")
    assert set(mem) == set(streamed)
    assert all(torch.equal(mem[k].view(torch.uint8), streamed[k].view(torch.uint8)) for k in mem)
    a, b = _report(tmp_path / "mem"), _report(tmp_path / "auto")
    assert a["mode"]["streamed"] is False and b["mode"]["streamed"] is True and b["streamed"]
    assert b["mode"]["weights_bytes"] == weight_bytes(str(tiny_model_dir)) > 1e-9 * b["mode"]["available_bytes"]
    for key in ("eval", "eval_dense"):
        assert b[key]["wikitext2"]["ppl"] == pytest.approx(a[key]["wikitext2"]["ppl"], rel=1e-5)
        assert b[key]["wikitext2"]["protocol"] == a[key]["wikitext2"]["protocol"] == "wt2-64/2"
    assert b["eval_dense"]["wikitext2"]["ppl"] != pytest.approx(b["eval"]["wikitext2"]["ppl"], rel=1e-3)  # not a copy
    # --no-stream wins over the threshold
    assert main(common[:-1] + ["--output", str(tmp_path / "forced"), "--stream-above", "1e-9", "--no-stream",
                               "--eval", "none"]) == 0
    assert "  mode          in memory (--no-stream)" in capsys.readouterr().out


@pytest.mark.parametrize("extra,why", [(["--method", "slm", "--remove-layers", "1", "--output", "OUT"],
                                        "method slm cannot stream"),
                                       (["--method", "magnitude", "--sparsity", "0.5"], "no --output")])
def test_cli_too_big_but_cannot_stream_warns_once_and_runs_in_memory(extra, why, tiny_model_dir, tmp_path, data_dir,
                                                                      capsys):
    extra = [str(tmp_path / "out") if a == "OUT" else a for a in extra]
    args = ["prune", "--model", str(tiny_model_dir), *extra, "--calib", "wikitext2:validation", "--nsamples", "2",
            "--seqlen", "32", "--eval", "none", "--data-dir", data_dir, "--stream-above", "1e-9"]
    assert main(args) == 0
    cap = capsys.readouterr()
    warnings = [line for line in cap.err.splitlines() if "loading it in memory anyway" in line]
    assert len(warnings) == 1 and why in warnings[0] and warnings[0].startswith("prunekit: ")
    assert "  mode          in memory (auto: " in cap.out and why in cap.out


def test_cli_stream_flags_refused_in_one_line(tiny_model_dir, tmp_path, capsys):
    base = ["prune", "--model", str(tiny_model_dir), "--method", "magnitude", "--sparsity", "0.5",
            "--output", str(tmp_path / "o"), "--eval", "none"]
    assert main(base + ["--resume", "--no-stream"]) == 2
    assert "--resume continues a streamed run" in capsys.readouterr().err
    assert main(base + ["--stream-above", "0"]) == 2
    assert "--stream-above must be greater than 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--stream", "--no-stream"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_eval_streamed_equals_in_memory(tokenizer, tmp_path, data_dir, capsys):
    _pruned_pair(tokenizer, tmp_path)
    args = ["eval", "--model", str(tmp_path / "pruned"), "--dense", str(tmp_path / "dense"), "--eval", "wikitext2,kl",
            "--eval-seqlen", "64", "--eval-windows", "2", "--kl-data", "wikitext2:validation", "--kl-nsamples", "3",
            "--kl-seqlen", "32", "--data-dir", data_dir]
    reports = {}
    for name, flags in {"mem": ["--no-stream"], "stream": ["--stream"], "auto": ["--stream-above", "1e-9"]}.items():
        assert main(args + flags + ["--output", str(tmp_path / name)]) == 0
        reports[name] = _report(tmp_path / name)
        out = capsys.readouterr().out
        assert ("  mode          in memory (--no-stream)" if name == "mem" else "  mode          streamed (") in out
    mem = reports["mem"]
    for name in ("stream", "auto"):
        r = reports[name]
        assert r["mode"]["streamed"] and r["eval"]["wikitext2"]["protocol"] == mem["eval"]["wikitext2"]["protocol"]
        assert r["eval"]["wikitext2"]["ppl"] == pytest.approx(mem["eval"]["wikitext2"]["ppl"], rel=1e-5)
        assert r["kl"]["kl"] == pytest.approx(mem["kl"]["kl"], rel=1e-5) and r["kl"]["tokens"] == 96
        assert r["model"] == mem["model"] and r["sparsity"] == mem["sparsity"]
    # the weights compared with the threshold are both models'
    assert reports["auto"]["mode"]["weights_bytes"] == weight_bytes(str(tmp_path / "pruned")) * 2
    assert main(args + ["--stream", "--tasks", "boolq"]) == 2
    assert "zero-shot tasks" in capsys.readouterr().err
