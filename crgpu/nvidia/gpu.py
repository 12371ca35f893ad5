"""NVIDIA driver version and GPU inventory, read without CUDA.

Every host file is read through `host_path`, so tests point CRGPU_HOST_ROOT at fixture trees.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from crgpu.host.process import query_stdout
from crgpu.host.root import host_path, read_host_text

NVIDIA_SMI_TIMEOUT_S = 5.0
T = TypeVar("T")
_VERSION = re.compile(r"\b(\d{3,4}\.\d{1,3}(?:\.\d{1,3})?)\b")


@dataclass(frozen=True)
class DriverVersion:
    version: str
    source: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


@dataclass(frozen=True)
class Gpu:
    name: str
    uuid: str
    memory_mib: int
    # The N of /dev/nvidiaN: how a container given device nodes names its GPUs.
    minor: int | None = None


@dataclass(frozen=True)
class GpuUse:
    """What one process holds on the GPUs, as NVML (or nvidia-smi) reports it."""

    uuids: tuple[str, ...]
    bytes: int
    per_gpu: tuple[int, ...] = ()  # bytes on each of `uuids`, where known

    def on(self) -> dict[str, int]:
        """Bytes per GPU; where the split is unknown, all of them on each (the safe side)."""
        if len(self.per_gpu) == len(self.uuids):
            return dict(zip(self.uuids, self.per_gpu, strict=True))
        return dict.fromkeys(self.uuids, self.bytes)


def nvml_query(query: Callable[[Any], T]) -> T | None:
    """`query(pynvml)` between nvmlInit and nvmlShutdown; None without nvidia-ml-py or a driver."""
    if os.environ.get("CRGPU_HOST_ROOT"):
        return None  # a fixture tree: the real library would answer for the real host
    try:
        import pynvml  # type: ignore[import-untyped, import-not-found, unused-ignore]  # nvidia-ml-py, optional
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            return query(pynvml)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _from_nvml() -> str | None:
    return nvml_query(lambda nvml: _text(nvml.nvmlSystemGetDriverVersion()))


def _nvidia_smi(query: str, what: str = "gpu") -> list[str] | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    out = query_stdout(
        [smi, f"--query-{what}={query}", "--format=csv,noheader,nounits"], NVIDIA_SMI_TIMEOUT_S
    )
    return None if out is None else [line.strip() for line in out.splitlines() if line.strip()]


def driver_version() -> DriverVersion | None:
    """The host's NVIDIA driver version, from the first source that knows it, cheapest first:
    sysfs and procfs (microseconds), then NVML, then nvidia-smi (a process)."""
    sys_version = read_host_text("/sys/module/nvidia/version")
    if sys_version and _VERSION.search(sys_version):
        return DriverVersion(_VERSION.search(sys_version).group(1), "/sys/module/nvidia/version")  # type: ignore[union-attr]
    proc = read_host_text("/proc/driver/nvidia/version")
    if proc:
        for line in proc.splitlines():
            if "NVRM version:" in line:
                match = _VERSION.search(line)
                if match:
                    return DriverVersion(match.group(1), "/proc/driver/nvidia/version")
    if not host_path("/sys/module/nvidia").exists() and not host_path("/proc/driver/nvidia").exists():
        return None  # no NVIDIA kernel module: no driver for NVML or nvidia-smi to report
    nvml = _from_nvml()
    if nvml:
        return DriverVersion(nvml, "nvml")
    rows = _nvidia_smi("driver_version")
    if rows and _VERSION.search(rows[0]):
        return DriverVersion(_VERSION.search(rows[0]).group(1), "nvidia-smi")  # type: ignore[union-attr]
    return None


def _gpus_from_nvml() -> list[Gpu] | None:
    """Every GPU the kernel driver exposes, through NVML (nvidia-ml-py); None when unavailable."""

    def inventory(nvml: Any) -> list[Gpu]:
        found = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            try:
                minor: int | None = int(nvml.nvmlDeviceGetMinorNumber(handle))
            except Exception:  # NVMLError_NotSupported on some platforms
                minor = None
            found.append(
                Gpu(
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    memory_mib=int(nvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)),
                    minor=minor,
                )
            )
        return found

    return nvml_query(inventory)


def _procfs_minors() -> dict[str, int]:
    """GPU UUID -> device minor, from the driver's /proc/driver/nvidia/gpus/*/information."""
    minors: dict[str, int] = {}
    try:
        entries = sorted(host_path("/proc/driver/nvidia/gpus").iterdir())
    except OSError:
        return minors
    for entry in entries:
        fields: dict[str, str] = {}
        try:
            text = (entry / "information").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if fields.get("GPU UUID", "").startswith("GPU-") and fields.get("Device Minor", "").isdigit():
            minors[fields["GPU UUID"]] = int(fields["Device Minor"])
    return minors


