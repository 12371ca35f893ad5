"""Restoring from an archive (crgpu's, podman's or the kubelet's): unpacked with the care of a
hostile manifest, then a bundle made by crgpu from the archive's spec.

An archive holds CRIU's images, the container's spec and its writable layer, not its image: the
root filesystem comes from the operator (`--rootfs DIR`, e.g. `podman image mount IMAGE`), with
the writable layer laid on it as an overlay, or a whole `--bundle`. The spec is data: hooks (host
commands) and namespace paths (another host's processes) are dropped, the cgroup is crgpu's, bind
mounts from the archive's host become empty stand-ins in the bundle, and what would reach this
host (added privileges, host namespaces, bind mounts of this host's paths) is listed and needs
--trust-image.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crgpu import config
from crgpu.archive import ArchiveSummary, read_summary, unpack
from crgpu.archive_names import CHECKPOINT_DIR, DELETED_NAME, DIFF_NAME
from crgpu.errors import PreconditionError
from crgpu.image import MANIFEST_NAME
from crgpu.mounts import unmount
from crgpu.options import check_container_id
from crgpu.safedirs import write_new_private

# What a container gets without asking (the engines' default capability set).
DEFAULT_CAPS = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT", "CAP_MKNOD",
    "CAP_AUDIT_WRITE", "CAP_NET_RAW",
}  # fmt: skip
OWN_NAMESPACES = ("pid", "network", "ipc", "uts", "mount")
MOUNT_TIMEOUT_S = 60.0


@dataclass
class PreparedArchive:
    image_dir: Path  # CRIU's images (checkpoint/), crgpu.json beside them when the archive had one
    bundle: Path
    container_id: str
    summary: ArchiveSummary
    notes: list[str] = field(default_factory=list)
    work: Path | None = None  # what crgpu made: taken back by discard()

    def discard(self) -> None:
        """Unmount the bundle's overlay (if crgpu mounted one) and remove what crgpu unpacked."""
        if self.work is None:
            return
        rootfs = self.work / "bundle" / "rootfs"
        if not os.path.ismount(rootfs) or unmount(rootfs):
            shutil.rmtree(self.work, ignore_errors=True)


def prepare(
    archive: Path,
    container_id: str | None,
    bundle: Path | None,
    rootfs: Path | None,
    trust: bool,
    before_unpack: Callable[[str], None] = lambda _id: None,
    console_socket: bool = False,
) -> PreparedArchive:
    """Unpack and make the bundle. Whatever can be refused from the archive's metadata is refused
    before anything is written (`before_unpack(container_id)` adds the caller's checks); a failure
    afterwards takes back the mount and the directory."""
    summary = read_summary(archive)
    wanted = container_id or summary.config.get("id")
    try:
        target_id = check_container_id(wanted)
    except ValueError:
        raise PreconditionError(
            f"the archive's container ID {str(wanted)[:80]!r} is not one crgpu uses",
            hint="give the container ID",
        ) from None
    if bundle is None and rootfs is None:
        raise PreconditionError(
            "an archive holds the container's writable layer, not its image: crgpu needs the image's root filesystem",
            hint="give --rootfs DIR (e.g. the path `podman image mount IMAGE` prints), or a whole --bundle",
        )
    process = summary.spec.get("process")
    if (
        bundle is None
        and isinstance(process, dict)
        and process.get("terminal") is True
        and not console_socket
    ):
        raise PreconditionError(
            "the archive's container has a terminal (terminal: true in its spec): the runtime must hand the "
            "restored terminal to a console socket",
            hint="give --console-socket SOCKET (a receiver listening there, such as runc's recvtty)",
        )
    if bundle is None and rootfs is not None and (not rootfs.is_dir() or not any(rootfs.iterdir())):
        raise PreconditionError(f"--rootfs {rootfs} is not a non-empty directory")
    before_unpack(target_id)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
    work = Path(config.get("work_root").value) / target_id / f"import-{stamp}"
    prepared = PreparedArchive(
        work / "archive" / CHECKPOINT_DIR, bundle or work / "bundle", target_id, summary, work=work
    )
    try:
        unpacked = work / "archive"
        unpack(archive, unpacked)
        image_dir = prepared.image_dir
        if not (image_dir / "inventory.img").is_file():
            raise PreconditionError(f"{archive} holds no checkpoint/inventory.img: not a complete checkpoint")
        if (unpacked / MANIFEST_NAME).is_file():
            os.rename(unpacked / MANIFEST_NAME, image_dir / MANIFEST_NAME)
        prepared.notes.append(f"unpacked into {unpacked}")
        if bundle is None:
            assert rootfs is not None
            spec = copy.deepcopy(summary.spec)
            prepared.notes += make_bundle(unpacked, spec, prepared.bundle, rootfs, target_id, trust)
    except BaseException:
        prepared.discard()
        raise
    return prepared


def make_bundle(
    unpacked: Path, spec: dict[str, Any], bundle: Path, lower: Path, container_id: str, trust: bool
) -> list[str]:
    """The bundle for the archive's spec (as read_summary parsed it; changed here) over `lower`."""
    bundle.mkdir(mode=0o700)
    notes, reaching = sanitize_spec(spec, bundle, container_id)
    if reaching and not trust:
        raise PreconditionError(
            "the archive's container would reach this host: " + "; ".join(reaching),
            hint="restore it only if you trust where the archive comes from: add --trust-image",
            detail=reaching,
        )
    notes += [f"reaches the host (--trust-image): {item}" for item in reaching]
    rootfs = bundle / "rootfs"
    upper, workdir = bundle / "upper", bundle / "work"
    for directory in (rootfs, upper, workdir):
        directory.mkdir(mode=0o755)
    _apply_layer(unpacked, upper)
    # The overlay's root takes the upper dir's mode and owner; CRIU checks them against the dump.
    top = lower.stat()
    os.chown(upper, top.st_uid, top.st_gid)
    os.chmod(upper, stat.S_IMODE(top.st_mode))
    _mount_overlay(lower, upper, workdir, rootfs)
    spec["root"] = {"path": str(rootfs), "readonly": bool((spec.get("root") or {}).get("readonly", False))}
    write_new_private(bundle / "config.json", json.dumps(spec, indent=2).encode())
    notes.append(f"bundle made from the archive's spec: {bundle} (root filesystem: overlay of {lower})")
    return notes


