"""Run one argv, stream its output lines to a sink as they come, forward signals, bound memory."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import IO

from crgpu.errors import NotFoundError

TAIL_LINES = 200
MAX_LINE_CHARS = 4096
DRAIN_AFTER_EXIT_S = 0.3

LineSink = Callable[[str], None]


@dataclass
class RunResult:
    exit_code: int
    duration_s: float
    tail: list[str] = field(default_factory=list)
    interrupted_by: int | None = None


def _pump(stream: IO[bytes], lines: queue.Queue[str | None]) -> None:
    try:
        for raw in iter(stream.readline, b""):
            lines.put(raw[:MAX_LINE_CHARS].decode("utf-8", "replace").rstrip("\r\n"))
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)


def run_streaming(
    argv: list[str],
    sink: LineSink,
    env_add: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> RunResult:
    """Run argv (never through a shell); each stdout/stderr line goes to sink as it comes.

    Only the last TAIL_LINES lines are kept, so a chatty runtime cannot grow our memory.
    SIGINT and SIGTERM are forwarded to the child; the caller sees `interrupted_by`.
    Returns once the child exits, even when a daemonised grandchild keeps the pipe open.
    """
    env = dict(os.environ)
    env.update(env_add or {})
    start = time.monotonic()
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            close_fds=True,
        )
    except OSError as exc:
        raise NotFoundError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    assert child.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue(maxsize=10000)
    reader = threading.Thread(target=_pump, args=(child.stdout, lines), daemon=True)
    reader.start()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    received: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, forward)
    try:
        exited_at: float | None = None
        while True:
            try:
                line = lines.get(timeout=0.05)
            except queue.Empty:
                line = ""
                if child.poll() is not None:
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > DRAIN_AFTER_EXIT_S:
                        break
                if timeout_s is not None and time.monotonic() - start > timeout_s:
                    child.kill()
                continue
            if line is None:
                break
            tail.append(line)
            sink(line)
        exit_code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        child.stdout.close()
    return RunResult(
        exit_code=exit_code,
        duration_s=time.monotonic() - start,
        tail=list(tail),
        interrupted_by=received[0] if received else None,
    )
