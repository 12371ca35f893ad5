"""What the doctor's checks share: the check record, the facts gathered once, running a probe command, and a runtime binary's check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crgpu.criu.binary import criu_path
from crgpu.host.errors import CrgpuError
from crgpu.nvidia.gpu import DriverVersion, Gpu, driver_version, gpus
from crgpu.runtimes.base import RuntimeBinary
from crgpu.runtimes.capabilities import run_capture

CHECK_TIMEOUT_S = 5.0

Status = Literal["ok", "warn", "fail", "skip"]


@dataclass
class Check:
    id: str
    title: str
    group: str
    status: Status
    detail: str
    fix: str | None = None


class Facts:
    """What the checks share, each gathered once."""

    def __init__(self) -> None:
        self.runc: RuntimeBinary | None = None
        self.runc_error: CrgpuError | None = None
        self.runsc: RuntimeBinary | None = None
        self.runsc_error: CrgpuError | None = None
        self.criu_path = criu_path()
        self.criu_version: tuple[int, ...] | None = None
        self.driver: DriverVersion | None = driver_version()
        self.gpus: list[Gpu] = gpus() if self.driver else []
        try:
            from crgpu.runtimes.runc import discover_runc

            self.runc = discover_runc()
        except CrgpuError as exc:
            self.runc_error = exc
        try:
            from crgpu.runtimes.runsc import discover_runsc

            self.runsc = discover_runsc()
        except CrgpuError as exc:
            self.runsc_error = exc

    @property
    def gpu_node(self) -> bool:
        return self.driver is not None


def capture(argv: list[str]) -> str:
    try:
        return run_capture(argv, timeout=CHECK_TIMEOUT_S)
    except CrgpuError as exc:
        return exc.message


def binary_check(check_id: str, name: str, binary: RuntimeBinary | None, error: CrgpuError | None) -> Check:
    group = "runc and CRIU" if name == "runc" else "gVisor"
    if binary is None:
        return Check(
            check_id,
            f"{name} binary",
            group,
            "skip",
            error.message if error else "not found",
            fix=error.hint if error else f"apt-get install {name}",
        )
    wanted = (
        ["link-remap", "tcp-skip-in-flight"] if name == "runc" else ["cuda-checkpoint-path", "compression"]
    )
    has = [flag for flag in wanted if flag in binary.checkpoint_flags]
    missing = [flag for flag in wanted if flag not in binary.checkpoint_flags]
    detail = f"{binary.path}, version {binary.version}; checkpoint flags: {len(binary.checkpoint_flags)}"
    if has:
        detail += f", has --{', --'.join(has)}"
    if missing:
        detail += f"; lacks --{', --'.join(missing)}" + (
            " (crgpu reaches CRIU through a config file)" if name == "runc" else ""
        )
    return Check(check_id, f"{name} binary", group, "ok", detail)
