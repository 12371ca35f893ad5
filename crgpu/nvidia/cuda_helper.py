"""Every CUDA driver call in a helper process that crgpu can kill.

NVIDIA documents that while one process of a job is locked, a CUDA call on another can hang
(cuda-checkpoint issue #30), and a driver call cannot be interrupted from Python. So crgpu makes
the calls in a forked child, waits for each answer under a deadline, and on a miss kills the child
and reports the call; the next call (the way back: restore, unlock) gets a fresh child. crgpu itself
never initialises CUDA. The child is forked, not exec'd, so it runs the driver factory crgpu (or
a test) chose, and it keeps no descriptor of crgpu's but its two pipes (a container lock among
them would outlive crgpu).
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
import weakref
from collections.abc import Callable
from typing import Any

from crgpu.host.errors import ExitCode
from crgpu.host.process import die_with_parent
from crgpu.nvidia.cuda_api import CudaDriver, CudaError

START_DEADLINE_S = 60.0
STATE_DEADLINE_S = 30.0
# A checkpoint copies the process's GPU memory into host memory (and a restore back). The deadline
# grows with the bytes NVML reported for the process: a floor, plus 4 s per GB (0.25 GB/s, far
# below any PCIe link's rate: a loaded host, a cold page cache). Where the bytes are unknown, the
# whole of an H200 (141 GB) at a few GB/s.
TRANSFER_DEADLINE_S = 600.0
TRANSFER_FLOOR_S = 120.0
TRANSFER_S_PER_GB = 4.0


def transfer_deadline_s(nbytes: int | None) -> float:
    if not nbytes:
        return TRANSFER_DEADLINE_S
    return TRANSFER_FLOOR_S + nbytes / 1e9 * TRANSFER_S_PER_GB


UNLOCK_DEADLINE_S = 60.0
# The driver's own lock timeout, plus this, before crgpu stops waiting for a lock.
LOCK_GRACE_S = 30.0
MAX_REPLY_BYTES = 1 << 20


class HelperDriver:
    """A CudaDriver whose calls run in a killable child (see the module's docstring)."""

    def __init__(self, factory: Callable[[], CudaDriver], start_deadline_s: float = START_DEADLINE_S) -> None:
        self._factory = factory
        self._start_deadline_s = start_deadline_s
        self._child: _Child | None = None
        self._bytes: dict[int, int] = {}  # GPU bytes expected per process: its transfer deadline
        self.killed_a_call = False  # a call missed its deadline or was interrupted: it may still land
        self._start()  # a node without a driver says so now, not at the first call

    def _start(self) -> _Child:
        self._child = _Child(self._factory)
        self._finalizer = weakref.finalize(self, self._child.stop)
        try:
            self._child.answer("start", self._start_deadline_s)
        except CudaError:
            self._stop()
            raise
        return self._child

    def _stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None

    def close(self) -> None:
        self._stop()

    def _call(self, call: str, deadline_s: float | None, *args: Any) -> Any:
        child = self._child or self._start()
        request = child.send(call, args)
        try:
            return child.answer(call, deadline_s, request)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            # Interrupted while the driver works: its late reply must not answer the next call,
            # and a call still running in it must not land later. The next call gets a new helper.
            self._stop()
            self.killed_a_call = True
            raise
        except _ChildLost:
            self._stop()
            raise CudaError(f"the CUDA helper process died during {call}") from None
        except _Missed:
            self._stop()
            self.killed_a_call = True
            raise CudaError(
                f"the CUDA driver's {call} call did not return within {deadline_s:.0f} s: crgpu killed "
                "the helper process that made it",
                hint="a CUDA call can hang while another process of the job is locked (NVIDIA); check "
                "each process with `crgpu cuda state --pid PID`",
            ) from None

    def state(self, pid: int) -> str:
        return str(self._call("state", STATE_DEADLINE_S, pid))

    def lock(self, pid: int, timeout_ms: int) -> None:
        deadline = timeout_ms / 1000 + LOCK_GRACE_S if timeout_ms else None  # 0: as long as it takes
        self._call("lock", deadline, pid, timeout_ms)

    def expect_bytes(self, pid: int, nbytes: int) -> None:
        """The process holds this many GPU bytes: its checkpoint and restore deadlines follow."""
        self._bytes[pid] = nbytes

    def checkpoint(self, pid: int) -> None:
        self._call("checkpoint", transfer_deadline_s(self._bytes.get(pid)), pid)

    def restore(self, pid: int, device_map: dict[str, str] | None = None) -> None:
        self._call("restore", transfer_deadline_s(self._bytes.get(pid)), pid, device_map)

    def unlock(self, pid: int) -> None:
        self._call("unlock", UNLOCK_DEADLINE_S, pid)


class _ChildLost(Exception):
    pass


class _Missed(Exception):
    pass


class _Child:
    """One forked helper and its two pipes."""

    def __init__(self, factory: Callable[[], CudaDriver]) -> None:
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        preexec = die_with_parent()
        pid = os.fork()
        if pid == 0:  # the helper: never returns
            try:
                preexec()
                _serve(factory, requests_r, replies_w)
            finally:
                os._exit(0)
        os.close(requests_r)
        os.close(replies_w)
        self.pid: int | None = pid
        self.requests = requests_w
        self.replies = replies_r
        self.buffer = b""
        self.requests_sent = 0

    def send(self, call: str, args: tuple[Any, ...]) -> int:
        """Send one request; its id, which its reply carries (0 is the start-up's)."""
        self.requests_sent += 1
        request = {"id": self.requests_sent, "call": call, "args": list(args)}
        try:
            os.write(self.requests, json.dumps(request).encode() + b"\n")
        except OSError:
            raise _ChildLost from None
        return self.requests_sent

    def answer(self, call: str, deadline_s: float | None, request: int = 0) -> Any:
        """The reply to request `request`; replies to earlier ones (late, their caller gone) are
        dropped, so an answer is never one call behind."""
        ends = None if deadline_s is None else time.monotonic() + deadline_s
        while True:
            while b"\n" not in self.buffer:
                wait = None if ends is None else max(0.0, ends - time.monotonic())
                ready, _, _ = select.select([self.replies], [], [], wait)
                if not ready:
                    raise _Missed
                chunk = os.read(self.replies, 65536)
                if not chunk:
                    raise _ChildLost
                self.buffer += chunk
                if len(self.buffer) > MAX_REPLY_BYTES:
                    raise _ChildLost
            line, _, self.buffer = self.buffer.partition(b"\n")
            reply = json.loads(line)
            if reply.get("id", 0) == request:
                break
        if "error" in reply:
            code = reply.get("exit_code")
            raise CudaError(
                str(reply["error"]),
                hint=reply.get("hint"),
                detail=list(reply.get("detail") or []),
                exit_code=ExitCode(code) if code in {int(c) for c in ExitCode} else None,
            )
        return reply.get("value")

    def stop(self) -> None:
        if self.pid is None:
            return
        for fd in (self.requests, self.replies):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self.pid = None


def _serve(factory: Callable[[], CudaDriver], requests: int, replies: int) -> None:
    """The helper's loop: one JSON request per line, one JSON reply per line, until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is crgpu's to handle: it puts things back
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in (requests, replies):
            try:
                os.close(fd)
            except OSError:
                pass
    out = os.fdopen(replies, "wb", buffering=0)

    def reply(document: dict[str, Any]) -> None:
        out.write(json.dumps(document).encode() + b"\n")

    try:
        driver = factory()
    except BaseException as exc:
        reply({"id": 0, **_failure(exc)})
        return
    reply({"id": 0, "value": None})
    with os.fdopen(requests, "rb") as incoming:
        for line in incoming:
            request = json.loads(line)
            number = request["id"]
            try:
                value = getattr(driver, request["call"])(*request["args"])
            except BaseException as exc:
                reply({"id": number, **_failure(exc)})
                continue
            reply({"id": number, "value": value})


def _failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, CudaError):
        return {
            "error": exc.message,
            "hint": exc.hint,
            "detail": list(exc.detail),
            "exit_code": int(exc.exit_code),
        }
    return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")}
