"""doctor's checks, as small data: what this node has (facts gathered once), and one function per
check that judges one path's need (runc, runsc, CUDA on each) with the command that fixes it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from crgpu.core.hostinfo import criu_version, has_checkpoint_privileges, kernel_release
from crgpu.criu.binary import criu_path, cuda_plugin_path, dirty_tracking, plugin_dirs
from crgpu.host.errors import CrgpuError
from crgpu.host.root import host_path
from crgpu.host.versions import version_tuple
from crgpu.nvidia.gpu import DriverVersion, Gpu, driver_version, gpus
from crgpu.runtimes.base import RuntimeBinary
from crgpu.runtimes.capabilities import run_capture

Status = Literal["ok", "warn", "fail", "skip"]


CHECK_TIMEOUT_S = 5.0


MIN_DRIVER = 570


NEW_KERNEL = (6, 13)


CRIU_FOR_NEW_KERNEL = (4, 1)


@dataclass
class Check:
    id: str
    title: str
    group: str
    status: Status
    detail: str
    fix: str | None = None


RUNC_NEEDS = ["runc.binary", "criu.binary", "criu.kernel", "criu.netlock", "host.privileges"]
PATHS: dict[str, tuple[str, list[str]]] = {
    "runc": ("runc", RUNC_NEEDS),
    "runsc": ("runsc", ["runsc.binary", "host.privileges"]),
    "cuda_runc": (
        "CUDA on runc (CRIU plugin)",
        [*RUNC_NEEDS, "nvidia.driver", "cuda_checkpoint.binary", "criu.cuda_plugin"],
    ),
    "cuda_runc_driver_api": (
        "CUDA on runc (driver API)",
        [*RUNC_NEEDS, "nvidia.driver", "cuda.bindings", "cuda.bindings_driver"],
    ),
    "cuda_runsc": (
        "CUDA on runsc",
        ["runsc.binary", "host.privileges", "nvidia.driver", "runsc.nvproxy_driver", "runsc.cuda_checkpoint"],
    ),
}


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


def _capture(argv: list[str]) -> str:
    try:
        return run_capture(argv, timeout=CHECK_TIMEOUT_S)
    except CrgpuError as exc:
        return exc.message


def _binary_check(check_id: str, name: str, binary: RuntimeBinary | None, error: CrgpuError | None) -> Check:
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


def check_criu_binary(facts: Facts) -> Check:
    if not facts.criu_path:
        return Check(
            "criu.binary",
            "CRIU",
            "runc and CRIU",
            "fail",
            "criu not found on PATH",
            fix="apt-get install criu (Debian 12: from trixie, for CRIU 4.1+)",
        )
    version = criu_version() or "unknown"
    facts.criu_version = version_tuple(version)
    if os.geteuid() != 0:
        return Check(
            "criu.binary",
            "CRIU",
            "runc and CRIU",
            "warn",
            f"{facts.criu_path}, version {version}; `criu check` needs root and was not run",
            fix="run crgpu doctor as root",
        )
    verdict = _capture([facts.criu_path, "check"])
    if "Looks good" in verdict:
        return Check(
            "criu.binary",
            "CRIU",
            "runc and CRIU",
            "ok",
            f"{facts.criu_path}, version {version}; criu check: looks good",
        )
    errors = [line.strip() for line in verdict.splitlines() if "Error" in line or "error" in line]
    return Check(
        "criu.binary",
        "CRIU",
        "runc and CRIU",
        "fail",
        f"{facts.criu_path}, version {version}; criu check: {(errors or verdict.splitlines() or ['failed'])[0]}",
        fix="run `criu check` as root and fix what it reports",
    )


def check_criu_kernel(facts: Facts) -> Check:
    release = kernel_release()
    kernel = version_tuple(release)
    if facts.criu_version is None:
        return Check(
            "criu.kernel", "CRIU vs kernel", "runc and CRIU", "skip", f"kernel {release}; no CRIU to judge"
        )
    criu = ".".join(map(str, facts.criu_version))
    if kernel >= NEW_KERNEL and facts.criu_version < CRIU_FOR_NEW_KERNEL:
        return Check(
            "criu.kernel",
            "CRIU vs kernel",
            "runc and CRIU",
            "fail",
            f"kernel {release} needs CRIU 4.1 or newer; CRIU {criu} fails every dump "
            "(vdso: Unexpected rt vDSO area bounds)",
            fix="apt-get install -t trixie criu (CRIU 4.1+)",
        )
    return Check("criu.kernel", "CRIU vs kernel", "runc and CRIU", "ok", f"kernel {release}, CRIU {criu}")


def check_netlock(_facts: Facts) -> Check:
    for tool in ("iptables-restore", "nft"):
        path = shutil.which(tool)
        if path:
            return Check("criu.netlock", "CRIU network lock", "runc and CRIU", "ok", f"{path}")
    return Check(
        "criu.netlock",
        "CRIU network lock",
        "runc and CRIU",
        "fail",
        "neither iptables-restore nor nft is on PATH: every dump fails",
        fix="apt-get install iptables",
    )


def check_dirty_tracking(facts: Facts) -> Check:
    if not facts.criu_path or os.geteuid() != 0:
        return Check(
            "criu.dirty_tracking", "memory dirty tracking", "runc and CRIU", "skip", "needs CRIU and root"
        )
    ok, said = dirty_tracking(facts.criu_path, _capture)
    if not ok:
        return Check(
            "criu.dirty_tracking",
            "memory dirty tracking",
            "runc and CRIU",
            "warn",
            f"the kernel has no soft-dirty tracking ({said}): pre-dumps (--pre-dump) cannot work here",
            fix="a kernel built with CONFIG_MEM_SOFT_DIRTY",
        )
    return Check("criu.dirty_tracking", "memory dirty tracking", "runc and CRIU", "ok", "pre-dumps possible")


def check_cuda_plugin(facts: Facts) -> Check:
    if not facts.gpu_node:
        return Check("criu.cuda_plugin", "CRIU CUDA plugin", "GPU", "skip", "no NVIDIA driver")
    plugin = cuda_plugin_path()
    if plugin is not None:
        return Check("criu.cuda_plugin", "CRIU CUDA plugin", "GPU", "ok", str(plugin))
    return Check(
        "criu.cuda_plugin",
        "CRIU CUDA plugin",
        "GPU",
        "fail",
        "cuda_plugin.so is in none of " + ", ".join(str(d) for d in plugin_dirs()),
        fix="install CRIU 4.x built with its CUDA plugin into /usr/lib/criu (Debian's criu has none)",
    )


# cuda-bindings 13.x is documented for driver 580.65.06 and newer; 12.x for older drivers.
BINDINGS_13_MIN_DRIVER = (580, 65)


def bindings_version() -> str | None:
    """The installed cuda-bindings' version, when its driver module imports; None when it does not."""
    try:
        from importlib.metadata import version

        import cuda.bindings.driver  # type: ignore[import-untyped, import-not-found, unused-ignore]  # noqa: F401
    except Exception:
        return None
    try:
        return version("cuda-bindings")
    except Exception:
        return "unknown"


