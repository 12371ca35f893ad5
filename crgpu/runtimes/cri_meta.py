"""What containerd's CRI plugin knows of a Kubernetes container and its runtime state does not:
the kubelet's labels and annotations (`io.kubernetes.container.hash`, `restartCount`), the CRI's
own name for it, when it was created, and its image as `NAME@sha256:...`.

containerd restores a kubelet archive from these (status.dump, config.dump): without the hash a
kubelet takes the restored container for a changed one and restarts it, and containerd pulls the
base image by the digest reference. They live only in containerd's database, so crgpu asks
containerd the way an operator would, with `ctr` on the socket the container's own shim was
started with (its command line), and takes nothing from the container itself.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from typing import Any

from crgpu.host.go_flags import go_flag
from crgpu.host.root import read_host_text, stat_fields

CTR_TIMEOUT_S = 15.0
CTR_OUTPUT_MAX = 4 << 20
_METADATA = "io.cri-containerd.container.metadata"
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,75}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_REPO = re.compile(r"[a-z0-9][a-z0-9._:/-]{0,250}")


def cri_details(container_id: str, pid: int | None, namespace: str) -> dict[str, Any]:
    """The CRI's record of a running container as the manifest's engine keeps it (`labels`,
    `annotations`, `cri_name`, `created_at`, `image_ref`); {} when containerd cannot be asked."""
    address = _shim_address(pid)
    ctr = shutil.which("ctr")
    if address is None or ctr is None or not _NAMESPACE.fullmatch(namespace):
        return {}
    info = _json(_ctr(ctr, address, namespace, "containers", "info", "--", container_id))
    meta = _metadata(info)
    config = _dict(meta.get("Config"))
    out: dict[str, Any] = {
        "labels": _strings(config.get("labels")),
        "annotations": _strings(config.get("annotations")),
    }
    if isinstance(meta.get("Name"), str):
        out["cri_name"] = meta["Name"]
    if isinstance(info.get("CreatedAt"), str):
        out["created_at"] = info["CreatedAt"]
    image = _dict(config.get("image"))
    image_id = meta.get("ImageRef")
    if isinstance(image_id, str) and _DIGEST.fullmatch(image_id):
        ref = _digest_ref(_ctr(ctr, address, namespace, "images", "ls") or "", image_id, image.get("image"))
        if ref is not None:
            out["image_ref"] = ref
    return {k: v for k, v in out.items() if v}


def _shim_address(pid: int | None) -> str | None:
    """The containerd socket of the shim that is the container's parent (`-address PATH`)."""
    if pid is None:
        return None
    stat = read_host_text(f"/proc/{pid}/stat")
    try:
        ppid = int(stat_fields(stat)[1]) if stat else 0
    except (IndexError, ValueError):
        return None
    if ppid <= 1:
        return None
    comm = (read_host_text(f"/proc/{ppid}/comm") or "").strip()
    if not comm.startswith("containerd-shim"):
        return None
    argv = [part for part in (read_host_text(f"/proc/{ppid}/cmdline") or "").split("\0") if part]
    return go_flag(argv, "-address")


def _ctr(ctr: str, address: str, namespace: str, *args: str) -> str | None:
    try:
        done = subprocess.run(
            [ctr, "--address", address, "--namespace", namespace, *args],
            capture_output=True, timeout=CTR_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or len(done.stdout) > CTR_OUTPUT_MAX:
        return None
    return done.stdout.decode(errors="replace")


def _json(text: str | None) -> dict[str, Any]:
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _metadata(info: dict[str, Any]) -> dict[str, Any]:
    """The CRI plugin's own metadata, kept as a JSON document in a typed extension."""
    extensions = info.get("Extensions")
    entry = extensions.get(_METADATA) if isinstance(extensions, dict) else None
    value = entry.get("value") if isinstance(entry, dict) else None
    if not isinstance(value, str):
        return {}
    try:
        document = _json(base64.b64decode(value, validate=True).decode(errors="replace"))
    except ValueError:
        return {}
    meta = document.get("Metadata")
    return meta if isinstance(meta, dict) else {}


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _digest_ref(listing: str, image_id: str, tag: object) -> str | None:
    """`NAME@sha256:MANIFEST` of the image whose config digest is `image_id`: containerd lists the
    image under its ID, with its manifest's digest, and under each repository digest it was pulled
    by. The tag's repository is preferred when several repositories hold it."""
    rows = [line.split() for line in listing.splitlines()[1:]]
    target = next((row[2] for row in rows if len(row) > 2 and row[0] == image_id), None)
    if target is None or not _DIGEST.fullmatch(target):
        return None
    refs = [
        row[0]
        for row in rows
        if row and row[0].endswith("@" + target) and _REPO.fullmatch(row[0].split("@")[0])
    ]
    wanted = _repository(tag) if isinstance(tag, str) else None
    for ref in refs:
        if ref.split("@")[0] == wanted:
            return ref
    return refs[0] if refs else None


def _repository(ref: str) -> str:
    """A reference without its tag or digest (a registry's port is not a tag)."""
    name = ref.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]
