"""Issue 14, the rest: the streamed-or-in-memory decision (a pure function of the sizes, the
available memory read from /proc and the memory cgroups, the weights' size read from safetensors
headers), the command line choosing it, and streamed evaluation (perplexity and KL to the dense
model) equal to the in-memory one."""
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import prunekit
from prunekit.cli import main
from prunekit.eval.kl import kl_to_dense
from prunekit.methods import MagnitudeConfig
from prunekit.stats import param_counts, sparsity_stats
from prunekit.streaming import StreamedModel, decide_mode, stream_counts, stream_kl, weight_bytes
from prunekit.streaming.memory import available_memory

from .conftest import VOCAB, make_tiny_model

GiB = 1 << 30


# --- the decision --------------------------------------------------------------------------------

def test_decide_mode_from_the_numbers():
    big, avail = int(5.2 * GiB), 8 * GiB
    m = decide_mode(None, big, avail, 0.5)
    assert m.streamed and m.reason == "auto: 5.2 GiB of weights > 0.5 × 8.0 GiB available" and m.warning is None
    m = decide_mode(None, 4 * GiB, avail, 0.5)            # exactly the threshold stays in memory
    assert not m.streamed and m.reason == "auto: 4.0 GiB of weights ≤ 0.5 × 8.0 GiB available"
    assert decide_mode(None, 4 * GiB + 1, avail, 0.5).streamed
    assert not decide_mode(None, big, avail, 0.7).streamed
    m = decide_mode(None, big, avail, 0.5, cannot_stream="method laco cannot stream")
    assert not m.streamed and m.warning == ("5.2 GiB of weights > 0.5 × 8.0 GiB available, but method laco cannot "
                                            "stream: loading it in memory anyway")
    assert decide_mode(None, 1, avail, 0.5, cannot_stream="x").warning is None    # small: nothing to warn of
    assert not decide_mode(None, None, avail, 0.5).streamed                   # size unknown (GGUF, hub)
    assert not decide_mode(None, big, None, 0.5).streamed                     # memory unknown
    assert decide_mode(True, 1, avail, 0.5).reason == "--stream"
    m = decide_mode(False, big, avail, 0.5, cannot_stream="x")
    assert not m.streamed and m.reason == "--no-stream" and m.warning is None
    assert m.to_report() == {"streamed": False, "reason": "--no-stream", "weights_bytes": big,
                             "available_bytes": avail, "stream_above": 0.5}


def _write(root: Path, files: dict) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


MEMINFO = "MemTotal:       33554432 kB\nMemFree:  1000 kB\nMemAvailable:   16777216 kB\n"   # 16 GiB available


def test_available_memory_is_bounded_by_every_cgroup_above_the_process(tmp_path):
    proc, cg = tmp_path / "proc", tmp_path / "cgroup"
    # no cgroup limit: MemAvailable
    _write(proc, {"meminfo": MEMINFO, "self/cgroup": "4:memory:/\n0::/\n"})
    _write(cg, {"memory/memory.limit_in_bytes": "9223372036854771712\n", "memory/memory.usage_in_bytes": "5\n"})
    assert available_memory(proc, cg) == 16 * GiB
    # v1: the job's limit is on the parent of the process's cgroup; page cache it could drop is free
    _write(proc, {"self/cgroup": "9:cpuacct,memory:/slurm/job1/step0\n0::/\n"})
    _write(cg, {"memory/slurm/job1/memory.limit_in_bytes": str(6 * GiB),
                "memory/slurm/job1/memory.usage_in_bytes": str(3 * GiB),
                "memory/slurm/job1/memory.stat": f"cache 9\ntotal_inactive_file {GiB}\n",
                "memory/slurm/job1/step0/memory.limit_in_bytes": "9223372036854771712",
                "memory/slurm/job1/step0/memory.usage_in_bytes": str(GiB)})
    assert available_memory(proc, cg) == 6 * GiB - (3 * GiB - GiB)
    # a container sees the host's path but mounts only its own cgroup: the mount's own files count
    _write(proc, {"self/cgroup": "4:memory:/docker/abc\n"})
    _write(cg, {"memory/memory.limit_in_bytes": str(2 * GiB), "memory/memory.usage_in_bytes": str(GiB // 2)})
    assert available_memory(proc, cg) == 2 * GiB - GiB // 2
    # v2: memory.max and memory.current of the process's cgroup ("max": no limit at that level)
    proc2, cg2 = tmp_path / "proc2", tmp_path / "cgroup2"
    _write(proc2, {"meminfo": MEMINFO, "self/cgroup": "0::/user.slice/job\n"})
    _write(cg2, {"cgroup.controllers": "memory\n", "user.slice/memory.max": "max\n",
                 "user.slice/memory.current": str(7 * GiB),
                 "user.slice/job/memory.max": str(4 * GiB), "user.slice/job/memory.current": str(3 * GiB),
                 "user.slice/job/memory.stat": f"anon 5\ninactive_file {GiB // 2}\n"})
    assert available_memory(proc2, cg2) == 4 * GiB - (3 * GiB - GiB // 2)
    # a limit above what the machine has free: MemAvailable decides
    _write(cg2, {"user.slice/job/memory.max": str(64 * GiB)})
    assert available_memory(proc2, cg2) == 16 * GiB
    assert available_memory(tmp_path / "nowhere", cg2) is None       # no /proc/meminfo: unknown


CGROUP_V1 = Path("/sys/fs/cgroup/memory")
PROBE = ("import importlib.util, sys; s = importlib.util.spec_from_file_location('m', sys.argv[1]); "
         "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); print(m.available_memory())")


def test_available_memory_inside_a_real_cgroup_limit(tmp_path):
    """The kernel's own files: a process put in a memory group limited to 256 MiB sees at most that."""
    import os
    import subprocess
    import sys

    if not (CGROUP_V1 / "memory.limit_in_bytes").is_file():
        pytest.skip(f"no cgroup v1 memory controller at {CGROUP_V1}")
    group = CGROUP_V1 / f"prunekit-avail-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as e:
        pytest.skip(f"memory cgroups are not writable here: {e}")
    limit = 256 << 20
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit))
        module = Path(__file__).resolve().parents[1] / "prunekit" / "streaming" / "memory.py"   # no torch import
        child = subprocess.run([sys.executable, "-c", PROBE, str(module)], capture_output=True, text=True, timeout=60,
                               preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())))
    finally:
        group.rmdir()
    assert child.returncode == 0, child.stderr
    seen = int(child.stdout)
    assert limit - (64 << 20) < seen <= limit < available_memory()


