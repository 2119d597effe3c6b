"""What a streamed run keeps so that a killed run can continue: it all lives in the temporary
output folder `.NAME.partial` next to the output NAME.

- `state.json`: the run's settings (a resume must match them), how many units are finished, the
  shard writer's state and small per-block results; replaced atomically after every unit.
- `resume-0000k.pt`: what the next unit needs (the activations after the last finished block,
  the torch random state, the method's counters), named by unit so that a kill between writing
  it and writing state.json leaves the previous, consistent pair.

A completed run deletes these and renames the folder to NAME; none of it is left behind.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from ..errors import PrunekitError
from ..export import staging
from ..export.atomic import replace_dir
from ..export.save import check_output_dir

log = logging.getLogger("prunekit.streaming")
STATE = "state.json"


def partial_dir(out: Path) -> Path:
    return staging.partial(out)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.1f} GiB"


# what a user changes on purpose is named before the settings that follow from it (a method's own options)
_FIRST = ("model", "method", "calibration")


def _first_difference(old: dict, new: dict, where: str = "") -> str:
    keys = set(old) | set(new)
    for k in [k for k in _FIRST if k in keys] + sorted(keys - set(_FIRST)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict) and a != b:
            return _first_difference(a, b, f"{where}{k}.")
        if a != b:
            return f"{where}{k}: {a!r} then, {b!r} now"
    return ""


class RunState:
    def __init__(self, out: Path, settings: dict, resume: bool, overwrite: bool = False):
        """Open the temporary folder: continue it (resume with the same settings), or start afresh,
        reporting and replacing a leftover one. Raises before any work if the output is taken."""
        self.out = Path(out).resolve()
        self.folder = partial_dir(self.out)
        state_file = self.folder / STATE
        if resume and not overwrite and not state_file.is_file() and self.out.is_dir() and any(self.out.iterdir()):
            raise PrunekitError(f"--resume: output folder {out} is already complete and there is no interrupted run "
                                f"to continue (use --overwrite without --resume to prune it again)")
        check_output_dir(self.out, overwrite)
        self.settings = json.loads(json.dumps(settings))      # what state.json will hold, compared alike
        self.notes: list[str] = []
        self.data: dict = {"settings": self.settings, "finished": 0, "writer": None, "results": {}}
        if resume and state_file.is_file():
            saved = json.loads(state_file.read_text())
            if saved["settings"] != self.settings:
                raise PrunekitError(f"--resume refused: the interrupted run in {self.folder} had different settings "
                                    f"({_first_difference(saved['settings'], self.settings)}); "
                                    "run without --resume to start over")
            self.data = saved
            self.notes.append(f"resumed after {saved['finished']} finished units from {self.folder}")
            return
        if self.folder.exists():
            note = (f"replacing the leftover temporary folder {self.folder} ({human_bytes(_size(self.folder))}) "
                    f"of an interrupted run")
            if resume:
                note += " (it holds no resumable state)"
            log.warning(note)
            self.notes.append(note)
            shutil.rmtree(self.folder)
        elif resume:
            self.notes.append("--resume: no interrupted run found; started from the beginning")
        self.folder.mkdir(parents=True)

    @property
    def finished(self) -> int:
        return self.data["finished"]

    @property
    def results(self) -> dict:
        return self.data["results"]

    def payload(self):
        """What the last finished unit left for the next one (None at the start)."""
        p = self.folder / f"resume-{self.finished:05d}.pt"
        return torch.load(p, weights_only=False) if p.is_file() else None

    def save(self, finished: int, writer_state: dict, payload=None) -> None:
        """Record that `finished` units are done: payload first, then state.json (atomic), then the old payload goes."""
        previous = self.folder / f"resume-{self.finished:05d}.pt"
        if payload is not None:
            path = self.folder / f"resume-{finished:05d}.pt"
            torch.save(payload, path.with_name(path.name + ".tmp"))
            os.replace(path.with_name(path.name + ".tmp"), path)
        self.data["finished"] = finished
        self.data["writer"] = writer_state
        tmp = self.folder / (STATE + ".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.folder / STATE)
        if previous.name != f"resume-{finished:05d}.pt":
            previous.unlink(missing_ok=True)

    def drop_stale(self) -> None:
        """On resume: remove payloads newer than the saved state (written just before a kill)."""
        for p in self.folder.glob("resume-*.pt*"):
            if p.name != f"resume-{self.finished:05d}.pt":
                p.unlink()

    def complete(self) -> Path:
        """Delete the run state and move the finished folder into place as the output."""
        for p in list(self.folder.glob("resume-*.pt*")) + [self.folder / STATE, self.folder / (STATE + ".tmp")]:
            p.unlink(missing_ok=True)
        replace_dir(self.folder, self.out)     # an old output is moved aside, then removed
        return self.out
