"""What the signals an operator or a supervisor sends (SIGINT, SIGTERM, SIGHUP) do while crgpu holds
something it must put back: raised as an interruption where crgpu can still undo its work, noted
and acted on afterwards where undoing it must not itself be cut short.

Python raises KeyboardInterrupt for SIGINT only; SIGTERM (a kubelet's or systemd's stop, `kill`)
and SIGHUP (a closed terminal, an ssh session gone) end the process outright by default, which
during a CUDA lock or checkpoint left every process of the job locked or checkpointed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised as Ctrl-C is: every `except BaseException` clean-up runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def interrupts_raised() -> Iterator[None]:
    """Inside: SIGTERM and SIGHUP raise Signalled, SIGINT KeyboardInterrupt."""
    if not _main_thread():
        yield
        return

    def raise_it(signum: int, _frame: FrameType | None) -> None:
        raise Signalled(signum)

    previous = {sig: signal.signal(sig, raise_it) for sig in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def signals_noted(note: Callable[[int], None]) -> Iterator[None]:
    """Inside: SIGINT, SIGTERM and SIGHUP are passed to `note` instead of acting."""
    if not _main_thread():
        yield
        return

    def noted(signum: int, _frame: FrameType | None) -> None:
        note(signum)

    previous = {sig: signal.signal(sig, noted) for sig in STOPPING}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
