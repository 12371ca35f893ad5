"""The doctor's checks of the GPU paths: the driver and its GPUs, cuda-checkpoint and CRIU's CUDA plugin, the cuda-bindings and the driver they reach, persistence mode, runsc's nvproxy."""

from __future__ import annotations

import shutil

from crgpu.criu.binary import cuda_plugin_path, plugin_dirs
from crgpu.doctor.facts import Check, Facts, capture
from crgpu.nvidia.bindings_line import MIN_DRIVER_API, bindings_mismatch, install_hint, installed_bindings
from crgpu.nvidia.gpu import persistence_modes


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


def check_bindings(facts: Facts) -> Check:
    if not facts.gpu_node:
        return Check("cuda.bindings", "cuda-bindings", "GPU", "skip", "no NVIDIA driver")
    found = installed_bindings()
    if found is None:
        return Check(
            "cuda.bindings",
            "cuda-bindings",
            "GPU",
            "fail",
            "NVIDIA's cuda-bindings does not import: --cuda driver-api cannot reach the checkpoint API",
            fix=install_hint(facts.driver.version if facts.driver else None),
        )
    return Check("cuda.bindings", "cuda-bindings", "GPU", "ok", f"cuda-bindings {found}")


def check_bindings_driver(facts: Facts) -> Check:
    found = installed_bindings() if facts.gpu_node else None
    if facts.driver is None or found is None:
        return Check("cuda.bindings_driver", "bindings and driver", "GPU", "skip", "no driver or no bindings")
    mismatch = bindings_mismatch(found, facts.driver.version)
    if mismatch:
        return Check(
            "cuda.bindings_driver",
            "bindings and driver",
            "GPU",
            "fail",
            mismatch,
            fix=install_hint(facts.driver.version) + ", or upgrade the driver",
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
    modes = persistence_modes()
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
    if drv.major < MIN_DRIVER_API:
        return Check(
            "nvidia.driver",
            "NVIDIA driver",
            "GPU",
            "fail",
            f"driver {drv.version} (from {drv.source}) is below {MIN_DRIVER_API}: cuda-checkpoint's "
            "lock/checkpoint/restore actions and CRIU's CUDA plugin need 570 or newer",
            fix=f"install NVIDIA driver {MIN_DRIVER_API} or newer",
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
    usage = capture([path, "-h"]) + capture([path, "--help"])
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
    supported = capture([str(facts.runsc.path), "nvproxy", "list-supported-drivers"]).split()
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
