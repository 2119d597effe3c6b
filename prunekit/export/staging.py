"""The names of the hidden folders prunekit stages work in beside an output NAME, in one place.
Every writer takes its folder's name from here, and `parse` recognises each kind, so that the
stale-folder cleaner (export/stale.py) knows them all:

| kind           | name                    | made by                                                | resumed by |
|----------------|-------------------------|--------------------------------------------------------|------------|
| `tmp`          | `.NAME.tmp-PID-XXXX`    | an atomic folder write (export/atomic.py); the compare page, named for its stem | - |
| `old`          | `.NAME.old-PID-XXXX`    | a replaced output moved aside (atomic.replace_dir)     | -          |
| `recipe`       | `.NAME.recipe-PID-XXXX` | a recipe's stage folders (workflows/recipe.py)         | -          |
| `partial`      | `.NAME.partial`         | a streamed run (streaming/runstate.py)                 | `prunekit prune ... --resume` |
| `recover-work` | `.NAME.recover-work`    | a LoRA recovery (recovery/output.py)                   | `prunekit recover ... --resume` |

The process id in the first three says whose folder it is: a live process's is left alone. Names
written before pids were recorded (`.NAME.tmp-XXXX`, `.NAME.recipe-XXXX`, `.NAME.old` of a streamed
run's final rename) are still recognised, their writer gone. The resumable names are fixed (a
resume finds its folder by the output's name alone) and must not change: users may have them.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

PID_KINDS = ("tmp", "old", "recipe")        # made with mkdtemp: .NAME.KIND-PID-XXXX
RESUMABLE_KINDS = ("partial", "recover-work")
KINDS = PID_KINDS + RESUMABLE_KINDS


def _made(kind: str, out: Path) -> Path:
    """A fresh folder of a pid-named kind beside `out` (mkdtemp: 0700, a unique suffix)."""
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{kind}-{os.getpid()}-", dir=out.parent))


def temporary(out: Path) -> Path:
    """A new `.NAME.tmp-PID-XXXX` folder beside `out`, to become `out` in one rename."""
    return _made("tmp", out)


def moved_aside(out: Path) -> Path:
    """A new `.NAME.old-PID-XXXX` folder beside `out`, the old `out` is moved into (as `x`)
    while its replacement is renamed into place."""
    return _made("old", out)


OLD_ENTRY = "x"     # what moved_aside's folder holds: the previous output


def recipe_work(out: Path) -> Path:
    """A new `.NAME.recipe-PID-XXXX` folder beside `out`: a recipe's stage outputs."""
    return _made("recipe", out)


def temporary_file(path: Path) -> Path:
    """The name a file is written under before it replaces `path` (`.NAME.tmp-PID`)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def partial(out: Path) -> Path:
    """`.NAME.partial`: a streamed run's output as it is written, with its resumable state."""
    return out.parent / f".{out.name}.partial"


def recover_work(out: Path) -> Path:
    """`.NAME.recover-work`: a recovery's checkpoints and files until it completes."""
    return out.parent / f".{out.name}.recover-work"


@dataclass(frozen=True)
class Staged:
    """What a staging folder's name says: whose output (`name`), which kind, which process (None:
    a resumable kind, or a name from before pids were recorded)."""
    name: str
    kind: str
    pid: int | None = None

    @property
    def resumable(self) -> bool:
        return self.kind in RESUMABLE_KINDS


def parse(entry: str) -> Staged | None:
    """The staging folder named `entry` (a file name, not a path), or None for any other name.
    The kind is after the name's last dot (NAME may hold dots; mkdtemp's suffixes never do)."""
    name, dot, tail = entry[1:].rpartition(".")
    if not entry.startswith(".") or not dot or not name:
        return None
    if tail in RESUMABLE_KINDS:
        return Staged(name, tail)
    kind, dash, rest = tail.partition("-")
    if kind in PID_KINDS and (dash or not rest):
        return Staged(name, kind, _pid(rest))
    return None


def _pid(rest: str) -> int | None:
    """`PID-XXXX` or `PID` -> PID; a suffix with no pid before it (`XXXX`) -> None."""
    head, dash, _ = rest.partition("-")
    return int(head) if head.isdigit() and (dash or rest == head) else None


def staged_beside(out: Path) -> list[tuple[Path, Staged]]:
    """Every staging folder of the output `out` (its siblings named for it), sorted by path."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    found = []
    for p in out.parent.glob(f".{out.name}.*"):
        staged = parse(p.name)
        if staged is not None and staged.name == out.name and p.is_dir():
            found.append((p, staged))
    return sorted(found)
