"""Progress that shows both on a terminal (a tqdm bar) and in a log file (stderr redirected,
Slurm, docker logs): there a bar prints nothing, so a long loop writes one line every few
seconds instead, e.g. "prunekit: evaluating wikitext2: window 12/140 (31 s)"."""
from __future__ import annotations

import logging
import os
import sys
import time

from tqdm.auto import tqdm

log = logging.getLogger("prunekit")

DEFAULT_SECONDS = 10.0


def _interval() -> float:
    """Seconds between log lines; PRUNEKIT_PROGRESS_SECONDS overrides (0: a line per step)."""
    try:
        return max(0.0, float(os.environ.get("PRUNEKIT_PROGRESS_SECONDS", DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def is_terminal() -> bool:
    """Whether progress goes to a terminal (a bar) rather than a log file (lines)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def steps(iterable, desc: str, unit: str, total: int | None = None, enabled: bool = True):
    """Iterate `iterable` with progress: a tqdm bar on a terminal, log lines elsewhere."""
    if not enabled:
        return iter(iterable)
    if is_terminal():
        return iter(tqdm(iterable, desc=desc, unit=unit, total=total))
    return _log_lines(iterable, desc, unit, total if total is not None else _len(iterable))


def _len(iterable) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


def _log_lines(iterable, desc, unit, total):
    line = _LogBar(total, desc, unit, last_line=False)   # an iteration's end is the next output
    for item in iterable:
        yield item
        line.update()


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (pytest and callers swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def log_to_stderr() -> None:
    """Show prunekit's log lines (progress, removed leftovers) on stderr as "prunekit: ..."; once."""
    if any(isinstance(h, _CurrentStderr) for h in log.handlers):
        return
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("prunekit: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


class _LogBar:
    """tqdm's update/set_postfix/close, written as a log line every few seconds and, by default, at
    the last step (off a terminal)."""

    def __init__(self, total, desc, unit, last_line: bool = True):
        self.total, self.desc, self.unit, self.n, self.note = total, desc, unit, 0, ""
        self.last_line = last_line
        self.every = _interval()
        self.start = self.last = time.monotonic()

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if now - self.last >= self.every or (self.last_line and self.n == self.total):
            of = f"/{self.total}" if self.total is not None else ""
            log.info("%s: %s %d%s (%.0f s)%s", self.desc, self.unit, self.n, of, now - self.start,
                     f" {self.note}" if self.note else "")
            self.last = now

    def set_postfix(self, **kw) -> None:
        self.note = ", ".join(f"{k}={v}" for k, v in kw.items())

    def set_postfix_str(self, s: str) -> None:
        self.note = s

    def close(self) -> None:
        pass


def bar(total: int | None, desc: str, unit: str, enabled: bool = True):
    """A progress bar for loops driven step by step: tqdm on a terminal, log lines elsewhere,
    nothing when disabled."""
    if not enabled:
        return tqdm(total=total, disable=True)
    if is_terminal():
        return tqdm(total=total, desc=desc, unit=unit)
    return _LogBar(total, desc, unit)
