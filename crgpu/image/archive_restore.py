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
import platform
import shutil
import stat
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crgpu.criu.images import reaching, read_grants
from crgpu.host import config
from crgpu.host.errors import PreconditionError
from crgpu.host.mounts import mount_points_below, unmount
from crgpu.host.netns import check_network_namespace, new_network_namespace
from crgpu.host.safedirs import free_bytes, require_room, take_private_dir, tree_bytes, write_new_private
from crgpu.image.archive_names import CHECKPOINT_DIR, DELETED_NAME, DIFF_NAME, ProgressOpener
from crgpu.image.archive_read import ArchiveSummary, read_summary, unpack
from crgpu.image.archive_spec import RebuiltSpec, rebuild_spec, spec_grants
from crgpu.image.manifest import MANIFEST_NAME
from crgpu.image.rootfs_layer import apply_layer
from crgpu.options.models import check_container_id
from crgpu.runtimes.state import read_bundle_spec

MOUNT_TIMEOUT_S = 60.0
# In an import directory: the state root and ID of the container restored from it.
OWNER_NAME = "owner.json"


@dataclass
class PreparedArchive:
    image_dir: Path  # CRIU's images (checkpoint/), crgpu.json beside them when the archive had one
    bundle: Path
    container_id: str
    summary: ArchiveSummary
    notes: list[str] = field(default_factory=list)
    work: Path | None = None  # what crgpu made: taken back by discard()
    # The container's lock, taken before anything was unpacked; released by release().
    lock: ExitStack = field(default_factory=ExitStack)
    holds_lock: bool = False

    def discard(self) -> None:
        """Unmount what crgpu mounted (the bundle's overlay, anything below it) and remove what
        crgpu unpacked; nothing is removed while a mount below remains. Releases the lock."""
        try:
            if self.work is not None:
                for point in mount_points_below(self.work):
                    unmount(point, detach=True)
                if not mount_points_below(self.work):
                    shutil.rmtree(self.work, ignore_errors=True)
        finally:
            self.release()

    def release(self) -> None:
        self.lock.close()
        self.holds_lock = False

    def kept(self) -> str:
        """Where the unpacked archive lives and its size: kept while the restored container
        exists (`crgpu gc` takes it back once it is gone), removed at once if the restore fails."""
        size = tree_bytes(self.work / "archive") if self.work is not None else 0
        return (
            f"unpacked into {self.work} ({size / 2**20:.1f} MiB): kept while the restored container exists, "
            "removed by `crgpu gc` once it is gone (and at once if this restore fails)"
        )


def prepare(
    archive: Path,
    container_id: str | None,
    bundle: Path | None,
    rootfs: Path | None,
    trust: bool,
    before_unpack: Callable[[str], None] = lambda _id: None,
    console_socket: bool = False,
    lock_for: Callable[[str], AbstractContextManager[object]] | None = None,
    state_root: Path | None = None,
    cgroup_mode: str | None = None,
    netns: Path | None = None,
    progress: ProgressOpener | None = None,
) -> PreparedArchive:
    """Unpack and make the bundle. Whatever can be refused from the archive's metadata is refused
    before anything is written (`before_unpack(container_id)` adds the caller's checks); a failure
    afterwards takes back the mount and the directory."""
    summary = read_summary(archive, free_bytes(Path(config.get("work_root").value)))
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
    if bundle is None and rootfs is not None:
        check_rootfs(rootfs)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
    work = Path(config.get("work_root").value) / target_id / f"import-{stamp}"
    rebuilt = None
    if bundle is None:
        # What the spec alone grants is refused before anything is unpacked.
        rebuilt = rebuild_spec(copy.deepcopy(summary.spec), work / "bundle", target_id)
        refuse_reaching(rebuilt.reaching, trust, [])
    lock = ExitStack()
    locked = False
    try:
        # The container's lock first: a second restore of the same ID loses here, before it has
        # unpacked or mounted anything.
        if lock_for is not None:
            lock.enter_context(lock_for(target_id))
            locked = True
        before_unpack(target_id)
        require_room(work.parent.parent, summary.unpacked_bytes, summary.members, "unpacking the archive")
    except BaseException:
        lock.close()
        raise
    prepared = PreparedArchive(
        work / "archive" / CHECKPOINT_DIR,
        bundle or work / "bundle",
        target_id,
        summary,
        work=work,
        lock=lock,
        holds_lock=locked,
    )
    try:
        unpacked = work / "archive"
        if state_root is not None:
            # Who the import belongs to, before a byte is unpacked: what `crgpu gc` checks.
            take_private_dir(work, "import directory", empty=True)
            write_new_private(
                work / OWNER_NAME, json.dumps({"root": str(state_root), "id": target_id}).encode()
            )
        with progress("unpacking") if progress is not None else nullcontext() as advance:
            unpack(archive, unpacked, advance, summary.unpacked_bytes)
        image_dir = prepared.image_dir
        if not (image_dir / "inventory.img").is_file():
            raise PreconditionError(f"{archive} holds no checkpoint/inventory.img: not a complete checkpoint")
        if (unpacked / MANIFEST_NAME).is_file():
            os.rename(unpacked / MANIFEST_NAME, image_dir / MANIFEST_NAME)
        prepared.notes.append(prepared.kept())
        if rebuilt is not None:
            assert rootfs is not None
            prepared.notes += make_bundle(
                unpacked, rebuilt, prepared.bundle, rootfs, trust, cgroup_mode, netns
            )
        else:
            reaches = images_reaching(image_dir, read_bundle_spec(bundle), cgroup_mode)
            refuse_reaching(reaches, trust, prepared.notes)
    except BaseException:
        prepared.discard()
        raise
    return prepared


