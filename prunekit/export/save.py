"""Write an output folder atomically: everything goes into a temporary sibling folder that is
renamed into place only when complete, so an interrupted run never leaves a folder that looks
finished."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import PrunekitError

REPORT_NAME = "prunekit_report.json"


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
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the result should look like any folder
    try:
        yield tmp
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_checkpoint(model, tokenizer, report: dict | None, out, overwrite: bool = False, extra=None) -> Path:
    """A normal Hugging Face checkpoint (safetensors, tokenizer) plus prunekit_report.json;
    `extra(folder)` may add files (plots) before the folder is moved into place."""
    with atomic_dir(out, overwrite) as tmp:
        if extra is not None:
            extra(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if report is not None:
            write_json(tmp / REPORT_NAME, report)
    return Path(out)
