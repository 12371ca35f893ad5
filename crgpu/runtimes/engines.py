"""Who owns a container: podman, containerd (under Kubernetes or not) or Docker, and the engine's
name for it.

On a GPU node almost every container belongs to an engine. A checkpoint that stops one, or a
restore behind the engine's back, leaves the engine wrong about it (podman: `Exited (137)` and an
unmounted rootfs; containerd: STOPPED and a task that cannot be removed). crgpu recognises the
owner from the container's spec and state root, resolves the engine's names to runtime IDs, and
names the engine's own command when it refuses. Nothing here trusts an image: it reads the
runtime's state, the bundle's spec and the engine's own records, and asks podman by argv.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from crgpu.nvidia.evidence import spec_annotations
from crgpu.options.models import K8S_REF
from crgpu.runtimes.docker_root import docker_data_root
from crgpu.runtimes.roots import known_roots
from crgpu.runtimes.state import state_labels

EngineKind = Literal["podman", "kubernetes", "containerd", "docker"]
PODMAN_TIMEOUT_S = 30.0
_CRI_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
_CRI_POD = "io.kubernetes.cri.sandbox-name"
_CRI_CONTAINER = "io.kubernetes.cri.container-name"
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Engine:
    kind: EngineKind
    name: str | None = None  # the engine's name for the container (podman, Docker, Kubernetes)
    namespace: str | None = None  # the containerd namespace, or the pod's Kubernetes namespace
    pod: str | None = None
    image: str | None = None  # the container's image, as the engine names it (archives need it)
    image_id: str | None = None
    network_mode: str | None = None  # podman's: bridge, none, host, slirp4netns, pasta, ...
    networks: tuple[str, ...] = ()  # the podman networks it joined

    def label(self) -> str:
        return {
            "podman": "podman",
            "kubernetes": "Kubernetes",
            "containerd": "containerd",
            "docker": "Docker",
        }[self.kind]

    def checkpoint_hint(self, container_id: str) -> str:
        ref = self.name or container_id
        if self.kind == "kubernetes" and self.name is None:
            # A pod's sandbox (its pause container) has no container name: the kubelet checkpoints
            # a pod's containers, never its sandbox.
            return (
                f"it is the sandbox of pod {self.namespace}/{self.pod}, which Kubernetes does not checkpoint: "
                "name one of the pod's containers (NAMESPACE/POD/CONTAINER)"
            )
        return {
            "podman": f"checkpoint it through podman (`podman container checkpoint {ref}`), or let crgpu hand "
            "the image to podman with --hand-off, or keep it running with --leave-running",
            "docker": f"checkpoint it through Docker (`docker checkpoint create {ref} NAME`), or let crgpu hand "
            "the image to Docker with --hand-off, or keep it running with --leave-running",
            "kubernetes": "checkpoint it through the kubelet (POST /checkpoint/"
            f"{self.namespace}/{self.pod}/{self.name}), or keep it running with --leave-running",
            "containerd": f"checkpoint it through containerd (`ctr -n {self.namespace} task checkpoint "
            f"{container_id}`), or keep it running with --leave-running",
        }[self.kind]

    def restore_hint(self, container_id: str) -> str:
        ref = self.name or container_id
        return {
            "podman": f"restore it through podman (`podman container restore {ref}`, or --import of an archive "
            "from `crgpu export`), or restore under another ID and --root",
            "docker": f"restore it through Docker (`docker start --checkpoint NAME {ref}`), or restore under "
            "another ID and --root",
            "kubernetes": "restore it through Kubernetes from an archive (`crgpu export --format kubernetes -i IMAGE -o FILE`), "
            "or restore under another ID and --root",
            "containerd": "restore it through containerd (`ctr task start --checkpoint`), or restore under "
            "another ID and --root",
        }[self.kind]

    def record(self) -> dict[str, object]:
        fields = ("kind", "name", "namespace", "pod", "image", "image_id", "network_mode")
        record: dict[str, object] = {k: v for k in fields if isinstance(v := getattr(self, k), str) and v}
        return record | ({"networks": list(self.networks)} if self.networks else {})


def engine_of(container_id: str, root: Path, spec: dict[str, Any], labels: dict[str, str]) -> Engine | None:
    """The engine that owns a runc container, from its spec's annotations and its state root."""
    annotations = {**labels, **spec_annotations(spec)}
    if annotations.get("io.container.manager") == "libpod":
        details = podman_details(container_id)
        return Engine(
            "podman",
            details.get("name"),
            image=details.get("image"),
            image_id=details.get("image_id"),
            network_mode=details.get("network_mode"),
            networks=tuple(details.get("networks", "").split()),
        )
    if _CRI_CONTAINER in annotations or "io.kubernetes.cri.container-type" in annotations:
        return Engine(
            "kubernetes",
            name=annotations.get(_CRI_CONTAINER),
            namespace=annotations.get(_CRI_NAMESPACE),
            pod=annotations.get(_CRI_POD),
            image=annotations.get("io.kubernetes.cri.image-name"),
        )
    parts = root.parts
    if (
        len(parts) >= 4
        and parts[-3:-1] == ("containerd", "runc")
        and root.parent.parent.parent == Path("/run")
    ):
        return Engine("containerd", name=container_id, namespace=root.name)
    if "docker" in parts and root.name == "moby":
        details = docker_details(container_id)
        return Engine(
            "docker", details.get("name"), image=details.get("image"), image_id=details.get("image_id")
        )
    return None


