"""The recovery run's working folder: a fixed hidden sibling of the output folder that holds the
Trainer checkpoints while training (so a killed run can resume) and the final files, renamed into
place only when complete; a completed run leaves no checkpoint behind."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import PrunekitError
from ..export import staging
from ..export.atomic import replace_dir
from ..export.save import check_output_dir

CHECKPOINTS = "checkpoints"
RUN_FILE = "recovery_run.json"       # the options of the run, so --resume continues the same run


def work_dir(out: str | os.PathLike) -> Path:
    return staging.recover_work(Path(out).resolve())


def open_work_dir(out, options: dict, overwrite: bool, resume: bool) -> Path:
    """The working folder, fresh or (resume) the interrupted run's, checked to have the same options."""
    check_output_dir(out, overwrite)
    work = work_dir(out)
    if work.exists() and resume:
        saved = json.loads((work / RUN_FILE).read_text()) if (work / RUN_FILE).is_file() else None
        if saved != options:
            changed = sorted(k for k in set(options) | set(saved or {}) if (saved or {}).get(k) != options.get(k))
            raise PrunekitError(f"--resume: the interrupted run in {work} used other options ({', '.join(changed)})")
        return work
    if resume:
        raise PrunekitError(f"--resume: no interrupted run of {out} (no {work})")
    if work.exists():
        if not overwrite:
            raise PrunekitError(f"{work} holds an interrupted run: pass --resume to continue it or --overwrite to "
                                f"start again")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / RUN_FILE).write_text(json.dumps(options, indent=2) + "\n")
    return work


def publish(work: Path, out) -> Path:
    """Drop the checkpoints and the run file, then move the folder into place in one rename."""
    out = Path(out).resolve()
    shutil.rmtree(work / CHECKPOINTS, ignore_errors=True)
    (work / RUN_FILE).unlink(missing_ok=True)
    replace_dir(work, out)
    return out
