"""Is a container a GPU container, and what says so: the ways operators actually give containers
NVIDIA GPUs, counted as gVisor's runsc/specutils/nvidia.go counts them, read from the OCI spec.

- hook: the NVIDIA Container Toolkit's legacy prestart hook (`nvidia-container-runtime-hook`,
  what `docker run --gpus` / `--runtime=nvidia` writes);
- cdi: CDI device injection (`nvidia-cdi-hook` or `nvidia-ctk hook` hooks, `cdi.k8s.io/*`
  annotations or `NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=...`);
- env: `NVIDIA_VISIBLE_DEVICES` set and not `void` (`none` still means driver access);
- device: `/dev/nvidiactl`, `/dev/nvidiaN` or `/dev/nvidia-uvm` device nodes;
- annotation: gVisor's nvproxy annotations or `nvidia.com/gpu*` annotations;
- nvproxy-flag: a runsc sandbox started with `--nvproxy`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

KINDS = ("hook", "cdi", "env", "device", "annotation", "nvproxy-flag")
_DEVICE = re.compile(r"/dev/nvidia(?:ctl|\d+|-uvm)")
_ANNOTATION_PREFIXES = ("dev.gvisor.internal.nvproxy", "nvidia.com/gpu")
_NVPROXY_ANNOTATION = "dev.gvisor.spec.nvproxy"
_TRUE = ("1", "t", "T", "TRUE", "true", "True")


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


def spec_evidence(spec: dict[str, Any]) -> set[str]:
    """The kinds of GPU evidence an OCI spec (config.json) holds."""
    found: set[str] = set()
    for path, args in _hooks(spec):
        name = path.rsplit("/", 1)[-1]
        first = args[0].rsplit("/", 1)[-1] if args else ""
        if "nvidia-container-runtime-hook" in (name, first) or "nvidia-container-toolkit" in (name, first):
            found.add("hook")
        if "nvidia-cdi-hook" in (name, first) or ("nvidia-ctk" in (name, first) and "hook" in args[1:2]):
            found.add("cdi")
    annotations = spec_annotations(spec)
    if any(k.startswith("cdi.k8s.io/") and "nvidia.com/" in v for k, v in annotations.items()):
        found.add("cdi")
    if annotations.get(_NVPROXY_ANNOTATION) in _TRUE or any(
        k.startswith(_ANNOTATION_PREFIXES) for k in annotations
    ):
        found.add("annotation")
    visible = spec_env(spec).get("NVIDIA_VISIBLE_DEVICES")
    if visible and visible != "void":
        found.add("cdi" if visible.startswith("nvidia.com/") else "env")
    if any(_DEVICE.fullmatch(path) for path in spec_devices(spec)):
        found.add("device")
    return found


def ordered(kinds: Iterable[str]) -> list[str]:
    present = set(kinds)
    return [kind for kind in KINDS if kind in present]
