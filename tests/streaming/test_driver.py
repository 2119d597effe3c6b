"""Streaming: blocks read from safetensors on demand, written at once. Every streamed result is
compared with the in-memory path on the same checkpoint (weights byte-equal); methods that cannot
stream refuse in one line; a streamed run fits a memory limit below the model's size."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.errors import PrunekitError
from prunekit.methods import LaCoConfig, SearchConfig, ShortGPTConfig
from prunekit.stats import sparsity_stats
from prunekit.streaming import partial_dir, stream_prune

from tests.helpers import ROOT
from tests.helpers.checkpoints import (LAYERWISE_CONFIGS as CONFIGS, calibration_ids as _ids,
                                       assert_byte_equal as _assert_byte_equal, pruned_in_memory as _in_memory,
                                       read_folder as _read_folder, save_folder as _save,
                                       write_random_llama as _write_random_llama)
from tests.helpers.models import plain_model


@pytest.mark.parametrize("family", ["llama", "opt"])
@pytest.mark.parametrize("method", list(CONFIGS))
def test_streamed_equals_in_memory(family, method, tokenizer, tmp_path):
    src = _save(plain_model(family), tokenizer, tmp_path / "src")
    ids = _ids()
    res = stream_prune(str(src), CONFIGS[method](), ids, tmp_path / "out", progress=False)
    ref = _in_memory(src, CONFIGS[method](), ids)
    out = _read_folder(tmp_path / "out")
    _assert_byte_equal(out, ref)
    assert res.sparsity == sparsity_stats(prunekit.ModelAdapter(ref))
    assert not partial_dir((tmp_path / "out").resolve()).exists()


def test_shortgpt_streamed_equals_in_memory(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    src = _save(plain_model("llama", layers=6), tokenizer, tmp_path / "src")
    ids = _ids(4, 24)
    res = stream_prune(str(src), ShortGPTConfig(remove_layers=2), ids, tmp_path / "out", progress=False)
    ref = _in_memory(src, ShortGPTConfig(remove_layers=2), ids)
    _assert_byte_equal(_read_folder(tmp_path / "out"), ref)
    assert res.details["depth"]["layers_after"] == 4 == ref.config.num_hidden_layers
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    x = _ids(1, 16, seed=5)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, ref(x).logits)


@pytest.mark.parametrize("config", [LaCoConfig(remove_layers=1), SearchConfig(keep=0.8)], ids=["laco", "search"])
def test_methods_that_cannot_stream_refuse_in_one_line(config, tokenizer, tmp_path):
    src = _save(plain_model("llama"), tokenizer, tmp_path / "src")
    with pytest.raises(PrunekitError, match="cannot stream") as e:
        stream_prune(str(src), config, _ids(), tmp_path / "out", progress=False)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


CGROUP = Path("/sys/fs/cgroup/memory")


CG_CHILD = """
import sys, torch
from prunekit.methods import WandaConfig
from prunekit.streaming import stream_prune
ids = torch.randint(3, 384, (4, 64), generator=torch.Generator().manual_seed(0))
r = stream_prune(sys.argv[1], WandaConfig(sparsity=0.5), ids, sys.argv[2], progress=False, max_shard_bytes=50_000_000)
print("overall", r.sparsity["overall"], flush=True)
"""


@pytest.mark.slow
def test_streamed_run_inside_a_memory_limit_below_the_model_size(tokenizer, tmp_path):
    # cgroup v1 memory controller (this machine mounts v1 at /sys/fs/cgroup/memory; v2 has memory.max instead)
    if not (CGROUP / "memory.limit_in_bytes").is_file():
        pytest.skip(f"no cgroup v1 memory controller at {CGROUP}")
    if any(l.startswith("SwapTotal:") and int(l.split()[1]) > 0 for l in open("/proc/meminfo")):
        pytest.skip("swap is on: a memory limit would not force the model out of memory")
    group = CGROUP / f"prunekit-test-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as e:
        pytest.skip(f"memory cgroups are not writable here: {e}")
    try:
        # a Python process with torch and transformers imported needs about 300 MB before any weight
        size = _write_random_llama(tmp_path / "big", tokenizer, layers=48, hidden=512, inter=1536)
        limit = 450 * 2**20
        assert size > limit * 1.2      # an in-memory load alone needs more than the limit (no swap)
        (group / "memory.limit_in_bytes").write_text(str(limit))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        child = subprocess.run([sys.executable, "-c", CG_CHILD, str(tmp_path / "big"), str(tmp_path / "out")],
                               capture_output=True, text=True, env=env, timeout=600,
                               preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())))
        peak = int((group / "memory.max_usage_in_bytes").read_text())
    finally:
        group.rmdir()
    assert child.returncode == 0, child.stderr[-2000:]
    assert peak <= limit
    assert "overall 0.5" in child.stdout
    out = _read_folder(tmp_path / "out")
    w = out["model.layers.47.mlp.down_proj.weight"]
    assert (w == 0).sum(1).tolist() == [w.shape[1] // 2] * w.shape[0]    # Wanda: half of every row
    assert len(out) == len(_read_folder(tmp_path / "big"))
