"""What a checkpoint records about the host it was made on, and reads back at restore."""

from __future__ import annotations

import os
import platform
import re
import shutil

from crgpu.errors import CrgpuError
from crgpu.gpu import driver_version, gpus, host_path
from crgpu.image import GpuRecord, HostRecord
from crgpu.runtimes.base import run_capture

CRIU_VERSION_TIMEOUT_S = 5.0


def kernel_release() -> str:
    try:
        return host_path("/proc/sys/kernel/osrelease").read_text().strip()
    except OSError:
        return os.uname().release


def criu_version() -> str | None:
    criu = shutil.which("criu")
    if not criu:
        return None
    try:
        text = run_capture([criu, "--version"], timeout=CRIU_VERSION_TIMEOUT_S)
    except CrgpuError:
        return None
    match = re.search(r"Version:\s*(\S+)", text)
    return match.group(1) if match else None


def host_record(with_criu: bool) -> HostRecord:
    driver = driver_version()
    return HostRecord(
        kernel=kernel_release(),
        arch=platform.machine(),
        criu_version=criu_version() if with_criu else None,
        driver_version=driver.version if driver else None,
        gpus=[GpuRecord(name=g.name, uuid=g.uuid, memory_mib=g.memory_mib) for g in gpus()] if driver else [],
    )