def test_weight_bytes_from_headers_at_the_load_dtype(tokenizer, tmp_path):
    model = make_tiny_model("llama")
    fp32 = sum(p.numel() for p in model.parameters()) * 4
    model.save_pretrained(tmp_path / "one")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    for folder in ("one", "sharded"):
        assert weight_bytes(str(tmp_path / folder)) == fp32
        assert weight_bytes(str(tmp_path / folder), "bfloat16") == fp32 // 2
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert weight_bytes(str(tmp_path / "bf16")) == fp32 // 2                   # auto: as stored
    assert weight_bytes(str(tmp_path / "bf16"), "float32") == fp32
    assert weight_bytes("some-org/some-model") is None                         # hub id: not known before loading
    for name, files in {"bin": {"pytorch_model.bin": b"x" * 64}, "bad": {"model.safetensors": b"\x00\x01"}}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        for f, data in files.items():
            (tmp_path / name / f).write_bytes(data)
        assert weight_bytes(str(tmp_path / name)) is None     # no safetensors / unreadable: the loader says why


# --- the command line ------------------------------------------------------------------------------

def _tensors(folder) -> dict:
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            out.update({k: st.get_tensor(k) for k in st.keys()})
    return out


def _report(folder) -> dict:
    return json.loads((Path(folder) / "prunekit_report.json").read_text())


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


# --- streamed evaluation ---------------------------------------------------------------------------

def _pruned_pair(tokenizer, tmp_path, family="llama"):
    dense = make_tiny_model(family)
    dense.save_pretrained(tmp_path / "dense")
    tokenizer.save_pretrained(tmp_path / "dense")
    pruned = make_tiny_model(family)
    prunekit.prune(pruned, MagnitudeConfig(sparsity=0.5), None, progress=False)
    pruned.save_pretrained(tmp_path / "pruned")
    tokenizer.save_pretrained(tmp_path / "pruned")
    return dense, pruned


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_streamed_kl_equals_in_memory(family, tokenizer, tmp_path):
    dense, pruned = _pruned_pair(tokenizer, tmp_path, family)
    ids = torch.randint(3, VOCAB, (5, 24), generator=torch.Generator().manual_seed(1))
    ref = kl_to_dense(pruned, dense, ids, progress=False)
    got = stream_kl(str(tmp_path / "pruned"), str(tmp_path / "dense"), ids, chunk_windows=2, progress=False)
    assert ref["kl"] > 0.01 and got["tokens"] == ref["tokens"] == 5 * 24
    assert got["kl"] == pytest.approx(ref["kl"], rel=1e-5)
    assert got["top1_agreement"] == ref["top1_agreement"]
    same = stream_kl(str(tmp_path / "dense"), str(tmp_path / "dense"), ids, progress=False)
    assert same["kl"] == 0.0 and same["top1_agreement"] == 1.0


@pytest.mark.parametrize("family", ["llama", "opt"])     # OPT ties its head to the embeddings
def test_stream_counts_equal_the_loaded_models(family, tokenizer, tmp_path):
    _, pruned = _pruned_pair(tokenizer, tmp_path, family)
    params, sparsity = stream_counts(StreamedModel(str(tmp_path / "pruned")))
    assert params == param_counts(pruned)
    assert sparsity == sparsity_stats(prunekit.ModelAdapter(pruned))


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
