"""What a benchmark run records about itself: the command, the git commit, the package versions and
the machine. Cheap: reads /proc and package metadata, imports neither torch nor transformers."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "transformers", "prunekit")


def git_commit(root: Path = ROOT) -> dict:
    """HEAD and whether tracked files differ from it (the run's code may not be the commit's)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _proc(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict:
    mem_kb = _proc("/proc/meminfo", "MemTotal")
    out = {"cpu": _proc("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
           "cores": os.cpu_count(),
           "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "memory_gb": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
           "system": f"{platform.system()} {platform.release()}"}
    try:    # a GPU, where there is one (the name only)
        gpus = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=10).stdout.split("\n")
        out["gpus"] = [g.strip() for g in gpus if g.strip()]
    except (OSError, subprocess.SubprocessError):
        out["gpus"] = []
    return out


def record(command: str, argv: list[str], env: dict | None = None) -> dict:
    """The provenance of a run that starts now (`finish` adds its end)."""
    return {"command": command, "argv": argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **git_commit(), "versions": versions(), "machine": machine(),
            "environment": {k: v for k, v in (env or {}).items()
                            if k in ("PRUNEKIT_DATA_DIR", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")},
            "cwd": "benchmarks", "executable": sys.executable}


def finish(rec: dict, returncode: int, seconds: float) -> dict:
    return {**rec, "returncode": returncode, "wall_s": round(seconds, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
