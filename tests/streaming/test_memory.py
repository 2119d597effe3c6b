"""Available memory is bounded by every cgroup above the process."""
from pathlib import Path

import pytest

from prunekit.streaming.memory import available_memory

from tests.helpers import ROOT


GiB = 1 << 30


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
        module = ROOT / "prunekit" / "streaming" / "memory.py"   # no torch import
        child = subprocess.run([sys.executable, "-c", PROBE, str(module)], capture_output=True, text=True, timeout=60,
                               preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())))
    finally:
        group.rmdir()
    assert child.returncode == 0, child.stderr
    seen = int(child.stdout)
    assert limit - (64 << 20) < seen <= limit < available_memory()
