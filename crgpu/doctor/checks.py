"""doctor's checks, as small data: what this node has (facts gathered once), and one function per
check that judges one path's need (runc, runsc, CUDA on each) with the command that fixes it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from crgpu.core.hostinfo import has_checkpoint_privileges
from crgpu.doctor.criu_checks import check_criu_binary, check_criu_kernel, check_dirty_tracking, check_netlock
from crgpu.doctor.facts import Check, Facts, binary_check
from crgpu.doctor.gpu_checks import (
    check_bindings,
    check_bindings_driver,
    check_cuda_checkpoint,
    check_cuda_plugin,
    check_driver,
    check_gpus,
    check_nvproxy_driver,
    check_persistence,
    check_runsc_cuda,
)
from crgpu.host.root import host_path

RUNC_NEEDS = ["runc.binary", "criu.binary", "criu.kernel", "criu.netlock", "host.privileges"]
PATHS: dict[str, tuple[str, list[str]]] = {
    "runc": ("runc", RUNC_NEEDS),
    "runsc": ("runsc", ["runsc.binary", "host.privileges"]),
    "cuda_runc": (
        "CUDA on runc (CRIU plugin)",
        [*RUNC_NEEDS, "nvidia.driver", "cuda_checkpoint.binary", "criu.cuda_plugin", "nvidia.persistence"],
    ),
    "cuda_runc_driver_api": (
        "CUDA on runc (driver API)",
        [*RUNC_NEEDS, "nvidia.driver", "cuda.bindings", "cuda.bindings_driver"],
    ),
    # CRIU's plugin restores through cuda-checkpoint, a process of its own that never calls cuInit:
    # the driver then needs persistence mode ("operation not permitted" otherwise, cuda-checkpoint
    # #25). crgpu's driver-API helper calls cuInit, so there it is a warning only (see WARN_FAILS).
    "cuda_runsc": (
        "CUDA on runsc",
        ["runsc.binary", "host.privileges", "nvidia.driver", "runsc.nvproxy_driver", "runsc.cuda_checkpoint"],
    ),
}


# Checks whose warning is a failure for one path (the plugin's restore needs persistence mode).
WARN_FAILS: dict[str, set[str]] = {"cuda_runc": {"nvidia.persistence"}}


def check_privileges(_facts: Facts) -> Check:
    if os.geteuid() == 0:
        return Check("host.privileges", "privileges", "host", "ok", "running as root")
    if has_checkpoint_privileges():
        return Check(
            "host.privileges", "privileges", "host", "ok", "CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE"
        )
    return Check(
        "host.privileges",
        "privileges",
        "host",
        "fail",
        "not root and without CAP_SYS_ADMIN + CAP_CHECKPOINT_RESTORE",
        fix="run crgpu as root",
    )


def check_cgroup(_facts: Facts) -> Check:
    version = "v2" if host_path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1"
    return Check("host.cgroup", "cgroups", "host", "ok", f"cgroup {version}")


def check_headroom(facts: Facts, image_path: Path, container_memory: int) -> Check:
    probe = image_path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stat = os.statvfs(probe)
    free = stat.f_bavail * stat.f_frsize
    gpu_bytes = sum(g.memory_mib for g in facts.gpus) * 1024 * 1024
    needed = gpu_bytes + container_memory
    detail = (
        f"{free / 2**30:.1f} GiB free at {probe}; needed up to {needed / 2**30:.1f} GiB "
        f"(GPU memory {gpu_bytes / 2**30:.1f} GiB + container memory {container_memory / 2**30:.1f} GiB)"
    )
    if free < needed:
        return Check(
            "image.headroom",
            "image space",
            "image",
            "fail",
            detail,
            fix="free space or choose another --image-path",
        )
    return Check("image.headroom", "image space", "image", "ok", detail)


CHECKS: tuple[Callable[[Facts], Check], ...] = (
    lambda f: binary_check("runc.binary", "runc", f.runc, f.runc_error),
    check_criu_binary,
    check_criu_kernel,
    check_netlock,
    check_dirty_tracking,
    lambda f: binary_check("runsc.binary", "runsc", f.runsc, f.runsc_error),
    check_driver,
    check_gpus,
    check_cuda_checkpoint,
    check_cuda_plugin,
    check_bindings,
    check_bindings_driver,
    check_persistence,
    check_nvproxy_driver,
    check_runsc_cuda,
    check_privileges,
    check_cgroup,
)
