"""What a new user hits first, so that a mistake costs a line and not a run: each bad input is one line on stderr, exit code 2,
nothing written and refused before the pruning; the model is saved before it is evaluated;
SIGTERM during the save leaves nothing; a report works from another directory."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import prunekit
from prunekit.cli import main
from prunekit.models.adapter import ModelAdapter

from tests.helpers import ROOT
from tests.helpers.models import plain_model


def _args(model_dir, out, data_dir, *extra):
    return ["prune", "--model", str(model_dir), "--method", "wanda", "--sparsity", "0.5", "--calib", "wikitext2:validation",
            "--nsamples", "4", "--seqlen", "32", "--eval", "wikitext2", "--eval-seqlen", "64", "--eval-windows", "2",
            "--data-dir", data_dir, "--output", str(out), *extra]


def _set(args, flag, value):
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def _bad_files(tmp):
    (tmp / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (tmp / "binary.jsonl").write_bytes(b"\xff\xfe\x00\x81" * 64)
    (tmp / "rows.jsonl").write_text('{"text": "a fine row"}\n{"text": 17}\n')
    (tmp / "afile").write_text("x")
    (tmp / "data").mkdir()


BAD = [
    ("--seqlen", "1024", "--seqlen 1024 is longer than the model's 512 positions"),
    ("--eval-seqlen", "1024", "--eval-seqlen 1024 is longer than the model's 512 positions"),
    ("--nsamples", "0", "--nsamples must be at least 1"),
    ("--seqlen", "0", "--seqlen must be at least 2"),
    ("--eval-seqlen", "1", "--eval-seqlen must be at least 2"),
    ("--layers", "2:8", "--layers 2:8 is outside the model's 3 blocks"),
    ("--layers", "3:4", "--layers 3:4 is outside the model's 3 blocks"),
    ("--output", "{tmp}/afile/out", "is a file, not a folder"),
    ("--output", "/sys/prunekit-new-user-test/out", "is not writable"),
    ("--calib", "{tmp}/binary.txt", "binary.txt: not UTF-8 text"),
    ("--calib", "{tmp}/binary.jsonl", "binary.jsonl: not UTF-8 text"),
    ("--calib", "{tmp}/rows.jsonl", "line 2: 'text' is a int, not a string"),
    ("--calib", "{tmp}/data", "is a folder: give a .txt or .jsonl file"),
    ("--model", "{tmp}/corrupt", "could not load model from"),
]


@pytest.mark.parametrize("flag,value,message", BAD, ids=[f"{b[0]} {b[1]}" for b in BAD])
def test_bad_input_refused_before_pruning(flag, value, message, tiny_model_dir, tmp_path, data_dir, capsys,
                                          monkeypatch):
    from prunekit.workflows import prune as prune_workflow

    def no_pruning(*a, **k):
        raise AssertionError("the pruning started")
    monkeypatch.setattr(prune_workflow, "prune", no_pruning)
    _bad_files(tmp_path)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in tiny_model_dir.iterdir():
        corrupt.joinpath(f.name).write_bytes(f.read_bytes())
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])     # truncated, as by a full disk or a killed copy
    args = _set(_args(tiny_model_dir, tmp_path / "out", data_dir), flag, value.format(tmp=tmp_path))
    before = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    assert main(args) == 2
    line = _one_line(capsys)
    assert line.startswith("prunekit prune: error: ") and message in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_failed_evaluation_keeps_the_saved_model(tiny_model_dir, tmp_path, data_dir, capsys, monkeypatch):
    from prunekit.workflows import prune as prune_workflow

    def failing(*a, **k):
        raise RuntimeError("out of memory in window 3")
    monkeypatch.setattr(prune_workflow, "run_evals", failing)
    out = tmp_path / "out"
    assert main(_args(tiny_model_dir, out, data_dir)) == 2
    line = _one_line(capsys)
    assert "evaluation failed (out of memory in window 3)" in line and str(out) in line
    report = json.loads((out / "prunekit_report.json").read_text())
    assert report["eval_error"] == "out of memory in window 3" and report["eval"] == {}
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    zeros = sum((lin.weight == 0).sum().item() for _, lin in ModelAdapter(reloaded).all_linears())
    total = sum(lin.weight.numel() for _, lin in ModelAdapter(reloaded).all_linears())
    assert zeros / total == pytest.approx(0.5) == report["sparsity"]["overall"]


def test_layers_report_both_sparsities_and_stale_temporaries_go(tiny_model_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    dead = tmp_path / ".out.tmp-999999-abc"      # left by a killed run (no such process)
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"\0" * 3000)
    live = tmp_path / f".out.tmp-{os.getppid()}-xyz"   # a run in progress: kept
    live.mkdir()
    with pytest.raises(ProcessLookupError):
        os.kill(999999, 0)
    assert main(_args(tiny_model_dir, out, data_dir, "--layers", "0:2")) == 0
    captured = capsys.readouterr()
    assert f"removed {dead} (0.0 MB)" in captured.err
    assert not dead.exists() and live.exists()
    report = json.loads((out / "prunekit_report.json").read_text())
    assert report["removed_stale"] == [{"path": str(dead), "bytes": 3000}]
    adapter = ModelAdapter(AutoModelForCausalLM.from_pretrained(out))
    counts = {}
    for name, lin in adapter.all_linears():
        block = int(name.split(".")[1])
        z, n = counts.get(block, (0, 0))
        counts[block] = (z + int((lin.weight == 0).sum()), n + lin.weight.numel())
    pruned = sum(counts[b][0] for b in (0, 1)) / sum(counts[b][1] for b in (0, 1))
    whole = sum(z for z, _ in counts.values()) / sum(n for _, n in counts.values())
    assert counts[2][0] == 0 and pruned == pytest.approx(report["sparsity"]["overall"])
    assert whole == pytest.approx(report["sparsity"]["whole_model"]) and whole < pruned
    assert report["sparsity"]["blocks"] == "0-1"
    assert (f"{pruned:.4f} of the pruned blocks' linear weights are zero (blocks 0-1); "
            f"{whole:.4f} over all decoder blocks") in captured.out
    env = report["environment"]
    assert env["prunekit"] == prunekit.__version__ and env["command_line"].startswith("prunekit prune --model ")
    assert "--layers 0:2" in env["command_line"]


def test_report_is_usable_from_another_directory(tiny_model_dir, tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tiny_model_dir.parent)
    assert main(_args(tiny_model_dir.name, "out", data_dir)) == 0       # relative paths, as typed
    report = json.loads((tmp_path / "out" / "prunekit_report.json").read_text())
    assert report["model"]["source"] == str(tiny_model_dir.resolve())
    assert report["output"] == str((tmp_path / "out").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["eval", "--model", report["output"], "--eval", "kl", "--kl-data", "wikitext2:test",
                 "--kl-nsamples", "2", "--kl-seqlen", "32", "--data-dir", data_dir, "--save-to-model"]) == 0
    kl = json.loads((tmp_path / "out" / "prunekit_report.json").read_text())["kl"]
    assert kl["dense"] == str(tiny_model_dir.resolve()) and kl["kl"] > 0 and kl["tokens"] == 2 * 32


def test_prune_without_output_says_not_saved(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.iterdir())
    assert main(["prune", "--model", str(tiny_model_dir), "--method", "magnitude", "--sparsity", "0.5",
                 "--eval", "none"]) == 0
    out = capsys.readouterr().out
    assert "not saved (no output folder given)" in out and "saved         /" not in out
    assert sorted(tmp_path.iterdir()) == before


def test_progress_lines_in_logs(tiny_model_dir, tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_PROGRESS_SECONDS", "0")      # a line per window instead of every 10 s
    assert main(["eval", "--model", str(tiny_model_dir), "--eval", "wikitext2", "--eval-seqlen", "64",
                 "--eval-windows", "3", "--data-dir", data_dir]) == 0
    err = capsys.readouterr().err.splitlines()
    lines = [e for e in err if e.startswith("prunekit: evaluating wikitext2: window ")]
    assert [line.split()[4] for line in lines] == ["1/3", "2/3", "3/3"]


def test_width_output_needs_trust_remote_code(tokenizer, tmp_path, data_dir, capsys):
    from prunekit import SearchConfig
    model = plain_model("llama")
    ids = torch.randint(3, 300, (2, 40), generator=torch.Generator().manual_seed(0))
    small = prunekit.prune(model, SearchConfig(keep=0.7, generations=0, population=2, top_k=1, fitness_seqlen=32),
                           ids, progress=False).model
    small.save_pretrained(tmp_path / "w")
    tokenizer.save_pretrained(tmp_path / "w")
    common = ["--eval", "wikitext2", "--eval-seqlen", "64", "--eval-windows", "1", "--data-dir", data_dir]
    for argv in (["eval", "--model", str(tmp_path / "w"), *common],
                 ["bench", "--model", str(tmp_path / "w"), "--reps", "1"]):
        before = sorted(tmp_path.iterdir())
        capsys.readouterr()
        assert main(argv) == 2
        line = _one_line(capsys)
        assert "ships its own modeling code" in line and "pass --trust-remote-code" in line
        assert sorted(tmp_path.iterdir()) == before
    assert main(["eval", "--model", str(tmp_path / "w"), *common, "--trust-remote-code"]) == 0   # the named flag works


def test_search_below_fitness_seqlen_names_the_flag(tiny_model_dir, tmp_path, data_dir, capsys):
    args = _args(tiny_model_dir, tmp_path / "out", data_dir)
    args[args.index("--method") + 1] = "search"
    args.remove("--sparsity"), args.remove("0.5")
    assert main(args) == 2
    line = _one_line(capsys)
    assert "--fitness-seqlen" in line and "--seqlen" in line and "4 x 32" in line
    assert not (tmp_path / "out").exists()


def test_compare_on_incomplete_reports(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "prunekit_report.json").write_text(json.dumps({"command": "prune", "eval": {}}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "prunekit_report.json").write_text(json.dumps(
        {"command": "eval", "model": {"source": "x", "params_total": 10}, "eval": {"wikitext2": {"ppl": 3.0}}}))
    for run, field in (("a", "'model'"), ("b", "'protocol'")):
        capsys.readouterr()
        assert main(["compare", str(tmp_path / run), "--output", str(tmp_path / "page.md")]) == 2
        line = _one_line(capsys)
        assert f"lacks field {field}" in line and run in line
        assert not (tmp_path / "page.md").exists()


_SLOW_SAVE = """
import sys, time
from pathlib import Path
import transformers
marker = Path(sys.argv[1])
original = transformers.PreTrainedModel.save_pretrained

