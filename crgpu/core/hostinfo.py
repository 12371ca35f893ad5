"""What a checkpoint records about the host it was made on, and reads back at restore."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from crgpu.criu.binary import criu_path
from crgpu.host.errors import CrgpuError
from crgpu.host.root import host_path
from crgpu.image.manifest import GpuRecord, HostRecord
from crgpu.nvidia.gpu import driver_version, gpus
from crgpu.runtimes.capabilities import cached_texts


def kernel_release() -> str:
    try:
        return host_path("/proc/sys/kernel/osrelease").read_text().strip()
    except OSError:
        return os.uname().release


def criu_version() -> str | None:
    criu = criu_path()
    if not criu:
        return None
    try:
        text = cached_texts(Path(criu), {"version": [criu, "--version"]})["version"]
    except (CrgpuError, OSError):
        return None
    match = re.search(r"Version:\s*(\S+)", text)
    return match.group(1) if match else None


def host_record(with_criu: bool, with_gpus: bool = True) -> HostRecord:
    """This host as an image records it. The GPU inventory (NVML or nvidia-smi) only when the
    container is a GPU container: a CPU container's checkpoint spawns nothing for it."""
    driver = driver_version()
    inventory = gpus() if driver and with_gpus else []
    return HostRecord(
        kernel=kernel_release(),
        arch=platform.machine(),
        criu_version=criu_version() if with_criu else None,
        driver_version=driver.version if driver else None,
        gpus=[GpuRecord(name=g.name, uuid=g.uuid, memory_mib=g.memory_mib, minor=g.minor) for g in inventory],
    )


CAP_SYS_ADMIN = 21
CAP_CHECKPOINT_RESTORE = 40


def effective_capabilities() -> int:
    try:
        for line in host_path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def has_checkpoint_privileges() -> bool:
    """Root, or CAP_SYS_ADMIN with CAP_CHECKPOINT_RESTORE: what CRIU and the runtimes need."""
    if os.geteuid() == 0:
        return True
    caps = effective_capabilities()
    return bool(caps >> CAP_SYS_ADMIN & 1 and caps >> CAP_CHECKPOINT_RESTORE & 1)
