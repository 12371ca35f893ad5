"""What a driver-API image's restore needs of this node, checked before the runtime runs: once runc
has restored the container, its CUDA processes wait in the checkpointed state for crgpu, and a
crgpu that then cannot reach the driver, cannot map the GPUs or runs the GPU out of memory leaves
them so (an out-of-memory restore loses their GPU state for good: cuda-checkpoint #44)."""

from __future__ import annotations

from typing import Any

from crgpu.host.errors import PreconditionError
from crgpu.host.versions import version_tuple
from crgpu.nvidia.bindings_line import (
    BINDINGS_13_MIN_DRIVER,
    MIN_DRIVER_API,
    bindings_mismatch,
    install_hint,
    installed_bindings,
)
from crgpu.nvidia.gpu import driver_version, gpu_free_memory


def check_driver_api_restore(processes: list[dict[str, Any]], gpu_map: dict[str, str] | None) -> None:
    """Refuse (PreconditionError) what would leave the restored processes checkpointed."""
    driver = driver_version()
    if driver is None or driver.major < MIN_DRIVER_API:
        raise PreconditionError(
            "the image's GPU state is put back through the driver's checkpoint API, which "
            + (
                "this node lacks: no NVIDIA driver"
                if driver is None
                else f"driver {driver.version} lacks (570+)"
            ),
            hint="restore it on a node with NVIDIA driver 570 or newer",
        )
    bindings = installed_bindings()
    if bindings is None:
        raise PreconditionError(
            "the image's GPU state is put back through the driver API, and NVIDIA's cuda-bindings does "
            "not import here",
            hint=install_hint(driver.version),
        )
    mismatch = bindings_mismatch(bindings, driver.version)
    if mismatch:
        raise PreconditionError(mismatch, hint=install_hint(driver.version))
    moving = {old: new for old, new in (gpu_map or {}).items() if old != new}
    if moving:
        old, new = next(iter(moving.items()))
        driver_ok = version_tuple(driver.version)[:2] >= BINDINGS_13_MIN_DRIVER
        bindings_ok = bindings == "unknown" or version_tuple(bindings)[0] >= 13
        if not (driver_ok and bindings_ok):
            raise PreconditionError(
                f"the restore moves GPU state onto other GPUs ({old} -> {new}), which needs driver "
                f"580.65.06+ and cuda-bindings 13.x; this node has driver {driver.version} and "
                f"cuda-bindings {bindings}",
                hint=f"give the container the GPUs it was checkpointed on ({old}), or upgrade "
                + ("the driver" if not driver_ok else "to crgpu[cuda13]"),
            )
    _check_free_memory(processes, gpu_map or {})


def _check_free_memory(processes: list[dict[str, Any]], gpu_map: dict[str, str]) -> None:
    need: dict[str, int] = {}
    for process in processes:
        for uuid, held in _held(process).items():
            target = gpu_map.get(uuid, uuid)
            need[target] = need.get(target, 0) + held
    if not need:
        return
    free = gpu_free_memory()
    gib = 2**30
    for target, count in need.items():
        if target in free and count > free[target]:
            raise PreconditionError(
                f"GPU {target} has {free[target] / gib:.1f} GiB free and the restored processes put "
                f"{count / gib:.1f} GiB there: an out-of-memory restore loses their GPU state for good",
                hint="free GPU memory there first, or give the container another GPU of the model",
            )


def _held(process: dict[str, Any]) -> dict[str, int]:
    """Bytes per GPU a process held at the checkpoint, as crgpu.json records them."""
    per_gpu = process.get("gpu_memory")
    if isinstance(per_gpu, dict):
        return {str(k): int(v) for k, v in per_gpu.items() if isinstance(v, int)}
    gpus, total = process.get("gpus") or [], process.get("gpu_bytes")
    return dict.fromkeys(gpus, total) if isinstance(total, int) else {}