def check_bindings(facts: Facts) -> Check:
    if not facts.gpu_node:
        return Check("cuda.bindings", "cuda-bindings", "GPU", "skip", "no NVIDIA driver")
    found = bindings_version()
    if found is None:
        return Check(
            "cuda.bindings",
            "cuda-bindings",
            "GPU",
            "fail",
            "NVIDIA's cuda-bindings does not import: --cuda driver-api cannot reach the checkpoint API",
            fix="pip install 'crgpu[cuda]' into crgpu's environment",
        )
    return Check("cuda.bindings", "cuda-bindings", "GPU", "ok", f"cuda-bindings {found}")


def check_bindings_driver(facts: Facts) -> Check:
    found = bindings_version() if facts.gpu_node else None
    if facts.driver is None or found is None:
        return Check("cuda.bindings_driver", "bindings and driver", "GPU", "skip", "no driver or no bindings")
    major = version_tuple(found)[0]
    driver = version_tuple(facts.driver.version)
    if major >= 13 and driver[:2] < BINDINGS_13_MIN_DRIVER:
        return Check(
            "cuda.bindings_driver",
            "bindings and driver",
            "GPU",
            "fail",
            f"cuda-bindings {found} is documented for driver 580.65.06 or newer; this node has {facts.driver.version}",
            fix="pip install 'cuda-bindings>=12.8,<13' for this driver, or upgrade the driver",
        )
    return Check(
        "cuda.bindings_driver",
        "bindings and driver",
        "GPU",
        "ok",
        f"cuda-bindings {found} with driver {facts.driver.version}",
    )


def check_persistence(facts: Facts) -> Check:
    """NVIDIA: restoring a process needs persistence mode (or cuInit already called)."""
    if not facts.gpu_node:
        return Check("nvidia.persistence", "persistence mode", "GPU", "skip", "no NVIDIA driver")
    try:
        out = _capture(["nvidia-smi", "--query-gpu=persistence_mode", "--format=csv,noheader"])
    except CrgpuError:
        out = ""
    modes = [line.strip() for line in out.splitlines() if line.strip() in ("Enabled", "Disabled")]
    if not modes:
        return Check("nvidia.persistence", "persistence mode", "GPU", "skip", "nvidia-smi did not say")
    if "Disabled" in modes:
        return Check(
            "nvidia.persistence",
            "persistence mode",
            "GPU",
            "warn",
            f"persistence mode is off on {modes.count('Disabled')} of {len(modes)} GPU(s): a GPU restore can "
            "fail with 'operation not permitted'",
            fix="nvidia-smi -pm 1 (or run nvidia-persistenced)",
        )
    return Check("nvidia.persistence", "persistence mode", "GPU", "ok", f"on for {len(modes)} GPU(s)")


