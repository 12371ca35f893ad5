"""A restored container's GPU device nodes made those its new bundle gives it.

CRIU restores the container's /dev from the image: the nodes of the GPUs it had when it was
checkpointed (`/dev/nvidia0`), whatever the restore's bundle gives it (NVIDIA Dynamo Snapshot's
issues 37, 305, 379). Once the driver API moves the CUDA state onto other GPUs (`/dev/nvidia1`), the
process would find no node for its GPU and one the device cgroup denies. After runc has restored the
container and before its CUDA state is put back (its processes wait, checkpointed, holding no device),
crgpu makes `/dev/nvidiaN` what the bundle's spec lists, as runc would for a new container.

The container's /dev is the container's: reached through /proc/PID/root, then opened without
following a link (a /dev that is a link is refused), and every node made or removed relative to that
open directory, so nothing outside it is ever touched.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from crgpu.host.errors import PreconditionError
from crgpu.host.root import host_path

NVIDIA_MAJOR = 195
_GPU_NODE = re.compile(r"nvidia(\d+)")


@dataclass(frozen=True)
class Node:
    name: str  # under /dev
    minor: int
    mode: int
    uid: int
    gid: int


def given_gpu_nodes(spec: dict[str, Any]) -> list[Node]:
    """The /dev/nvidiaN character devices the spec's linux.devices gives the container."""
    linux = spec.get("linux")
    devices = linux.get("devices") if isinstance(linux, dict) else None
    nodes = []
    for device in devices if isinstance(devices, list) else []:
        if not isinstance(device, dict):
            continue
        path, minor, major = device.get("path"), device.get("minor"), device.get("major")
        name = path[5:] if isinstance(path, str) and path.startswith("/dev/") else ""
        if not _GPU_NODE.fullmatch(name) or device.get("type") != "c" or major != NVIDIA_MAJOR:
            continue
        if not isinstance(minor, int) or not 0 <= minor < 256:
            continue
        mode = device.get("fileMode")
        uid, gid = device.get("uid"), device.get("gid")
        nodes.append(
            Node(
                name,
                minor,
                mode & 0o777 if isinstance(mode, int) else 0o666,
                uid if isinstance(uid, int) and uid >= 0 else 0,
                gid if isinstance(gid, int) and gid >= 0 else 0,
            )
        )
    return nodes


def sync_gpu_nodes(init_pid: int, nodes: list[Node]) -> list[str]:
    """Make the container's /dev/nvidiaN nodes `nodes`, no more; what changed, one line each."""
    try:
        root = os.open(host_path(f"/proc/{init_pid}/root"), os.O_PATH | os.O_DIRECTORY)
    except OSError as exc:
        raise PreconditionError(f"cannot reach the restored container's root: {exc.strerror}") from exc
    try:
        try:
            dev = os.open("dev", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
        except OSError as exc:
            raise PreconditionError(
                f"the restored container's /dev is not a directory of its own ({exc.strerror}): its GPU "
                "device nodes cannot be made"
            ) from exc
        try:
            return _sync(dev, nodes)
        finally:
            os.close(dev)
    finally:
        os.close(root)


def _sync(dev: int, nodes: list[Node]) -> list[str]:
    wanted = {node.name: node for node in nodes}
    changed = []
    for name in sorted(os.listdir(dev)):
        if not _GPU_NODE.fullmatch(name):
            continue
        info = os.stat(name, dir_fd=dev, follow_symlinks=False)
        node = wanted.get(name)
        right = (
            stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(NVIDIA_MAJOR, node.minor)
            if node
            else False
        )
        if not right:
            os.unlink(name, dir_fd=dev)  # unlink never follows a link: removes the entry itself
            changed.append(f"/dev/{name} removed (not the bundle's)")
    for node in nodes:
        before = os.umask(0)  # the spec's fileMode exactly, as runc makes it
        try:
            os.mknod(node.name, stat.S_IFCHR | node.mode, os.makedev(NVIDIA_MAJOR, node.minor), dir_fd=dev)
        except FileExistsError:
            continue  # already the right node
        finally:
            os.umask(before)
        os.chown(node.name, node.uid, node.gid, dir_fd=dev, follow_symlinks=False)
        changed.append(f"/dev/{node.name} made ({NVIDIA_MAJOR}:{node.minor})")
    return changed
