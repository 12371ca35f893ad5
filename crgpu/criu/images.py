"""What CRIU will restore from an image directory that grants host access, read from CRIU's own
images rather than from the spec beside them.

On restore, runc does not apply the spec's capabilities, seccomp profile or namespaces to the
restored processes: CRIU restores each task's credentials and seccomp mode from `core-*.img`,
decides which namespaces to create by comparing the root task's `ids-*.img` with the dumping
CRIU's own (`inventory.img`), and mounts what `mountpoints-*.img` lists. A hostile image can
therefore carry CAP_SYS_ADMIN, no seccomp filter, the host's network namespace or a block-device
mount under a spec that looks like the engines' defaults. Each image is a head magic, a type
magic (inventory: the type magic alone) and entries of a 4-byte length and a protobuf message
(CRIU's images/*.proto give the field numbers used here).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from crgpu.criu.cgroups import CGROUP_MAGIC, CgroupGrants, read_cgroups
from crgpu.criu.mountpoints import mount_reaching, parse_mounts
from crgpu.criu.protobuf import fields, message, repeated_bytes, repeated_uint
from crgpu.criu.seccomp_bpf import Program, let_through, parse
from crgpu.host.errors import PreconditionError

IMG_COMMON_MAGIC = 0x54564319
INVENTORY_MAGIC = 0x58313116
PSTREE_MAGIC = 0x50273030
CORE_MAGIC = 0x55053847
IDS_MAGIC = 0x54432030
MNTS_MAGIC = 0x55563928
SECCOMP_MAGIC = 0x64413049
# A container's core, ids, pstree and mount images are a few KiB; anything larger is not CRIU's.
IMAGE_MAX_BYTES = 4 * 1024 * 1024
MAX_TASKS = 65_536

# Linux capability numbers (include/uapi/linux/capability.h).
CAP_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip
# task_kobj_ids_entry: the namespaces a container has of its own, by field number.
NAMESPACE_IDS = {5: "pid", 6: "network", 7: "ipc", 8: "uts", 9: "mount"}
SECCOMP_DISABLED, SECCOMP_FILTER = 0, 2
MAX_FILTER_CHAIN = 64
# task_core_entry.task_state (compel's task-state.h): a zombie, CRIU's helper.
TASK_DEAD = 0x02
TASK_HELPER = 0x04


@dataclass
class ImageGrants:
    """What CRIU's images would give the restored processes, as read from them."""

    capabilities: set[str] = field(default_factory=set)
    unfiltered: list[int] = field(default_factory=list)  # PIDs with no seccomp filter
    filter_heads: dict[int, int] = field(default_factory=dict)  # seccomp.img index -> a PID under it
    let_through: set[str] = field(default_factory=set)  # always-refused calls a restored filter allows
    host_namespaces: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)  # "mount FSTYPE SOURCE at MOUNTPOINT", "leave ..."
    cgroups: CgroupGrants = field(default_factory=CgroupGrants)
    tasks: int = 0


