"""The driver's checkpoint API as crgpu uses it: the process states, the error, and the driver protocol that the bindings and the helper process both implement."""

from __future__ import annotations

from typing import Protocol

from crgpu.host.errors import ExitCode, PreconditionError

# CUprocessState: 0-3 in every cuda-bindings, 4 and 5 from 13.x (a checkpoint or restore under way).
STATES = ("running", "locked", "checkpointed", "failed", "checkpointing", "restoring")
DEFAULT_LOCK_TIMEOUT_MS = 10_000


class CudaError(PreconditionError):
    """A CUDA driver call failed, or the driver cannot be reached."""

    exit_code = ExitCode.RUNTIME_FAILED


class CudaDriver(Protocol):
    def state(self, pid: int) -> str: ...

    def lock(self, pid: int, timeout_ms: int) -> None: ...

    def checkpoint(self, pid: int) -> None: ...

    def restore(self, pid: int, device_map: dict[str, str] | None = None) -> None: ...

    def unlock(self, pid: int) -> None: ...
