"""Temporary folders a killed run left next to its output (`.<name>.tmp-<pid>-*`): found,
reported and removed by the next run of the same output. A folder whose process is still alive
belongs to a run in progress and is kept. (`.<name>.old-*` folders are left alone: one left by a
replace killed half-way holds the only copy of the previous output.)"""
from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger("prunekit")

_PID = re.compile(r"\.tmp-(\d+)-")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # exists, owned by someone else
        return True
    return True


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def stale_temporaries(out: str | os.PathLike) -> list[Path]:
    """Leftover temporary siblings of `out` whose writer is gone (names without a pid are from
    before pids were recorded: their writer is gone too)."""
    out = Path(out).expanduser().absolute()
    if not out.parent.is_dir():
        return []
    found = []
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        m = _PID.match(p.name[len(out.name) + 1:])
        if p.is_dir() and not (m and _alive(int(m.group(1)))):
            found.append(p)
    return sorted(found)


def remove_stale_temporaries(out: str | os.PathLike) -> list[dict]:
    """Remove the stale temporaries of `out`; returns [{"path", "bytes"}] and logs one line each."""
    removed = []
    for p in stale_temporaries(out):
        size = folder_bytes(p)
        shutil.rmtree(p, ignore_errors=True)
        log.warning("removed %s (%.1f MB), left by an interrupted run", p, size / 1e6)
        removed.append({"path": str(p), "bytes": size})
    return removed