def _entries(path: Path, magic: int) -> list[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise PreconditionError(f"CRIU's image {path.name} cannot be read: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > IMAGE_MAX_BYTES:
            raise PreconditionError(f"CRIU's image {path.name} is not a CRIU image (too large or not a file)")
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read(IMAGE_MAX_BYTES + 1)
    finally:
        os.close(fd)
    heads = [magic] if magic == INVENTORY_MAGIC else [IMG_COMMON_MAGIC, magic]
    pos = 0
    for expected in heads:
        if int.from_bytes(raw[pos : pos + 4], "little") != expected:
            raise PreconditionError(
                f"CRIU's image {path.name} does not start with its magic: not a CRIU image"
            )
        pos += 4
    out = []
    while pos < len(raw):
        length = int.from_bytes(raw[pos : pos + 4], "little")
        pos += 4
        if pos + length > len(raw):
            raise PreconditionError(f"CRIU's image {path.name} is truncated")
        out.append(raw[pos : pos + length])
        pos += length
    return out


def _caps(words: Iterable[int]) -> set[str]:
    names = set()
    for index, word in enumerate(words):
        for bit in range(32):
            if word >> bit & 1:
                number = index * 32 + bit
                names.add(f"CAP_{CAP_NAMES[number]}" if number < len(CAP_NAMES) else f"capability {number}")
    return names


def read_grants(image_dir: Path, machine: str = "") -> ImageGrants:
    """Read the grants of every task in an image directory; `machine` (platform.machine()) names
    the ABIs whose calls each restored seccomp filter is run on. Raises PreconditionError when an
    image it needs is missing or malformed (a restore of it would fail in CRIU anyway)."""
    grants = ImageGrants()
    try:
        inventory = _entries(image_dir / "inventory.img", INVENTORY_MAGIC)
        pstree = _entries(image_dir / "pstree.img", PSTREE_MAGIC)
        if not inventory or not pstree:
            raise ValueError("empty inventory or process tree")
        if len(pstree) > MAX_TASKS:
            raise ValueError(f"more than {MAX_TASKS} processes")
        root_ids = message(inventory[0], 3)  # the dumping CRIU's own namespaces
        dumping_ids = fields(root_ids) if root_ids is not None else None
        for index, entry in enumerate(pstree):
            pid = fields(entry).get(1)
            if not isinstance(pid, int):
                raise ValueError("a process without a PID")
            grants.tasks += 1
            state = _read_core(image_dir / f"core-{pid}.img", pid, grants)
            if state in (TASK_DEAD, TASK_HELPER):
                continue  # a zombie or helper: CRIU reads no thread cores for it (its list may be junk)
            for thread in repeated_uint(entry, 5)[:MAX_TASKS]:
                if thread != pid:
                    _read_core(image_dir / f"core-{thread}.img", thread, grants)
            _read_ids(image_dir, pid, dumping_ids, grants, root=index == 0)
        mounts = []
        for table in sorted(image_dir.glob("mountpoints-*.img")):
            mounts += parse_mounts(_entries(table, MNTS_MAGIC))
        grants.mounts = mount_reaching(mounts)
        if grants.filter_heads:
            _run_filters(_entries(image_dir / "seccomp.img", SECCOMP_MAGIC), machine, grants)
        if (image_dir / "cgroup.img").exists():  # absent when the dump ignored cgroups
            grants.cgroups = read_cgroups(_entries(image_dir / "cgroup.img", CGROUP_MAGIC))
    except ValueError as exc:
        raise PreconditionError(f"CRIU's images in {image_dir} are malformed: {exc}") from exc
    return grants


def _read_core(path: Path, pid: int, grants: ImageGrants) -> int | None:
    """One thread's credentials and seccomp mode; returns the task's state (task_core_entry)."""
    entries = _entries(path, CORE_MAGIC)
    task_core = message(entries[0], 3) if entries else None
    state = fields(task_core).get(1) if task_core is not None else None
    if state in (TASK_DEAD, TASK_HELPER):
        return int(state)  # nothing of it runs again
    thread_core = message(entries[0], 5) if entries else None
    if thread_core is None:
        raise ValueError(f"{path.name} has no thread core")
    creds = message(thread_core, 10)
    if creds is not None:
        for number in (9, 10, 11, 12, 19):  # inheritable, permitted, effective, bounding, ambient
            grants.capabilities |= _caps(repeated_uint(creds, number))
    core = fields(thread_core)
    mode = core.get(11, SECCOMP_DISABLED)
    if mode == SECCOMP_DISABLED:
        grants.unfiltered.append(pid)
    elif mode == SECCOMP_FILTER:
        head = core.get(12, 0)
        if not isinstance(head, int):
            raise ValueError(f"{path.name} names no seccomp filter")
        grants.filter_heads.setdefault(head, pid)
    return state if isinstance(state, int) else None


def _read_ids(
    image_dir: Path, pid: int, host: dict[int, int | bytes] | None, grants: ImageGrants, root: bool
) -> None:
    """The namespaces CRIU creates are those where the root task's differ from the dumping
    CRIU's: an equal ID puts the restored container into the restoring CRIU's, the host's. Any
    other task whose ID equals CRIU's is put there too (a task without ids inherits its parent's)."""
    path = image_dir / f"ids-{pid}.img"
    entries = _entries(path, IDS_MAGIC) if root or path.exists() else []
    if root and (host is None or not entries):
        raise ValueError("no namespace IDs for the root task")
    if host is None or not entries:
        return
    task = fields(entries[0])
    for number, kind in NAMESPACE_IDS.items():
        if number in task and task.get(number) == host.get(number) and kind not in grants.host_namespaces:
            grants.host_namespaces.append(kind)


def _run_filters(entries: list[bytes], machine: str, grants: ImageGrants) -> None:
    """Each task's filter chain as CRIU restores it (the filter its core names, then each `prev`),
    run on the calls every engine refuses."""
    filters: list[tuple[Program, int | bytes | None]] = []
    for item in repeated_bytes(entries[0] if entries else b"", 1):
        raw = repeated_bytes(item, 1)
        if not raw:
            raise ValueError("a seccomp filter without its program")
        filters.append((parse(raw[-1]), fields(item).get(2)))
    for head in grants.filter_heads:
        chain: list[Program] = []
        index: int | bytes | None = head
        while index is not None:
            if not isinstance(index, int) or index >= len(filters) or len(chain) >= MAX_FILTER_CHAIN:
                raise ValueError(f"seccomp filter {index!r} is not in seccomp.img (or a chain loops)")
            program, index = filters[index]
            chain.append(program)
        grants.let_through |= let_through(chain, machine)


def reaching(
    grants: ImageGrants,
    allowed_caps: set[str],
    own_namespaces: set[str],
    seccomp: bool,
    cgroup_mode: str | None = None,
) -> list[str]:
    """What the images grant beyond what the spec allows (`allowed_caps`, the namespaces it makes
    its own, whether it confines the container with seccomp) and what CRIU's cgroup handling
    (`cgroup_mode`, runc's --manage-cgroups-mode; soft when None) would apply, one line each."""
    found = []
    extra = sorted(grants.capabilities - allowed_caps)
    if extra:
        found.append("CRIU's images restore privileges beyond the engines' defaults: " + ", ".join(extra))
    shared = [kind for kind in grants.host_namespaces if kind in own_namespaces]
    if shared:
        found.append(
            "CRIU's images put the container into this host's " + ", ".join(shared) + " namespace"
            + ("s" if len(shared) > 1 else "")
        )  # fmt: skip
    if seccomp and grants.unfiltered:
        pids = ", ".join(str(pid) for pid in grants.unfiltered[:5])
        found.append(f"CRIU's images restore processes without a seccomp filter (pid {pids})")
    if seccomp and grants.let_through:
        calls = ", ".join(sorted(grants.let_through)[:8])
        more = f" and {len(grants.let_through) - 8} more" if len(grants.let_through) > 8 else ""
        found.append(f"CRIU's images restore a seccomp filter that lets through {calls}{more}")
    found += [f"CRIU's images {mount}" for mount in grants.mounts]
    outside = grants.cgroups.outside
    if outside:
        more = f" and {len(outside) - 4} more" if len(outside) > 4 else ""
        found.append(
            "CRIU's images put processes or cgroups outside the container's cgroup: "
            + ", ".join(outside[:4])
            + more
        )
    if cgroup_mode == "full" and grants.cgroups.own_properties:
        props = sorted(
            grants.cgroups.own_properties, key=lambda name: (not name.startswith("devices."), name)
        )
        names = ", ".join(props[:6]) + (f" and {len(props) - 6} more" if len(props) > 6 else "")
        found.append(
            "--manage-cgroups-mode full sets the container's cgroup limits and device rules from CRIU's "
            f"images ({names}), not from its spec"
        )
    return found
