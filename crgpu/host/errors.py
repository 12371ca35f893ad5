"""One exception hierarchy: every error carries its exit code and a hint for the operator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """The documented exit codes (README, `crgpu --help`)."""

    OK = 0
    RUNTIME_FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    PRECONDITION = 4
    IMAGE_PATH = 5
    BUSY = 6
    INTERRUPTED = 130


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.RUNTIME_FAILED: "the runtime or CRIU failed",
    ExitCode.USAGE: "bad usage or invalid option values",
    ExitCode.NOT_FOUND: "container, runtime binary or image path not found",
    ExitCode.PRECONDITION: "precondition not met (not root, no NVIDIA driver, option unsupported by "
    "this runtime, container not running, incompatible image)",
    ExitCode.IMAGE_PATH: "image path problem (exists, not empty, not writable)",
    ExitCode.BUSY: "another crgpu holds the container",
    ExitCode.INTERRUPTED: "interrupted by a signal",
}


class CrgpuError(Exception):
    """A failure to show the operator: one line, a hint, optional detail lines."""

    exit_code: ExitCode = ExitCode.RUNTIME_FAILED

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        detail: list[str] | None = None,
        exit_code: ExitCode | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail or []
        if exit_code is not None:
            self.exit_code = exit_code
        # What was known when it failed (verb, container, GPU verdict): the keys of a run's result
        # document that its error document fills (see error_context).
        self.context: dict[str, Any] = {}


class UsageError(CrgpuError):
    exit_code = ExitCode.USAGE


class NotFoundError(CrgpuError):
    exit_code = ExitCode.NOT_FOUND


class PreconditionError(CrgpuError):
    exit_code = ExitCode.PRECONDITION


class ImagePathError(CrgpuError):
    exit_code = ExitCode.IMAGE_PATH


class BusyError(CrgpuError):
    exit_code = ExitCode.BUSY


class RuntimeFailed(CrgpuError):
    exit_code = ExitCode.RUNTIME_FAILED


class Interrupted(CrgpuError):
    exit_code = ExitCode.INTERRUPTED


@contextmanager
def error_context(**known: Any) -> Iterator[None]:
    """Errors raised inside carry what is known here, unless an inner context said it first."""
    try:
        yield
    except CrgpuError as exc:
        for key, value in known.items():
            exc.context.setdefault(key, value)
        raise