def check_driver(facts: Facts) -> Check:
    if facts.driver is None:
        return Check(
            "nvidia.driver",
            "NVIDIA driver",
            "GPU",
            "skip",
            "no NVIDIA driver on this node: GPU paths not judged",
        )
    drv = facts.driver
    if drv.major < MIN_DRIVER:
        return Check(
            "nvidia.driver",
            "NVIDIA driver",
            "GPU",
            "fail",
            f"driver {drv.version} (from {drv.source}) is below {MIN_DRIVER}: cuda-checkpoint's "
            "lock/checkpoint/restore actions and CRIU's CUDA plugin need 570 or newer",
            fix=f"install NVIDIA driver {MIN_DRIVER} or newer",
        )
    extra = "; restore onto other GPUs of the same chip (--device-map) possible" if drv.major >= 580 else ""
    return Check("nvidia.driver", "NVIDIA driver", "GPU", "ok", f"{drv.version} (from {drv.source}){extra}")


def check_gpus(facts: Facts) -> Check:
    if not facts.gpu_node:
        return Check("nvidia.gpus", "GPUs", "GPU", "skip", "no NVIDIA driver")
    if not facts.gpus:
        return Check(
            "nvidia.gpus",
            "GPUs",
            "GPU",
            "warn",
            "nvidia-smi listed no GPUs",
            fix="check `nvidia-smi` by hand",
        )
    listed = "; ".join(f"{g.name} {g.uuid} {g.memory_mib} MiB" for g in facts.gpus)
    return Check("nvidia.gpus", "GPUs", "GPU", "ok", listed)


def check_cuda_checkpoint(facts: Facts) -> Check:
    if not facts.gpu_node:
        return Check("cuda_checkpoint.binary", "cuda-checkpoint", "GPU", "skip", "no NVIDIA driver")
    path = shutil.which("cuda-checkpoint")
    if not path:
        return Check(
            "cuda_checkpoint.binary",
            "cuda-checkpoint",
            "GPU",
            "fail",
            "cuda-checkpoint is not on PATH",
            fix="install NVIDIA's cuda-checkpoint binary onto PATH (e.g. /usr/local/bin)",
        )
    usage = _capture([path, "-h"]) + _capture([path, "--help"])
    if "--action" not in usage:
        return Check(
            "cuda_checkpoint.binary",
            "cuda-checkpoint",
            "GPU",
            "fail",
            f"{path} has no --action (toggle-only, from before driver r555): CRIU's plugin needs it",
            fix="install the cuda-checkpoint matching driver 570+",
        )
    extra = "; --device-map supported" if "--device-map" in usage else ""
    return Check(
        "cuda_checkpoint.binary", "cuda-checkpoint", "GPU", "ok", f"{path}, --action supported{extra}"
    )


def check_nvproxy_driver(facts: Facts) -> Check:
    if not facts.gpu_node or facts.runsc is None or facts.driver is None:
        return Check(
            "runsc.nvproxy_driver",
            "driver supported by runsc",
            "GPU",
            "skip",
            "needs runsc and an NVIDIA driver",
        )
    if "nvproxy" not in facts.runsc.help_texts.get("help", ""):
        return Check(
            "runsc.nvproxy_driver",
            "driver supported by runsc",
            "GPU",
            "warn",
            f"runsc {facts.runsc.version} cannot list its supported drivers",
        )
    supported = _capture([str(facts.runsc.path), "nvproxy", "list-supported-drivers"]).split()
    if facts.driver.version in supported:
        return Check(
            "runsc.nvproxy_driver",
            "driver supported by runsc",
            "GPU",
            "ok",
            f"{facts.driver.version} is supported by runsc {facts.runsc.version}",
        )
    return Check(
        "runsc.nvproxy_driver",
        "driver supported by runsc",
        "GPU",
        "fail",
        f"driver {facts.driver.version} is not among the {len(supported)} drivers runsc "
        f"{facts.runsc.version} supports (newest: {', '.join(supported[-3:]) or 'none'})",
        fix="install a supported driver or a newer runsc (or run the sandbox with --nvproxy-allow-unsupported-driver)",
    )


def check_runsc_cuda(facts: Facts) -> Check:
    if not facts.gpu_node or facts.runsc is None:
        return Check(
            "runsc.cuda_checkpoint", "runsc GPU checkpoint", "GPU", "skip", "needs runsc and an NVIDIA driver"
        )
    if "cuda-checkpoint-path" in facts.runsc.checkpoint_flags:
        return Check(
            "runsc.cuda_checkpoint", "runsc GPU checkpoint", "GPU", "ok", "--cuda-checkpoint-path supported"
        )
    return Check(
        "runsc.cuda_checkpoint",
        "runsc GPU checkpoint",
        "GPU",
        "fail",
        f"runsc {facts.runsc.version} has no --cuda-checkpoint-path: it cannot checkpoint GPU state",
        fix="install runsc release-20260608 or newer",
    )


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
    lambda f: _binary_check("runc.binary", "runc", f.runc, f.runc_error),
    check_criu_binary,
    check_criu_kernel,
    check_netlock,
    check_dirty_tracking,
    lambda f: _binary_check("runsc.binary", "runsc", f.runsc, f.runsc_error),
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
