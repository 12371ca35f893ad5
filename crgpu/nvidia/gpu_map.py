"""Which GPUs a container was given, and the map that moves a CUDA checkpoint onto other GPUs.

NVIDIA (cuCheckpointProcessRestore, cuda.core.checkpoint): a restore onto other GPUs needs a pair
for every GPU the kernel-mode driver exposes, each pair of the same chip; CUDA_VISIBLE_DEVICES
does not reduce that. Without a map the driver puts the state back on the GPUs it came from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from crgpu.host.errors import PreconditionError
from crgpu.nvidia.evidence import spec_annotations, spec_devices, spec_env

GPU_UUID = re.compile(r"GPU-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DEVICE_NODE = re.compile(r"/dev/nvidia(\d+)")
_CDI_GPU = "nvidia.com/gpu="


class GpuLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def uuid(self) -> str: ...

    @property
    def minor(self) -> int | None: ...


def given_gpus(spec: dict[str, Any], inventory: Sequence[GpuLike]) -> list[str] | None:
    """The UUIDs of the GPUs an OCI spec gives its container, resolved against this host's
    inventory; None when the spec does not say which (the container sees them all).

    Device nodes (what CDI and the hooks leave in the spec the runtime reads) say it best; then
    NVIDIA_VISIBLE_DEVICES (the legacy hook's input: indices, UUIDs, all, none) and CDI names."""
    minors = {int(m.group(1)) for path in spec_devices(spec) if (m := _DEVICE_NODE.fullmatch(path))}
    if minors and inventory and all(g.minor is not None for g in inventory):
        return [g.uuid for g in inventory if g.minor in minors]
    selectors: list[str] = []
    visible = spec_env(spec).get("NVIDIA_VISIBLE_DEVICES")
    if visible:
        selectors += visible.split(",")
    for key, value in spec_annotations(spec).items():
        if key.startswith("cdi.k8s.io/"):
            selectors += [item for item in value.split(",") if item.startswith(_CDI_GPU)]
    if not selectors:
        return None
    chosen: list[str] = []
    for raw in selectors:
        item = raw.strip().removeprefix(_CDI_GPU)
        if item == "all":
            return [g.uuid for g in inventory]
        if item in ("none", "void", ""):
            continue
        if item.isdigit() and int(item) < len(inventory):
            chosen.append(inventory[int(item)].uuid)
        elif GPU_UUID.fullmatch(item) and any(g.uuid == item for g in inventory):
            chosen.append(item)
        else:
            return None  # a MIG device or a GPU this host lacks: crgpu cannot tell which GPU it is
    return list(dict.fromkeys(chosen))


def plan_device_map(
    then_all: Sequence[GpuLike],
    then_used: Sequence[str] | None,
    here_all: Sequence[GpuLike],
    here_given: Sequence[str] | None,
) -> tuple[dict[str, str] | None, list[str]]:
    """The old->new UUID pairs for cuCheckpointProcessRestore, and warnings; None when nothing
    moves (every GPU the container used is here and given to the restored container).

    The GPUs the container used go to the GPUs the restored container was given, the same GPU
    where it was given again, else another of the same model; every other GPU of the image's host
    goes to itself where it is here, else to a free GPU of the same model. A used GPU with no
    target of its model is refused before anything runs."""
    then_uuids = [g.uuid for g in then_all]
    model = {g.uuid: g.name for g in [*then_all, *here_all]}
    here_uuids = [g.uuid for g in here_all]
    used = [u for u in (then_used if then_used else then_uuids) if u]
    targets = [u for u in (here_given if here_given is not None else here_uuids) if u in here_uuids]
    if all(u in targets for u in used) and set(then_uuids) <= set(here_uuids):
        return None, []
    pairs: dict[str, str] = {}
    for old in used:
        free = [u for u in targets if u not in pairs.values()]
        new = old if old in free else next((u for u in free if model.get(u) == model.get(old)), None)
        if new is None:
            raise PreconditionError(
                f"the image's CUDA state is on {old} ({model.get(old, 'unknown model')}), and the restored "
                f"container is given no free GPU of that model here ({_listed(free, model)})",
                hint="give the restored container a GPU of the same model (NVIDIA_VISIBLE_DEVICES or its "
                "device nodes in the bundle), or restore on a node that has one",
            )
        pairs[old] = new
    warnings: list[str] = []
    for old in then_uuids:
        if old in pairs:
            continue
        free = [u for u in here_uuids if u not in pairs.values()]
        new = old if old in free else next((u for u in free if model.get(u) == model.get(old)), None)
        if new is None:
            warnings.append(
                f"the image's host had {old} ({model.get(old, 'unknown model')}), which its CUDA processes "
                "did not use and which has no free GPU of that model here: the driver may refuse the map"
            )
            continue
        pairs[old] = new
    return pairs, warnings


def _listed(uuids: Sequence[str], model: dict[str, str]) -> str:
    return ", ".join(f"{u} ({model.get(u, '?')})" for u in uuids) or "none"


def describe(pairs: dict[str, str] | None) -> list[str]:
    if not pairs:
        return []
    moved = [f"{old} -> {new}" for old, new in pairs.items() if old != new]
    kept = len(pairs) - len(moved)
    return [
        f"GPU map for the CUDA restore: {'; '.join(moved) or 'identity'}"
        + (f" ({kept} kept)" if moved and kept else "")
    ]
