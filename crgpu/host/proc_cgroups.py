"""A process's cgroups as /proc/PID/cgroup lists them, read once for every caller (its container's
processes, its memory cgroup, runc's leftovers): `N:cpu,cpuacct:/path`, `N:name=systemd:/path`,
`0::/path`. Standard library only; through `read_host_text`, so tests use fixture trees."""

from __future__ import annotations

from crgpu.host.root import read_host_text


def process_cgroups(pid: int | str) -> dict[str, str]:
    """Hierarchy -> path, in the file's order: the hierarchy its controllers sorted and joined
    (`cpu,cpuacct`, `name=systemd`), "" for cgroup v2. Empty when the file cannot be read."""
    found: dict[str, str] = {}
    for line in (read_host_text(f"/proc/{pid}/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[2].startswith("/"):
            found[",".join(sorted(parts[1].split(","))) if parts[1] else ""] = parts[2]
    return found
