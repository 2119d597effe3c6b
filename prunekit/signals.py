"""SIGTERM (what `timeout`, Slurm and `docker stop` send) handled like Ctrl-C: it raises where the
program is, so every cleanup that runs on an interrupt (the atomic writers remove their
temporary folders) runs on it too."""
from __future__ import annotations

import signal
from contextlib import contextmanager

EXIT_SIGINT = 128 + signal.SIGINT     # 130, the shell's code for a run ended by Ctrl-C
EXIT_SIGTERM = 128 + signal.SIGTERM   # 143


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _raise_terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a second SIGTERM must not cut the cleanup short
    raise Terminated()


@contextmanager
def sigterm_as_interrupt():
    """Inside the block SIGTERM raises Terminated (a KeyboardInterrupt); restored afterwards.
    Outside the main thread signals cannot be handled, and the block runs unchanged."""
    try:
        old = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    return EXIT_SIGTERM if isinstance(interrupt, Terminated) else EXIT_SIGINT
