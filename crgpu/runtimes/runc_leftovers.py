"""What a runc restore that was stopped leaves for its ID, taken back: the `criu-root` mount and
state dir, and the cgroups runc made. Standard library only."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from crgpu.host.mounts import mount_points_below, mountinfo_lines, unescape, unmount
from crgpu.host.proc_cgroups import process_cgroups
from crgpu.runtimes.state import read_bundle_spec


def release_state_dir(root: Path, container_id: str) -> None:
    """A runc restore that was stopped leaves its state dir without state.json, with `criu-root`
    (a bind mount of the bundle's rootfs) mounted in it: runc then calls the ID taken, and the
    `runc delete -f` an operator tries next removes the state dir recursively, through that
    mount, emptying the bundle's rootfs. The ID was free under the lock: this dir is this run's."""
    state_dir = root / container_id
    if not state_dir.is_dir() or (state_dir / "state.json").exists():
        return
    for point in mount_points_below(state_dir):
        unmount(point, detach=True)
    if mount_points_below(state_dir):
        return
    for leftover in (state_dir / "criu-root", state_dir):
        try:
            os.rmdir(leftover)  # empty directories only: never anything recursive here
        except OSError:
            pass


@dataclass(frozen=True)
class CgroupClaim:
    """The cgroup directories a runc restore may make that did not exist before it ran. runc
    removes them when a restore fails by itself, not when crgpu stops a looping one: the cgroups
    then stay (one per hierarchy, ten on a cgroup v1 node) for every stopped try."""

    made: tuple[Path, ...]

    def release(self) -> None:
        # rmdir only: a cgroup that holds a process or a child cgroup is refused by the kernel,
        # so nothing that runs (or anyone else's cgroup under a shared parent) is touched.
        for directory in sorted(self.made, key=lambda path: -len(path.parts)):
            try:
                os.rmdir(directory)
            except OSError:
                pass


def claim_cgroups(bundle: Path, container_id: str) -> CgroupClaim:
    """Before a runc restore: where runc's cgroupfs manager will put the container (its spec's
    `cgroupsPath`, else the ID), and which directories on those paths are not there yet."""
    made: list[Path] = []
    for leaf in runc_cgroup_dirs(_inner_path(bundle, container_id)):
        chain = [leaf, *leaf.parents]
        for directory in chain:
            if directory.exists():
                break
            made.append(directory)
    return CgroupClaim(tuple(dict.fromkeys(made)))


def _inner_path(bundle: Path, container_id: str) -> str:
    linux = read_bundle_spec(bundle).get("linux")
    path = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    return path if isinstance(path, str) and path else container_id


def runc_cgroup_dirs(inner: str) -> list[Path]:
    """runc's cgroupfs rule (opencontainers/cgroups fs/paths.go `subsysPath`, fs2/defaultpath.go):
    an absolute path lies under each hierarchy's mount point, a relative one under runc's own
    cgroup there (crgpu's: runc is its child; v2 takes that cgroup's parent). The path is cleaned
    as runc cleans it, so `..` never leaves a hierarchy."""
    absolute = inner.startswith("/")
    cleaned = posixpath.normpath("/" + inner).lstrip("/")
    if not cleaned:
        return []
    own = process_cgroups("self")
    dirs: list[Path] = []
    for mount in _cgroup_mounts():
        if absolute:
            dirs.append(mount.point / cleaned)
            continue
        path = own.get(mount.key)
        if path is None:
            continue
        relative = posixpath.relpath(path, mount.root) if path.startswith(mount.root) else None
        if relative is None or relative.startswith(".."):
            continue
        below = mount.point / relative if relative != "." else mount.point
        dirs.append(below / cleaned)
        if mount.key == "" and below != mount.point:
            dirs.append(below.parent / cleaned)
    return dirs


V1_CONTROLLERS = frozenset(
    "cpu cpuacct cpuset memory devices freezer net_cls net_prio blkio perf_event hugetlb pids rdma misc".split()
)


@dataclass(frozen=True)
class _CgroupMount:
    point: Path
    root: str
    key: str  # the hierarchy's controllers as /proc/self/cgroup names them; "" for cgroup2


def _cgroup_mounts() -> list[_CgroupMount]:
    mounts = []
    for line in mountinfo_lines():
        head, _, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if len(fields) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
            continue
        if rest[0] == "cgroup2":
            key = ""
        else:
            options = rest[2].split(",")
            named = [option for option in options if option.startswith("name=")]
            key = ",".join(sorted(named or [option for option in options if option in V1_CONTROLLERS]))
        mounts.append(_CgroupMount(Path(unescape(fields[4])), unescape(fields[3]), key))
    return mounts