def sanitize_spec(spec: dict[str, Any], bundle: Path, container_id: str) -> tuple[list[str], list[str]]:
    """Make the archive's spec safe to run here (in place). Returns (what changed, what would
    reach this host)."""
    notes: list[str] = []
    reaching: list[str] = []
    if spec.pop("hooks", None):
        notes.append("the spec's hooks were dropped (an archive never decides what runs on this host)")
    linux = spec.setdefault("linux", {})
    if not isinstance(linux, dict):
        raise PreconditionError("the archive's spec has a malformed linux section")
    linux["cgroupsPath"] = f"/crgpu/{container_id}"
    namespaces = [ns for ns in linux.get("namespaces") or [] if isinstance(ns, dict)]
    for ns in namespaces:
        if ns.pop("path", None):
            notes.append(
                f"the {ns.get('type')} namespace path of the archive's host was dropped: a new one is made"
            )
    linux["namespaces"] = namespaces
    own = {ns.get("type") for ns in namespaces}
    reaching += [f"shares this host's {kind} namespace" for kind in OWN_NAMESPACES if kind not in own]
    process = spec.get("process") if isinstance(spec.get("process"), dict) else {}
    caps = process.get("capabilities") if isinstance(process, dict) else None
    granted = set()
    if isinstance(caps, dict):
        for kind in ("bounding", "effective", "permitted"):
            granted |= {c for c in caps.get(kind) or [] if isinstance(c, str)}
    extra = sorted(granted - DEFAULT_CAPS)
    if extra:
        reaching.append("privileges beyond the engines' defaults: " + ", ".join(extra))
    mounts: list[dict[str, Any]] = []
    for mount in spec.get("mounts") or []:
        if not isinstance(mount, dict):
            continue
        options = mount.get("options") or []
        is_bind = mount.get("type") == "bind" or "bind" in options or "rbind" in options
        source = mount.get("source")
        if is_bind and isinstance(source, str) and source.startswith("/"):
            if os.path.exists(source):
                reaching.append(f"bind-mounts this host's {source} at {mount.get('destination')}")
            else:
                mount["source"] = str(_stand_in(bundle, len(mounts), source))
                notes.append(
                    f"{mount.get('destination')}: bound from an empty stand-in ({source} is the archive host's)"
                )
        mounts.append(mount)
    spec["mounts"] = mounts
    return notes, reaching


def _stand_in(bundle: Path, index: int, source: str) -> Path:
    """An empty file or directory in the bundle for a bind mount from the archive's host."""
    directory = bundle / "mounts"
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / f"{index}-{Path(source).name or 'root'}"
    looks_like_dir = Path(source).name in ("shm", "mqueue") or source.endswith("/")
    if looks_like_dir:
        path.mkdir(mode=0o755)
    else:
        write_new_private(path, b"", 0o644)
    return path


def _apply_layer(unpacked: Path, upper: Path) -> None:
    """The archive's writable layer into the overlay's upper dir: rootfs-diff.tar through
    _layer_filter (no absolute names, no `..`, no links out, no devices), deleted.files
    as overlay whiteouts."""
    diff = unpacked / DIFF_NAME
    if diff.is_file():
        try:
            with tarfile.open(diff, mode="r:*") as tar:
                tar.extractall(upper, filter=_layer_filter)
        except (tarfile.TarError, OSError) as exc:
            raise PreconditionError(f"the archive's rootfs-diff.tar was refused: {exc}") from exc
    deleted = unpacked / DELETED_NAME
    if deleted.is_file():
        try:
            names = json.loads(deleted.read_text())
        except ValueError as exc:
            raise PreconditionError(f"the archive's deleted.files is not JSON: {exc}") from exc
        for name in names if isinstance(names, list) else []:
            target = (upper / str(name)).resolve()
            if not isinstance(name, str) or upper.resolve() not in target.parents:
                raise PreconditionError(
                    f"the archive's deleted.files names {str(name)[:80]!r}, outside the container"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            if not os.path.lexists(target):
                os.mknod(target, stat.S_IFCHR | 0o000, 0)


def _layer_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """Python's "tar" filter (nothing outside the layer, even through links; no setuid bits) and no
    device nodes: a container's absolute symlinks stay, which the "data" filter would refuse."""
    if member.isdev():
        raise tarfile.FilterError(f"{member.name}: a device node in the writable layer")
    return tarfile.tar_filter(member, dest)


def _mount_overlay(lower: Path, upper: Path, workdir: Path, target: Path) -> None:
    mount = shutil.which("mount") or "/bin/mount"
    if any(c in str(path) for path in (lower, upper, workdir) for c in ",:\n"):
        raise PreconditionError("--rootfs: a path with ',' or ':' cannot be an overlay layer")
    options = f"lowerdir={lower},upperdir={upper},workdir={workdir}"
    done = subprocess.run(
        [mount, "-t", "overlay", "overlay", "-o", options, "--", str(target)],
        capture_output=True, text=True, timeout=MOUNT_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise PreconditionError(
            f"cannot mount the container's root filesystem (overlay of {lower}): {done.stderr.strip()[:300]}",
            hint="give a --bundle whose rootfs is ready instead",
        )
