"""Resumable streamed runs: killed and resumed equals uninterrupted, other settings refused."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.methods import SparseGPTConfig, WandaConfig
from prunekit.streaming import partial_dir, stream_prune

from tests.helpers import ROOT
from tests.helpers.checkpoints import (LAYERWISE_CONFIGS as CONFIGS, calibration_ids as _ids,
                                       assert_byte_equal as _assert_byte_equal, pruned_in_memory as _in_memory,
                                       read_folder as _read_folder, save_folder as _save)
from tests.helpers.models import plain_model


def _files(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


class _Kill(Exception):
    pass


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "sparsellm"])
def test_kill_and_resume_equals_uninterrupted(method, tokenizer, tmp_path):
    src = _save(plain_model("llama", layers=4), tokenizer, tmp_path / "src", shard="100KB")
    ids = _ids()
    kw = dict(max_shard_bytes=150_000, progress=False)
    stream_prune(str(src), CONFIGS[method](), ids, tmp_path / "ref", **kw)
    ref = _files(tmp_path / "ref")
    for k in (0, 2, 3, 4):            # after the first, a middle and the last block, after the non-block tensors

        def boom(unit, k=k):
            if unit == k:
                raise _Kill

        out = tmp_path / f"out{k}"
        with pytest.raises(_Kill):
            stream_prune(str(src), CONFIGS[method](), ids, out, on_unit=boom, **kw)
        assert not out.exists() and partial_dir(out.resolve()).is_dir()
        seen = []
        res = stream_prune(str(src), CONFIGS[method](), ids, out, resume=True, on_unit=seen.append, **kw)
        assert seen == list(range(k + 1, 5))          # only what was not finished ran again
        assert any("resumed" in e for e in res.events)
        assert _files(out) == ref
        assert not partial_dir(out.resolve()).exists()


def test_resume_with_other_settings_is_refused_and_leftover_is_replaced(tokenizer, tmp_path):
    src = _save(plain_model("llama"), tokenizer, tmp_path / "src")
    ids = _ids()
    out = tmp_path / "out"

    def boom(unit):
        if unit == 1:
            raise _Kill

    with pytest.raises(_Kill):
        stream_prune(str(src), WandaConfig(sparsity=0.5), ids, out, on_unit=boom, progress=False)
    with pytest.raises(PrunekitError, match=r"--resume refused.*sparsity: 0\.5 then, 0\.6 now"):
        stream_prune(str(src), WandaConfig(sparsity=0.6), ids, out, resume=True, progress=False)
    with pytest.raises(PrunekitError, match="calibration"):
        stream_prune(str(src), WandaConfig(sparsity=0.5), _ids(seed=1), out, resume=True, progress=False)
    res = stream_prune(str(src), WandaConfig(sparsity=0.6), ids, out, progress=False)
    note = [e for e in res.events if "leftover" in e]
    assert len(note) == 1 and str(partial_dir(out.resolve())) in note[0] and "KiB" in note[0]
    _assert_byte_equal(_read_folder(out), _in_memory(src, WandaConfig(sparsity=0.6), ids))


CHILD = """
import sys, torch
from prunekit.methods import SparseGPTConfig
from prunekit.stats import sparsity_stats
from prunekit.streaming import stream_prune
ids = torch.load(sys.argv[3])
def unit(k):
    print("unit", k, flush=True)
    if k >= 1:
        import time; time.sleep(30)    # the parent kills us here, or earlier
stream_prune(sys.argv[1], SparseGPTConfig(sparsity=0.5), ids, sys.argv[2], on_unit=unit, progress=False,
             max_shard_bytes=150_000)
"""


def test_sigkill_then_resume_equals_uninterrupted(tokenizer, tmp_path):
    src = _save(plain_model("llama", layers=4), tokenizer, tmp_path / "src")
    ids = _ids()
    torch.save(ids, tmp_path / "ids.pt")
    out = tmp_path / "out"
    # float sums depend on the thread count: the killed run and the resume use the same one, as a
    # resume on the same machine does
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(out), str(tmp_path / "ids.pt")],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        for line in child.stdout:
            if line.strip() == "unit 1":
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL and not out.exists()
    seen = []
    stream_prune(str(src), SparseGPTConfig(sparsity=0.5), ids, out, resume=True, on_unit=seen.append,
                 max_shard_bytes=150_000, progress=False)
    assert seen == [2, 3, 4]
    stream_prune(str(src), SparseGPTConfig(sparsity=0.5), ids, tmp_path / "ref", max_shard_bytes=150_000,
                 progress=False)
    assert _files(out) == _files(tmp_path / "ref")
