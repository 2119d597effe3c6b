"""The command line end to end on a tiny checkpoint: output reloads with identical logits, report
fields, and every bad input gives one line, exit code 2 and no output."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from prunekit.cli import main
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, unknown_model


def _prune_args(model_dir, out, data_dir, *extra):
    return ["prune", "--model", str(model_dir), "--method", "wanda", "--sparsity", "0.5", "--calib", "wikitext2:validation",
            "--nsamples", "4", "--seqlen", "32", "--eval", "wikitext2", "--eval-seqlen", "64", "--eval-windows", "2",
            "--data-dir", data_dir, "--output", str(out), *extra]


def test_prune_saves_a_reloadable_checkpoint(tiny_model_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    assert main(_prune_args(tiny_model_dir, out, data_dir, "--eval-dense")) == 0
    summary = capsys.readouterr().out
    assert "wanda sparsity 0.5" in summary and "[wt2-64/2]" in summary
    report = json.loads((out / "prunekit_report.json").read_text())
    for key in ("model", "method", "calibration", "sparsity", "timing", "eval", "environment"):
        assert key in report
    assert report["calibration"] == {**report["calibration"], "dataset": "wikitext2", "split": "validation",
                                     "nsamples": 4, "seqlen": 32, "seed": 0}
    assert report["sparsity"]["overall"] == pytest.approx(0.5)
    assert report["eval"]["wikitext2"]["protocol"] == "wt2-64/2"
    assert report["eval"]["wikitext2"]["ppl"] != report["eval_dense"]["wikitext2"]["ppl"]
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    adapter = ModelAdapter(reloaded)
    zeros = sum((lin.weight == 0).sum().item() for _, lin in adapter.all_linears())
    total = sum(lin.weight.numel() for _, lin in adapter.all_linears())
    assert zeros / total == pytest.approx(report["sparsity"]["overall"])
    assert report["model"]["params_nonzero"] == sum(int(torch.count_nonzero(p)) for p in reloaded.parameters())
    # a second pruning run in memory gives the same weights, hence the same logits as the reloaded folder
    import prunekit
    from prunekit.data.calibration import build_calibration
    model, tok, _ = prunekit.load_model(str(tiny_model_dir))
    calib = build_calibration("wikitext2:validation", model, tok, 4, 32, 0, data_dir)
    prunekit.prune(model, prunekit.WandaConfig(sparsity=0.5), calib, progress=False)
    ids = torch.randint(3, VOCAB, (1, 40))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)


def test_eval_writes_same_report_format(tiny_model_dir, tmp_path, data_dir):
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(tiny_model_dir), "--eval", "wikitext2", "--eval-seqlen", "64",
                 "--eval-windows", "1", "--data-dir", data_dir, "--output", str(out)]) == 0
    report = json.loads((out / "prunekit_report.json").read_text())
    assert report["eval"]["wikitext2"]["windows"] == 1 and report["sparsity"]["overall"] == 0.0


def test_overwrite_replaces_folder(tiny_model_dir, tmp_path, data_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    assert main(_prune_args(tiny_model_dir, out, data_dir, "--overwrite")) == 0
    assert not (out / "old.txt").exists() and (out / "prunekit_report.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temporary folder left


BAD = [
    (["--model", "{tmp}/nope"], "model not found"),
    (["--model", "some-org/some-model"], "Hugging Face hub cannot be reached"),
    (["--method", "obs"], "unknown method 'obs'"),
    (["--sparsity", "1.0"], "outside [0, 1)"),
    (["--sparsity", "-0.2"], "outside [0, 1)"),
    (["--pattern", "4:4"], "1 <= N < M"),
    (["--pattern", "2:4", "--sparsity", "0.3"], "disagrees with pattern"),
    (["--pattern", "3:7", "--sparsity", "0.5714285714"], "not divisible by M=7"),
    (["--calib", "{tmp}/empty.txt"], "is empty"),
    (["--calib", "{tmp}/short.txt"], "shorter than one calibration window"),
    (["--eval", "ptb", "--data-dir", "{tmp}"], "dataset ptb (test) not found: looked in"),
    (["--output", "{tmp}/full"], "exists and is not empty"),
    (["--device", "cuda:7"], "CUDA is not available"),
]


@pytest.mark.parametrize("override,message", BAD, ids=[b[1] for b in BAD])
def test_bad_input_one_line_exit_2_nothing_written(override, message, tiny_model_dir, tmp_path, data_dir, capsys):
    if override[0] == "--device" and torch.cuda.is_available():
        pytest.skip("CUDA present")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("a few words")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("precious")
    out = tmp_path / "out"
    args = _prune_args(tiny_model_dir, out, data_dir)
    for i in range(0, len(override), 2):
        flag, value = override[i], override[i + 1].format(tmp=tmp_path)
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    before = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before          # nothing written, no temp folder
    assert (tmp_path / "full" / "keep.txt").read_text() == "precious"


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["prune", "--method", "wanda"])
    assert e.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_sparsellm_cli_writes_convergence_plot(tiny_model_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "sl"
    args = _prune_args(tiny_model_dir, out, data_dir, "--iterations", "3", "--layers", "0:2")
    args[args.index("wanda")] = "sparsellm"
    assert main(args) == 0
    report = json.loads((out / "prunekit_report.json").read_text())
    assert sorted(report["method"]["ffn_relative_error"]) == ["0", "1"]
    assert report["method"]["config"]["layers"] == "0:2" and report["method"]["penalties"]["alpha"] == 5.0
    assert set(report["sparsity"]["per_layer"]) == {f"layers.{i}.{n}" for i in (0, 1) for n in
                                                    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                     "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    assert (out / "sparsellm_convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "FFN error" in capsys.readouterr().out


def test_flag_of_another_method_is_rejected(tiny_model_dir, tmp_path, data_dir, capsys):
    assert main(_prune_args(tiny_model_dir, tmp_path / "o", data_dir, "--alpha", "1.0")) == 2
    assert "--alpha does not apply to method wanda" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_refuses_an_unknown_family_in_one_line(tmp_path, tokenizer, data_dir, capsys):
    from prunekit.cli import main
    src, out = tmp_path / "tiny-neox", tmp_path / "out"
    unknown_model("gpt_neox").save_pretrained(src)
    tokenizer.save_pretrained(src)
    capsys.readouterr()         # saving writes progress bars to stderr
    assert main(_prune_args(src, out, data_dir)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unsupported model_type gpt_neox" in err[0], err
    assert not out.exists()
