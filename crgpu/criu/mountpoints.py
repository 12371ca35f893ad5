"""What the mounts CRIU would restore (`mountpoints-*.img`) open to the container.

At restore runc applies neither the spec's read-only nor its masked paths: CRIU mounts what its
images list, with the flags they give. So an image decides whether `/proc/sys` (core_pattern:
a program the host runs as root) and `/proc/sysrq-trigger` are writable, whether sysfs and the
cgroup hierarchies are, and whether a file system is mounted fresh from options naming host
paths (an overlay's lowerdir). Field numbers from CRIU's images/mnt.proto."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from crgpu.criu.protobuf import fields
from crgpu.host.root import host_path

MS_RDONLY = 0x1
PROC, SYSFS, TMPFS, CGROUP, OVERLAY, CGROUP2 = 1, 2, 5, 12, 17, 23
# mnt_entry.fstype values CRIU mounts for a container of the engines' kinds.
SAFE_FSTYPES = {PROC: "proc", SYSFS: "sysfs", TMPFS: "tmpfs", 6: "devpts", CGROUP: "cgroup", 14: "mqueue",
                OVERLAY: "overlay", CGROUP2: "cgroup2"}  # fmt: skip
FSTYPE_NAMES = {0: "unsupported", 3: "devtmpfs", 4: "binfmt_misc", 7: "simfs", 8: "pstore",
                9: "securityfs", 10: "fusectl", 11: "debugfs", 13: "aufs", 15: "fuse", 16: "auto",
                18: "autofs", 19: "tracefs"}  # fmt: skip
# What every engine makes read-only or masks (runc's default spec, podman 5.4's, containerd's);
# runc skips a path this kernel lacks, and so does the check (the copy's /proc is this host's).
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
MASKED_PATHS = ("/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware")  # fmt: skip


@dataclass(frozen=True)
class Mount:
    fstype: int
    root_dev: int
    flags: int
    root: str
    point: str
    source: str
    fsname: str
    external: bool  # runc's: CRIU binds it from what runc maps for the key (the spec's binds)

    @property
    def readonly(self) -> bool:
        return bool(self.flags & MS_RDONLY)

    @property
    def name(self) -> str:
        return self.fsname or SAFE_FSTYPES.get(self.fstype) or FSTYPE_NAMES.get(self.fstype, str(self.fstype))


def parse_mounts(entries: list[bytes]) -> list[Mount]:
    mounts = []
    for entry in entries:
        values = fields(entry)
        fstype, root_dev, flags = (values.get(number, 0) for number in (1, 3, 5))
        if not (isinstance(fstype, int) and isinstance(root_dev, int) and isinstance(flags, int)):
            raise ValueError("a mount entry with a malformed number")
        mounts.append(
            Mount(
                fstype, root_dev, flags, _text(values.get(6)), _text(values.get(7)), _text(values.get(8)),
                _text(values.get(14)), values.get(13) == 1 or bool(values.get(18)),
            )
        )  # fmt: skip
    return mounts


def _on_this_host(path: str) -> bool:
    return host_path(path).exists()


def mount_reaching(mounts: list[Mount], exists: Callable[[str], bool] = _on_this_host) -> list[str]:
    """What the mounts give beyond an engine's container, one line each ("mount ...", "leave ...")."""
    found: list[str] = []
    root_devs = {mount.root_dev for mount in mounts if mount.point == "/"}
    for mount in mounts:
        if mount.external or mount.point in ("/", ""):
            continue
        where = f"at {mount.point[:200]!r}"
        if mount.fstype not in SAFE_FSTYPES:
            found.append(f"mount {mount.name} {mount.source[:200]!r} {where}")
        elif mount.fstype == OVERLAY and mount.root_dev not in root_devs:
            found.append(f"mount an overlay of their own (its layers name paths of this host) {where}")
        elif mount.fstype in (SYSFS, CGROUP, CGROUP2) and not mount.readonly:
            found.append(f"mount {mount.name} writable {where}")
        elif mount.fstype == PROC and mount.root != "/" and not mount.readonly:
            found.append(f"mount proc's {mount.root[:100]!r} writable {where}")
        if mount.fstype in (PROC, SYSFS) and mount.root == "/":
            found += _unprotected(mount, mounts, exists)
    return found


def _unprotected(fresh: Mount, mounts: list[Mount], exists: Callable[[str], bool]) -> list[str]:
    """The engines' read-only and masked paths under a fresh proc or sysfs mount that no mount
    of the image covers (read-only, for the read-only ones)."""
    base = "/proc" if fresh.fstype == PROC else "/sys"
    found = []
    for path, readonly in [(p, True) for p in READONLY_PATHS] + [(p, False) for p in MASKED_PATHS]:
        if not path.startswith(base + "/") or not exists(path):
            continue
        target = fresh.point.rstrip("/") + path[len(base) :]
        over = [mount for mount in mounts if mount.point == target]
        if readonly and not any(mount.readonly for mount in over):
            found.append(f"leave {target[:200]!r} writable (the engines make it read-only)")
        elif not readonly and not over:
            found.append(f"leave {target[:200]!r} unmasked (the engines mask it)")
    return found


def _text(value: int | bytes | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""