def slow_save(self, folder, *a, **k):
    original(self, folder, *a, **k)       # the weights are on disk, in the temporary folder
    marker.write_text(str(folder))
    time.sleep(120)                        # the rest of a long save: SIGTERM arrives here
transformers.PreTrainedModel.save_pretrained = slow_save
from prunekit.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_sigterm_during_save_leaves_nothing(tiny_model_dir, tmp_path, data_dir):
    runs = tmp_path / "runs"
    runs.mkdir()
    marker = tmp_path / "saving"
    args = _args(tiny_model_dir, runs / "out", data_dir, "--eval", "none")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, str(marker), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    tmp_folder = Path(marker.read_text())
    assert tmp_folder.parent == runs and (tmp_folder / "model.safetensors").is_file()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    lines = [e for e in err.strip().splitlines() if e.startswith("prunekit")]
    assert lines[-1] == "prunekit: terminated (SIGTERM); nothing was written" and "Traceback" not in err
    assert list(runs.iterdir()) == []


def test_interrupted_evaluation_keeps_the_saved_model(tiny_model_dir, tmp_path, data_dir, capsys, monkeypatch):
    from prunekit.workflows import prune as prune_workflow

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(prune_workflow, "run_evals", interrupted)
    out = tmp_path / "out"
    assert main(_args(tiny_model_dir, out, data_dir)) == 130
    assert _one_line(capsys) == f"prunekit: interrupted; the pruned model is saved, unevaluated, in {out}"
    assert json.loads((out / "prunekit_report.json").read_text())["eval_error"] == "interrupted"
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 3