def gpus() -> list[Gpu]:
    """Every GPU the kernel driver exposes (CUDA_VISIBLE_DEVICES masks none of them), in NVML's
    order (nvidia-smi's index): NVML first, nvidia-smi when NVML is not there; device minors
    from the driver's procfs where NVML gives none."""
    found = _gpus_from_nvml()
    if found is None:
        found = []
        for row in _nvidia_smi("name,uuid,memory.total") or []:
            parts = [part.strip() for part in row.split(",")]
            if len(parts) >= 3:
                try:
                    memory = int(float(parts[2]))
                except ValueError:
                    memory = 0
                found.append(Gpu(name=parts[0], uuid=parts[1], memory_mib=memory))
    if any(g.minor is None for g in found):
        minors = _procfs_minors()
        found = [g if g.minor is not None else replace(g, minor=minors.get(g.uuid)) for g in found]
    return found


def process_gpu_use(pids: list[int]) -> dict[int, GpuUse]:
    """Which GPUs each of these (host) PIDs uses and how many bytes it holds there: NVML, else
    `nvidia-smi --query-compute-apps`; empty when neither can say."""

    def use(nvml: Any) -> dict[int, GpuUse]:
        rows: list[tuple[int, str, int]] = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                rows.append((int(proc.pid), uuid, int(proc.usedGpuMemory or 0)))
        return _by_process(rows, pids)

    found = nvml_query(use)
    if found is not None:
        return found
    rows = []
    for line in _nvidia_smi("pid,gpu_uuid,used_memory", what="compute-apps") or []:
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit() and parts[2].isdigit():
            rows.append((int(parts[0]), parts[1], int(parts[2]) * 2**20))  # MiB
    return _by_process(rows, pids)


def _by_process(rows: list[tuple[int, str, int]], pids: list[int]) -> dict[int, GpuUse]:
    found: dict[int, GpuUse] = {}
    for pid, uuid, used in rows:
        if pid in pids:
            before = found.get(pid, GpuUse((), 0))
            found[pid] = GpuUse((*before.uuids, uuid), before.bytes + used, (*before.per_gpu, used))
    return found


def gpu_free_memory() -> dict[str, int]:
    """Free bytes per GPU UUID: NVML, else nvidia-smi; empty when neither can say."""

    def free(nvml: Any) -> dict[str, int]:
        out = {}
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            out[_text(nvml.nvmlDeviceGetUUID(handle))] = int(nvml.nvmlDeviceGetMemoryInfo(handle).free)
        return out

    found = nvml_query(free)
    if found is not None:
        return found
    out = {}
    for line in _nvidia_smi("uuid,memory.free") or []:
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1]) * 2**20
    return out


def mig_enabled_gpus() -> set[str]:
    """The UUIDs of the GPUs whose MIG mode is on: NVML, else nvidia-smi; empty when neither says."""

    def mig(nvml: Any) -> set[str]:
        out = set()
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            try:
                current = nvml.nvmlDeviceGetMigMode(handle)[0]
            except Exception:  # NVMLError_NotSupported: a GPU without MIG
                continue
            if current == 1:
                out.add(_text(nvml.nvmlDeviceGetUUID(handle)))
        return out

    found = nvml_query(mig)
    if found is not None:
        return found
    rows = _nvidia_smi("uuid,mig.mode.current") or []
    return {uuid for uuid, _, mode in (row.partition(",") for row in rows) if mode.strip() == "Enabled"}


def persistence_modes() -> list[str]:
    """Each GPU's persistence mode as nvidia-smi says it ("Enabled", "Disabled"); empty when it cannot."""
    rows = _nvidia_smi("persistence_mode") or []
    return [row for row in rows if row in ("Enabled", "Disabled")]
