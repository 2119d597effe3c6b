"""Staging folders a killed run left next to its output (every kind export/staging.py names),
found by the next run of the same output:

- a temporary folder (`.NAME.tmp-PID-*`, `.NAME.recipe-PID-*`) whose process is gone is reported
  and removed; one whose process is still alive belongs to a run in progress and is kept;
- a replaced output moved aside (`.NAME.old-PID-*`) whose process is gone is removed when NAME
  exists (the replacement landed) or it is empty; otherwise it holds the only copy of the previous
  output, so it is kept and the line says how to put it back;
- a resumable run's folder (`.NAME.partial`, `.NAME.recover-work`) is never removed here: one line
  says which command resumes it and how to discard it.
"""
from __future__ import annotations

import logging
import os
import shlex
import shutil
from pathlib import Path

from . import staging

log = logging.getLogger("prunekit")

RESUMES = {"partial": "the same `prunekit prune ... --stream` command with --resume continues it",
           "recover-work": "the same `prunekit recover` command with --resume continues it"}


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # exists, owned by someone else
        return True
    except OverflowError:        # no process has such an id
        return False
    return True


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def stale_temporaries(out: str | os.PathLike, own: tuple[str, ...] = ()) -> list[tuple[Path, staging.Staged]]:
    """The staging folders beside `out` that no live process is writing (names without a pid are
    from before pids were recorded, or resumable: their writer is gone too), leaving out the kinds
    in `own` (those the caller manages itself)."""
    out = Path(out).expanduser().absolute()
    return [(p, s) for p, s in staging.staged_beside(out)
            if s.kind not in own and not (s.pid is not None and _alive(s.pid))]


def _held(p: Path, s: staging.Staged) -> Path:
    """Where a moved-aside output is: inside its folder (replace_dir), or the folder itself (the
    pid-less `.NAME.old` of streamed runs before pids were recorded)."""
    return p / staging.OLD_ENTRY if s.pid is not None else p


def remove_stale_temporaries(out: str | os.PathLike, own: tuple[str, ...] = ()) -> list[dict]:
    """Handle the stale staging folders of `out` (see the module's docstring); returns the removed
    ones as [{"path", "bytes"}] and logs one line for each folder found."""
    out = Path(out).expanduser().absolute()
    removed = []
    for p, s in stale_temporaries(out, own):
        size = folder_bytes(p)
        if s.resumable:
            log.warning("kept %s (%.1f MB), an interrupted run: %s; to discard it, delete it (rm -r %s)",
                        p, size / 1e6, RESUMES[s.kind], shlex.quote(str(p)))
        elif s.kind == "old" and not out.exists() and _held(p, s).exists():
            log.warning("kept %s (%.1f MB): it holds the previous %s, moved aside by an interrupted replace; "
                        "to put it back: mv %s %s", p, size / 1e6, out.name, shlex.quote(str(_held(p, s))),
                        shlex.quote(str(out)))
        else:
            shutil.rmtree(p, ignore_errors=True)
            log.warning("removed %s (%.1f MB), left by an interrupted run", p, size / 1e6)
            removed.append({"path": str(p), "bytes": size})
    return removed
