"""Is a container a GPU container, and what says so. The verdict is gVisor's
(runsc/specutils/nvidia.go, GPUFunctionalityRequested), read from the OCI spec:

- a GPU device node (`/dev/nvidiactl`, `/dev/nvidiaN`, `/dev/nvidia-uvm`; a device plugin's or
  CDI's injection), or
- the NVIDIA Container Toolkit's hook (`nvidia-container-runtime-hook` prestart: `docker run
  --gpus`, `--runtime=nvidia`; or CDI's `nvidia-cdi-hook`/`nvidia-ctk hook`) together with
  `NVIDIA_VISIBLE_DEVICES` naming GPUs (set, not `void`; `none` still means driver access).

Either half of the second rule alone is common on CPU containers and says nothing: CUDA base
images set `NVIDIA_VISIBLE_DEVICES=all`, and where nvidia is the default runtime the legacy hook is
in every container. Such a container is a CPU container, with a note naming why. The evidence
(every kind found, counted or not) is recorded beside the verdict:

- hook, cdi (CDI's hooks or a `cdi.k8s.io/` request), env, device;
- annotation: gVisor's `dev.gvisor.internal.nvproxy`; nvproxy-flag: a sandbox run with
  `--nvproxy`. Both turn gVisor's GPU proxy on; neither gives the container a GPU.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

KINDS = ("hook", "cdi", "env", "device", "annotation", "nvproxy-flag")
_DEVICE = re.compile(r"/dev/nvidia(?:ctl|\d+|-uvm)")
_NVPROXY_ANNOTATION = "dev.gvisor.internal.nvproxy"
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_VISIBLE = "NVIDIA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class GpuVerdict:
    gpu: bool
    evidence: tuple[str, ...]  # every kind found, in KINDS order
    # Why evidence that was found does not make it a GPU container (None when it does, or none).
    note: str | None = None


def _hooks(spec: dict[str, Any]) -> Iterable[tuple[str, list[str]]]:
    hooks = spec.get("hooks")
    if not isinstance(hooks, dict):
        return
    for entries in hooks.values():
        for hook in entries if isinstance(entries, list) else []:
            if isinstance(hook, dict):
                args = hook.get("args")
                yield str(hook.get("path", "")), [str(a) for a in args] if isinstance(args, list) else []


def spec_env(spec: dict[str, Any]) -> dict[str, str]:
    process = spec.get("process")
    env = process.get("env") if isinstance(process, dict) else None
    pairs = (item.partition("=") for item in env if isinstance(item, str)) if isinstance(env, list) else ()
    return {key: value for key, _, value in pairs}


def spec_annotations(spec: dict[str, Any]) -> dict[str, str]:
    annotations = spec.get("annotations")
    if not isinstance(annotations, dict):
        return {}
    return {str(k): str(v) for k, v in annotations.items()}


def spec_devices(spec: dict[str, Any]) -> list[str]:
    linux = spec.get("linux")
    devices = linux.get("devices") if isinstance(linux, dict) else None
    if not isinstance(devices, list):
        return []
    return [str(d.get("path", "")) for d in devices if isinstance(d, dict)]


def _visible_devices(spec: dict[str, Any], cdi: bool) -> str:
    """NVIDIA_VISIBLE_DEVICES as gVisor reads it. With CDI's hook the toolkit appends a last
    `NVIDIA_VISIBLE_DEVICES=void` of its own, which does not count: the value before it does."""
    process = spec.get("process")
    env = process.get("env") if isinstance(process, dict) else None
    prefix = _VISIBLE + "="
    values = (
        [i[len(prefix) :] for i in env if isinstance(i, str) and i.startswith(prefix)]
        if isinstance(env, list)
        else []
    )
    if not values:
        return ""
    if cdi and len(values) > 1 and values[-1] == "void":
        return values[-2]
    return values[-1]  # as gVisor's ResolveEnvs: the last one wins


def _hook_kinds(spec: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for path, args in _hooks(spec):
        name = path.rsplit("/", 1)[-1]
        first = args[0].rsplit("/", 1)[-1] if args else ""
        if "nvidia-container-runtime-hook" in (name, first) or "nvidia-container-toolkit" in (name, first):
            found.add("hook")
        if "nvidia-cdi-hook" in (name, first) or ("nvidia-ctk" in (name, first) and "hook" in args[1:2]):
            found.add("cdi")
    return found


def gpu_verdict(spec: dict[str, Any], extra: Iterable[str] = ()) -> GpuVerdict:
    """gVisor's verdict on an OCI spec (config.json), with the evidence found; `extra` adds what
    the spec cannot show (runc's state's devices, a runsc sandbox's --nvproxy)."""
    hooks = _hook_kinds(spec)
    found = hooks | set(extra)
    hooked = bool(hooks)
    annotations = spec_annotations(spec)
    if any(k.startswith("cdi.k8s.io/") and "nvidia.com/" in v for k, v in annotations.items()):
        found.add("cdi")
    if annotations.get(_NVPROXY_ANNOTATION) in _TRUE:
        found.add("annotation")
    visible = _visible_devices(spec, cdi="cdi" in hooks)
    if visible and visible != "void":
        found.add("env")
    if any(_DEVICE.fullmatch(path) for path in spec_devices(spec)):
        found.add("device")
    evidence = tuple(kind for kind in KINDS if kind in found)
    if "device" in found or (hooked and "env" in found):
        return GpuVerdict(True, evidence)
    if not found:
        return GpuVerdict(False, evidence)
    return GpuVerdict(False, evidence, _cpu_note(found, hooked))


def _cpu_note(found: set[str], hooked: bool) -> str:
    if hooked:
        why = (
            f"the NVIDIA toolkit's hook is there but {_VISIBLE} names no GPU (where nvidia is the "
            "default runtime the hook is in every container)"
        )
    elif "env" in found:
        why = (
            f"{_VISIBLE} is set but no NVIDIA device node or toolkit hook gives it a GPU (CUDA images "
            "set the variable)"
        )
    elif "cdi" in found:
        why = "a CDI annotation asks for NVIDIA devices but the spec has no NVIDIA device node"
    else:
        why = "gVisor's GPU proxy is on for it but its spec gives it no GPU"
    return f"taken for a CPU container: {why}; no NVIDIA device node, or the hook together with {_VISIBLE}"
