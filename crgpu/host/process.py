"""Run one argv, stream its output lines to a sink as they come, forward signals, bound memory.

The runtime writes into a log file, not a pipe, which crgpu follows: a restored container or
sandbox inherits the runtime's stdio, and a pipe would die with crgpu (EPIPE in the container)
and keep crgpu's reader waiting for an EOF that never comes.

The runtime runs with umask 077 (CRIU's images hold process memory: they end 0600), in a process
group of its own (so a stuck CRIU under it can be stopped with it), and dies with crgpu
(PR_SET_PDEATHSIG): a crgpu killed mid-dump leaves no runtime behind, and CRIU, losing runc,
aborts the dump and lets the container run on, as after Ctrl-C.
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

from crgpu.host.errors import NotFoundError
from crgpu.host.root import stat_fields
from crgpu.host.safedirs import open_private_append

TAIL_LINES = 200
MAX_LINE_CHARS = 4096
POLL_S = 0.02
READ_CHUNK = 64 * 1024

LineSink = Callable[[str], None]
# Called on every poll while the runtime runs; a message stops it (the whole process group).
Watchdog = Callable[[], str | None]
RUNTIME_UMASK = 0o077
_PR_SET_PDEATHSIG = 1


def query_stdout(argv: list[str], timeout: float) -> str | None:
    """A query tool's stdout when it answered with success in time; None when it did not (not
    there, failed, hung): for the optional answers (nvidia-smi, cuda-checkpoint) crgpu can do without."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def die_with_parent() -> Callable[[], None]:
    """A preexec function that asks the kernel to SIGKILL the child when crgpu dies. Prepared
    before the fork: the child only makes one system call."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # crgpu died before the request took effect
            os._exit(137)

    return preexec


@dataclass
class RunResult:
    exit_code: int
    duration_s: float
    tail: list[str] = field(default_factory=list)
    interrupted_by: int | None = None
    stopped_because: str | None = None


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
    watchdog: Watchdog | None = None,
    pass_fd: tuple[int, int] | None = None,
) -> RunResult:
    """Run argv (never through a shell) with stdout and stderr appended to output_log;
    each new line goes to sink as it comes. Only the last TAIL_LINES lines are kept in memory.
    SIGINT and SIGTERM are forwarded to the child; the caller sees `interrupted_by`.
    """
    env = dict(os.environ)
    env.update(env_add or {})
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    out = open_private_append(output_log)
    try:
        follower = _LineFollower(output_log, sink, tail)
        start = time.monotonic()
        try:
            child = _spawn(argv, out, env, pass_fd)
        except OSError as exc:
            follower.close()
            raise NotFoundError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    finally:
        os.close(out)
    stopped: list[str] = []
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
                if stopped:
                    continue
                if timeout_s is not None and time.monotonic() - start > timeout_s:
                    stopped.append(f"it ran longer than {timeout_s:g} s")
                elif watchdog is not None and (why := watchdog()):
                    stopped.append(why)
                if stopped:
                    _kill_group(child)
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)
        follower.close()
    return RunResult(
        exit_code=exit_code,
        duration_s=time.monotonic() - start,
        tail=list(tail),
        interrupted_by=received[0] if received else None,
        stopped_because=stopped[0] if stopped else None,
    )


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    """Stop the runtime and everything it started: its process group (CRIU) and every process
    below it, the tasks CRIU is restoring included (they sit in sessions of their own, and a
    restorer looping over a damaged image would otherwise run on after runc is gone)."""
    tree = _descendants(child.pid)
    for pid in tree:
        _signal(pid, signal.SIGSTOP)  # nothing forks away while the tree is read again
    tree |= _descendants(child.pid)
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in [child.pid, *tree]:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(root: int) -> set[int]:
    """Every process below `root`, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = stat_fields(handle.read().decode(errors="replace"))
        except OSError:
            continue
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            if pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def spawn_beside(argv: list[str], output_log: Path) -> subprocess.Popen[bytes]:
    """Start a helper that runs beside the runtime (CRIU's lazy-pages daemon) with the runtime's
    own rules: umask 077, its own process group, dies with crgpu."""
    out = open_private_append(output_log)
    try:
        return _spawn(argv, out, None)
    finally:
        os.close(out)


def _spawn(
    argv: list[str], out: int, env: dict[str, str] | None, pass_fd: tuple[int, int] | None = None
) -> subprocess.Popen[bytes]:
    """The runtime's rules for every process crgpu starts: no stdin, output into `out`, umask
    077, a process group of its own, killed when crgpu dies; `pass_fd` (source, target) hands
    one more descriptor over under the number the runtime was told."""
    die = die_with_parent()
    source, target = pass_fd if pass_fd is not None else (-1, -1)
    placeholder = None
    if pass_fd is not None:
        try:
            os.fstat(target)
        except OSError:  # subprocess marks pass_fds inheritable before preexec: the number must exist
            placeholder = os.dup2(source, target, inheritable=False)

    def preexec() -> None:
        die()
        if source != target:
            os.dup2(source, target)

    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            close_fds=True,
            pass_fds=(target,) if pass_fd is not None else (),
            umask=RUNTIME_UMASK,
            process_group=0,
            preexec_fn=preexec,
        )
    finally:
        if placeholder is not None:
            os.close(placeholder)
