"""Run one argv, stream its output lines to a sink as they come, forward signals, bound memory.

The runtime writes into a log file, not a pipe, which crgpu follows: a restored container or
sandbox inherits the runtime's stdio, and a pipe would die with crgpu (EPIPE in the container)
and keep crgpu's reader waiting for an EOF that never comes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from crgpu.errors import NotFoundError

TAIL_LINES = 200
MAX_LINE_CHARS = 4096
POLL_S = 0.02
READ_CHUNK = 64 * 1024

LineSink = Callable[[str], None]


@dataclass
class RunResult:
    exit_code: int
    duration_s: float
    tail: list[str] = field(default_factory=list)
    interrupted_by: int | None = None


class _LineFollower:
    """Turns bytes appended to a file into lines, holding at most one partial line."""

    def __init__(self, path: Path, sink: LineSink, tail: deque[str]) -> None:
        self.handle = path.open("rb")
        self.handle.seek(0, os.SEEK_END)
        self.partial = b""
        self.sink = sink
        self.tail = tail

    def _emit(self, raw: bytes) -> None:
        line = raw[:MAX_LINE_CHARS].decode("utf-8", "replace").rstrip("\r")
        self.tail.append(line)
        self.sink(line)

    def poll(self) -> None:
        while chunk := self.handle.read(READ_CHUNK):
            *complete, self.partial = (self.partial + chunk).split(b"\n")
            for raw in complete:
                self._emit(raw)
            if len(self.partial) > MAX_LINE_CHARS:  # a line without end: cut, never grow
                self._emit(self.partial)
                self.partial = b""

    def close(self) -> None:
        self.poll()
        if self.partial:
            self._emit(self.partial)
        self.handle.close()


def run_streaming(
    argv: list[str],
    sink: LineSink,
    output_log: Path,
    env_add: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> RunResult:
    """Run argv (never through a shell) with stdout and stderr appended to output_log;
    each new line goes to sink as it comes. Only the last TAIL_LINES lines are kept in memory.
    SIGINT and SIGTERM are forwarded to the child; the caller sees `interrupted_by`.
    """
    env = dict(os.environ)
    env.update(env_add or {})
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with output_log.open("ab") as out:
        follower = _LineFollower(output_log, sink, tail)
        start = time.monotonic()
        try:
            child = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, close_fds=True
            )
        except OSError as exc:
            follower.close()
            raise NotFoundError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    received: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for forwarded in (signal.SIGINT, signal.SIGTERM):
            previous[forwarded] = signal.signal(forwarded, forward)
    try:
        while True:
            follower.poll()
            try:
                exit_code = child.wait(timeout=POLL_S)  # returns the moment the runtime exits
                break
            except subprocess.TimeoutExpired:
                if timeout_s is not None and time.monotonic() - start > timeout_s:
                    child.kill()
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)
        follower.close()
    return RunResult(
        exit_code=exit_code,
        duration_s=time.monotonic() - start,
        tail=list(tail),
        interrupted_by=received[0] if received else None,
    )
