"""How much memory a process may still take before its memory cgroup (or an ancestor's) stops it.

A CUDA checkpoint copies the process's GPU memory into the process's own memory (cuda-checkpoint
#33): anonymous pages charged to the container's cgroup. A limit below that makes the kernel's OOM
killer end the process inside the checkpoint meant to save it. What is left under a limit is
counted as the kubelet counts a working set (usage less inactive file pages, which the kernel
reclaims first), plus what swap may still take: cgroup v2's `memory.swap.max` (absent: swap is not
accounted, the host's free swap), cgroup v1's `memory.memsw.limit_in_bytes` capping memory and swap
together. Every ancestor's limit applies too (a Kubernetes pod's, a systemd slice's).

Files are read through `host_path`, so tests point CRGPU_HOST_ROOT at fixture trees.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from crgpu.host.proc_cgroups import process_cgroups
from crgpu.host.root import host_path, read_host_text

CGROUP_ROOT = "/sys/fs/cgroup"
# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit value; anything this large is none.
_UNLIMITED_V1 = 1 << 62


@dataclass(frozen=True)
class Room:
    """What one cgroup leaves: `bytes` more may be charged before its limit stops the process."""

    cgroup: str  # as /proc/PID/cgroup names it
    bytes: int
    limit: int
    in_use: int
    swap: int  # of `bytes`, what swap may take

    def describe(self) -> str:
        gib = 2**30
        return (
            f"cgroup {self.cgroup}: limit {self.limit / gib:.1f} GiB, in use {self.in_use / gib:.1f} GiB, "
            f"swap room {self.swap / gib:.1f} GiB"
        )


def memory_cgroup(pid: int) -> tuple[str, str] | None:
    """(version, path) of the process's memory cgroup: ("v1", "/a/b") where a v1 memory hierarchy
    holds it, else ("v2", "/a/b")."""
    found = process_cgroups(pid)
    for hierarchy, path in found.items():
        if "memory" in hierarchy.split(","):
            return "v1", path
    return ("v2", found[""]) if "" in found else None


def container_memory_bytes(pid: int | None) -> int:
    """A container's memory use: its memory cgroup's counter, else its init process's RSS."""
    if not pid:
        return 0
    where = memory_cgroup(pid)
    if where is not None:
        version, path = where
        counter = (
            f"{CGROUP_ROOT}{path.rstrip('/')}/memory.current"
            if version == "v2"
            else f"{CGROUP_ROOT}/memory{path.rstrip('/')}/memory.usage_in_bytes"
        )
        used = _number(counter)
        if used is not None:
            return used
    rss = meminfo_field(f"/proc/{pid}/status", "VmRSS:")
    return rss or 0


def _number(path: str) -> int | None:
    text = read_host_text(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat(path: str, key: str) -> int:
    for line in (read_host_text(path) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def meminfo_field(path: str, key: str) -> int | None:
    """A `Key:  N kB` line of /proc/meminfo or /proc/PID/status, in bytes; None when absent."""
    for line in (read_host_text(path) or "").splitlines():
        if line.startswith(key):
            try:
                return int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                return None
    return None


def host_memory_available() -> int | None:
    """MemAvailable of the host, in bytes (None when unknown)."""
    return meminfo_field("/proc/meminfo", "MemAvailable:")


def host_swap_free() -> int:
    return meminfo_field("/proc/meminfo", "SwapFree:") or 0


def _room_v2(cgroup: str, swap_free: int) -> Room | None:
    base = f"{CGROUP_ROOT}{cgroup.rstrip('/')}"
    limit = _number(f"{base}/memory.max")
    if limit is None:
        return None  # no limit here ("max"), or no memory controller in this cgroup
    usage = _number(f"{base}/memory.current") or 0
    in_use = max(0, usage - _stat(f"{base}/memory.stat", "inactive_file"))
    swap = swap_free
    if host_path(f"{base}/memory.swap.max").exists():
        swap_limit = _number(f"{base}/memory.swap.max")  # None: "max"
        if swap_limit is not None:
            swap = min(swap, max(0, swap_limit - (_number(f"{base}/memory.swap.current") or 0)))
    return Room(cgroup, max(0, limit - in_use) + swap, limit, in_use, swap)


def _room_v1(cgroup: str, swap_free: int) -> Room | None:
    base = f"{CGROUP_ROOT}/memory{cgroup.rstrip('/')}"
    limit = _number(f"{base}/memory.limit_in_bytes")
    if limit is None or limit >= _UNLIMITED_V1:
        return None
    usage = _number(f"{base}/memory.usage_in_bytes") or 0
    in_use = max(0, usage - _stat(f"{base}/memory.stat", "total_inactive_file"))
    swap = swap_free
    both = _number(f"{base}/memory.memsw.limit_in_bytes")
    if both is not None and both < _UNLIMITED_V1:
        # memsw caps memory and swap together: swap may take what memsw leaves beyond the memory limit.
        both_used = _number(f"{base}/memory.memsw.usage_in_bytes") or usage
        swap = min(swap, max(0, (both - both_used) - max(0, limit - usage)))
    return Room(cgroup, max(0, limit - in_use) + swap, limit, in_use, swap)


def _ancestors(cgroup: str) -> list[str]:
    path = PurePosixPath(cgroup if cgroup.startswith("/") else "/" + cgroup)
    return [str(p) for p in [path, *path.parents] if str(p) != "/"]


def short_of(needs: Iterable[tuple[int, int]]) -> tuple[Room, int] | None:
    """For (pid, bytes it will be charged) pairs: the first cgroup, the processes' own or an
    ancestor's, that cannot take what lands beneath it, with what lands there; None when all can."""
    swap_free = host_swap_free()
    landing: dict[tuple[str, str], int] = {}
    for pid, nbytes in needs:
        where = memory_cgroup(pid)
        if where is None or nbytes <= 0:
            continue
        version, leaf = where
        for cgroup in _ancestors(leaf):
            landing[(version, cgroup)] = landing.get((version, cgroup), 0) + nbytes
    for (version, cgroup), nbytes in landing.items():
        room = (_room_v2 if version == "v2" else _room_v1)(cgroup, swap_free)
        if room is not None and nbytes > room.bytes:
            return room, nbytes
    return None