# ---------------------------------------------------------------- names -> runtime IDs
def resolve_name(ref: str) -> str | None:
    """The runtime ID an engine knows by this name: `namespace/pod/container` (Kubernetes), a
    podman name, a Docker name. None when no engine knows it."""
    match = K8S_REF.fullmatch(ref)
    if match:
        return _kubernetes_id(*match.groups())
    return _podman_id(ref) or _docker_id(ref)


def _kubernetes_id(namespace: str, pod: str, container: str) -> str | None:
    for root in known_roots("runc"):
        for state in sorted(root.glob("*/state.json")):
            labels = _state_labels(state)
            if (labels.get(_CRI_NAMESPACE), labels.get(_CRI_POD), labels.get(_CRI_CONTAINER)) == (
                namespace,
                pod,
                container,
            ) and labels.get("io.kubernetes.cri.container-type") != "sandbox":
                return state.parent.name
    return None


def _state_labels(state: Path) -> dict[str, str]:

    try:
        data = json.loads(state.read_text())
    except (OSError, ValueError):
        return {}
    config_ = data.get("config") if isinstance(data, dict) else None
    return state_labels(config_) if isinstance(config_, dict) else {}


def _podman(*args: str) -> str | None:
    podman = shutil.which("podman")
    if not podman:
        return None
    try:
        done = subprocess.run(
            [podman, *args], capture_output=True, text=True, timeout=PODMAN_TIMEOUT_S,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _podman_id(name: str) -> str | None:
    found = _podman("container", "inspect", "--format", "{{.Id}}", "--", name)
    return found if found and _HEX64.fullmatch(found) else None


def podman_details(container_id: str) -> dict[str, str]:
    """What podman's archive format needs of the container: its name and its image."""
    raw = _podman("container", "inspect", "--format", "json", "--", container_id)
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    item = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
    host, settings = item.get("HostConfig"), item.get("NetworkSettings")
    networks = settings.get("Networks") if isinstance(settings, dict) else None
    out = {
        "name": item.get("Name"),
        "image": item.get("ImageName"),
        "image_id": item.get("Image"),
        "network_mode": host.get("NetworkMode") if isinstance(host, dict) else None,
        # space-separated: podman's network names hold no space
        "networks": " ".join(sorted(networks)) if isinstance(networks, dict) else None,
    }
    return {k: v for k, v in out.items() if isinstance(v, str) and v}


def _docker_config(container_id: str, root: Path | None = None) -> dict[str, Any]:
    """The container's config.v2.json under Docker's data root (`root`, found once by a caller
    that reads many)."""
    base = root if root is not None else docker_data_root()
    try:
        data = json.loads((base / "containers" / container_id / "config.v2.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _docker_name(config_: dict[str, Any]) -> str | None:
    name = config_.get("Name")
    return name.lstrip("/") if isinstance(name, str) and name else None


def docker_details(container_id: str) -> dict[str, str]:
    """What Docker records of a container, read once: its name, the image it was run from and
    that image's ID."""
    data = _docker_config(container_id)
    spec = data.get("Config")
    out = {
        "name": _docker_name(data),
        "image": spec.get("Image") if isinstance(spec, dict) else None,
        "image_id": data.get("Image"),
    }
    return {k: v for k, v in out.items() if isinstance(v, str) and v}


def _docker_id(name: str) -> str | None:
    root = docker_data_root()
    for path in sorted((root / "containers").glob("*/config.v2.json")):
        if _docker_name(_docker_config(path.parent.name, root)) == name and _HEX64.fullmatch(
            path.parent.name
        ):
            return path.parent.name
    return None


def docker_checkpoint_dir(container_id: str, checkpoint_name: str) -> Path:
    """Where `docker start --checkpoint NAME` looks (moby's default checkpoint directory)."""
    return docker_data_root() / "containers" / container_id / "checkpoints" / checkpoint_name