def check_rootfs(rootfs: Path) -> None:
    """--rootfs is the lower layer of the container's root: never the host's root, nor a tree that
    holds crgpu's own state (its work root, node key, config), whatever --trust-image says."""
    try:
        resolved = rootfs.resolve(strict=True)
        empty = not rootfs.is_dir() or not any(rootfs.iterdir())
    except OSError:
        empty = True
    if empty:
        raise PreconditionError(f"--rootfs {rootfs} is not a non-empty directory")
    own = [Path(config.get("work_root").value), Path(config.get("node_key").value), config.config_file()[0]]
    held = [path for path in own if resolved == path.resolve() or resolved in path.resolve().parents]
    if resolved == Path("/") or held:
        what = "this host's root" if resolved == Path("/") else f"a tree that holds crgpu's {held[0]}"
        raise PreconditionError(
            f"--rootfs {rootfs} is {what}: the restored container would read the host's files",
            hint="give the container image's root filesystem (e.g. the path `podman image mount IMAGE` prints)",
        )


def refuse_reaching(reaching: list[str], trust: bool, notes: list[str]) -> None:
    if reaching and not trust:
        raise PreconditionError(
            "the archive's container would reach this host: " + "; ".join(reaching),
            hint="restore it only if you trust where the archive comes from: add --trust-image",
            detail=reaching,
        )
    notes += [f"reaches the host (--trust-image): {item}" for item in reaching]


def images_reaching(image_dir: Path, spec: dict[str, Any], cgroup_mode: str | None) -> list[str]:
    """What CRIU's images would grant beyond `spec` (the bundle the restore runs with)."""
    allowed, own, seccomp = spec_grants(spec)
    return reaching(read_grants(image_dir, platform.machine()), allowed, own, seccomp, cgroup_mode)


def make_bundle(
    unpacked: Path,
    rebuilt: RebuiltSpec,
    bundle: Path,
    lower: Path,
    trust: bool,
    cgroup_mode: str | None,
    netns: Path | None = None,
) -> list[str]:
    """The bundle for the archive's spec (rebuilt for `bundle`, never copied) over `lower`."""
    bundle.mkdir(mode=0o700)
    spec, notes = rebuilt.spec, rebuilt.notes
    reaches = images_reaching(unpacked / CHECKPOINT_DIR, spec, cgroup_mode)
    refuse_reaching(rebuilt.reaching + reaches, trust, notes)
    rootfs = bundle / "rootfs"
    upper, workdir = bundle / "upper", bundle / "work"
    for directory in (rootfs, upper, workdir):
        directory.mkdir(mode=0o755)
    apply_layer(_file_or_none(unpacked / DIFF_NAME), _file_or_none(unpacked / DELETED_NAME), upper)
    # The overlay's root takes the upper dir's mode and owner; CRIU checks them against the dump.
    top = lower.stat()
    os.chown(upper, top.st_uid, top.st_gid)
    os.chmod(upper, stat.S_IMODE(top.st_mode))
    _mount_overlay(lower, upper, workdir, rootfs)
    rebuilt.make_stand_ins(rootfs, unpacked)
    spec["root"] = {"path": str(rootfs), "readonly": spec["root"]["readonly"]}
    notes += _network_namespace(rebuilt, bundle, netns)
    write_new_private(bundle / "config.json", json.dumps(spec, indent=2).encode())
    notes.append(f"bundle made from the archive's spec: {bundle} (root filesystem: overlay of {lower})")
    return notes


def _network_namespace(rebuilt: RebuiltSpec, bundle: Path, netns: Path | None) -> list[str]:
    """The container's network namespace when CRIU's images name it external (the engine's: a pod's,
    a CNI network's): `netns`, or a new one of its own; runc hands it to CRIU as extRootNetNS.
    Never the archive's path, never the live original's."""
    if not rebuilt.external_net:
        if netns is not None:
            raise PreconditionError(
                "--netns: the archive's container had a network namespace of its own, which CRIU "
                "restores from its images",
                hint="drop --netns",
            )
        return []
    notes = []
    if netns is None:
        netns = bundle / "netns"
        notes = new_network_namespace(netns)
    else:
        check_network_namespace(netns)
        notes = [f"restored into the network namespace {netns} (--netns)"]
    namespaces = rebuilt.spec["linux"]["namespaces"]
    for item in namespaces:
        if item["type"] == "network":
            item["path"] = str(netns)
    return notes


def _file_or_none(path: Path) -> Path | None:
    return path if path.is_file() else None


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
