"""A checkpoint as an OCI image (`oci-archive`, the layout skopeo, buildah and podman read), which
a pod spec can name: Kubernetes restores from an image whose annotations name a checkpoint
(containerd reads `org.criu.checkpoint.container.name`, CRI-O
`io.kubernetes.cri-o.annotations.checkpoint.name`) and whose one layer holds the kubelet's
archive at its root, as `checkpointctl build` lays it out.

The layer is written once, straight into the output: its tar header goes in after it, when its
digest and size are known (both have a fixed place in a 512-byte header), so a GPU-sized
checkpoint is neither staged on disk twice nor read twice.
"""

from __future__ import annotations

import hashlib
import json
import platform
import tarfile
import time
from collections.abc import Callable
from typing import IO, Any

from crgpu.image.manifest import Manifest

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
CHECKPOINT_NAME = "org.criu.checkpoint.container.name"
CRIO_CHECKPOINT_NAME = "io.kubernetes.cri-o.annotations.checkpoint.name"
# Python's machine names as Go's GOARCH, which the engines match an image's platform by.
_GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def oci_annotations(manifest: Manifest, config: dict[str, Any]) -> dict[str, str]:
    """The image manifest's annotations, those `checkpointctl build` writes (from the kubelet
    archive's config.dump) and CRI-O's name."""
    engine = manifest.container.engine
    name = engine.name if engine and engine.name else manifest.container.id
    found = {
        "org.criu.checkpoint.engine.name": "containerd",
        CHECKPOINT_NAME: name,
        "org.criu.checkpoint.pod.name": engine.pod if engine else None,
        "org.criu.checkpoint.pod.namespace": engine.namespace
        if engine and engine.kind == "kubernetes"
        else None,
        "org.criu.checkpoint.rootfsImageUserRequested": config.get("rootfsImage"),
        "org.criu.checkpoint.rootfsImageName": config.get("rootfsImageName"),
        "org.criu.checkpoint.rootfsImageID": config.get("rootfsImageRef"),
        "org.criu.checkpoint.runtime.name": config.get("runtime"),
        CRIO_CHECKPOINT_NAME: name,
        "org.opencontainers.image.created": manifest.created_at,
    }
    return {key: value for key, value in found.items() if isinstance(value, str) and value}


class _Digesting:
    """A writer that passes bytes on and keeps their sha256 and count."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.hash, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


def write_oci_archive(
    raw: IO[bytes], write_layer: Callable[[IO[bytes]], None], annotations: dict[str, str]
) -> None:
    """An OCI image layout as a tar into `raw` (a new, seekable file): one layer, which
    `write_layer` writes, a config for this machine's platform, the annotated manifest, the index."""
    for directory in ("blobs/", "blobs/sha256/"):
        raw.write(_header(directory, 0, tarfile.DIRTYPE))
    header_at = raw.tell()
    raw.write(b"\0" * tarfile.BLOCKSIZE)
    layer = _Digesting(raw)
    write_layer(layer)  # type: ignore[arg-type]
    _pad(raw, layer.size)
    end = raw.tell()
    layer_digest = layer.hash.hexdigest()
    raw.seek(header_at)
    raw.write(_header(f"blobs/sha256/{layer_digest}", layer.size))
    raw.seek(end)
    config = _json(
        {
            "architecture": _GOARCH.get(platform.machine(), platform.machine()),
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        }
    )
    image_manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, **_blob(raw, config)},
            "layers": [{"mediaType": LAYER, "digest": f"sha256:{layer_digest}", "size": layer.size}],
            "annotations": annotations,
        }
    )
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [{"mediaType": MANIFEST, **_blob(raw, image_manifest)}],
        }
    )
    _file(raw, "index.json", index)
    _file(raw, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
    raw.write(b"\0" * (2 * tarfile.BLOCKSIZE))
    if raw.tell() % tarfile.RECORDSIZE:
        raw.write(b"\0" * (tarfile.RECORDSIZE - raw.tell() % tarfile.RECORDSIZE))


def _header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    """One 512-byte header: GNU format, whose base-256 size field holds a layer past 8 GiB."""
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime = size, kind, int(time.time())
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    block = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict")
    assert len(block) == tarfile.BLOCKSIZE, name  # a name under 100 bytes: no extension blocks
    return block


def _pad(raw: IO[bytes], size: int) -> None:
    if size % tarfile.BLOCKSIZE:
        raw.write(b"\0" * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))


def _file(raw: IO[bytes], name: str, data: bytes) -> None:
    raw.write(_header(name, len(data)))
    raw.write(data)
    _pad(raw, len(data))


def _blob(raw: IO[bytes], data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    _file(raw, f"blobs/sha256/{digest}", data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
