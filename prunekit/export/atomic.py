"""Writing files and folders atomically: everything goes to a temporary sibling that is renamed
into place only when complete, so an interrupted run never leaves something that looks finished."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..errors import PrunekitError
from . import staging


def check_output_dir(out: str | os.PathLike, overwrite: bool = False) -> None:
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise PrunekitError(f"output {out} exists and is not a folder")
    if p.is_dir() and any(p.iterdir()) and not overwrite:
        raise PrunekitError(f"output folder {out} exists and is not empty (use --overwrite to replace it)")


@contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False):
    """Yields a temporary folder; on success it replaces `out` in one rename."""
    out = Path(out).resolve()
    check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging.temporary(out)     # the pid in its name: see export/stale.py
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the result should look like any folder
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(src: Path, out: Path) -> None:
    """Put the complete folder `src` at `out` (a sibling) in one rename; an old `out` is moved aside
    first and removed after, so `out` is never half-written."""
    old = None
    if out.exists():
        old = staging.moved_aside(out)
        os.replace(out, old / staging.OLD_ENTRY)
    os.replace(src, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace the file at `path` with `text` in one rename."""
    path = Path(path)
    tmp = staging.temporary_file(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def json_text(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def write_json(path: Path, obj) -> None:
    Path(path).write_text(json_text(obj))
