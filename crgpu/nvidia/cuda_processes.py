"""The candidate CUDA processes of a container: the processes of its cgroup (what the runtime and
CRIU dump: a sibling container sharing its PID namespace is not in it, nor, for a container without
a PID namespace of its own, the whole host) that hold /dev/nvidia* open or mapped or map libcuda,
and their PIDs inside and outside the namespace. Which of them the driver can checkpoint only the
driver can say (cuda_flow.classify)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from crgpu.host.proc_cgroups import process_cgroups
from crgpu.host.root import host_path


# ---------------------------------------------------------------- the container's CUDA processes
@dataclass(frozen=True)
class CudaProcess:
    host_pid: int
    ns_pid: int
    comm: str
    # It holds /dev/nvidia* open: CRIU cannot dump it unless the driver takes its GPU state away.
    holds_device: bool = False


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(host_path(f"/proc/{pid}/ns/pid"))
    except OSError:
        return None


def _ns_pid(pid: int) -> int:
    try:
        for line in host_path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])  # the innermost namespace: the container's view
    except (OSError, ValueError):
        pass
    return pid


def _holds_device(pid: int) -> bool:
    """/dev/nvidia* open, or mapped: a forked worker (PyTorch's DataLoader) keeps its parent's
    device mappings without a CUDA context of its own, and CRIU cannot dump those either."""
    fd_dir = host_path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            try:
                if os.readlink(fd).startswith("/dev/nvidia"):
                    return True
            except OSError:
                continue
    except OSError:
        pass
    return any(path.startswith("/dev/nvidia") for path in _mapped_paths(pid))


def _mapped_paths(pid: int) -> list[str]:
    try:
        text = host_path(f"/proc/{pid}/maps").read_text(errors="replace")
    except OSError:
        return []
    # address perms offset dev inode path: the path is the sixth field, and may hold spaces
    return [
        fields[5] for fields in (line.split(maxsplit=5) for line in text.splitlines()) if len(fields) == 6
    ]


def _maps_libcuda(pid: int) -> bool:
    return any("libcuda.so" in path for path in _mapped_paths(pid))


def _cgroup(pid: int) -> tuple[str, str] | None:
    """The process's cgroup as (hierarchy, path): cgroup v2's ("", path), else its first v1
    hierarchy's (controllers, path)."""
    found = process_cgroups(pid)
    if "" in found:
        return "", found[""]
    return next(iter(found.items()), None)


def _inside(cgroup: tuple[str, str] | None, container: tuple[str, str]) -> bool:
    if cgroup is None or cgroup[0] != container[0]:
        return False
    return cgroup[1] == container[1] or cgroup[1].startswith(container[1].rstrip("/") + "/")


def container_processes(init_pid: int) -> list[int]:
    """Every process of the container: in its init's PID namespace and in its init's cgroup or
    one beneath it. Where the cgroup cannot be read (a fixture tree, a host without /proc/PID/cgroup),
    the PID namespace alone."""
    namespace = _pid_namespace(init_pid)
    if namespace is None:
        return []
    cgroup = _cgroup(init_pid)
    found = []
    for entry in host_path("/proc").iterdir():
        if not entry.name.isdigit() or _pid_namespace(int(entry.name)) != namespace:
            continue
        if cgroup is not None and cgroup[1] != "/" and not _inside(_cgroup(int(entry.name)), cgroup):
            continue
        found.append(int(entry.name))
    return sorted(found)


def cuda_processes(init_pid: int) -> list[CudaProcess]:
    """The container's processes that hold /dev/nvidia* open or map libcuda."""
    result = []
    for pid in container_processes(init_pid):
        device = _holds_device(pid)
        if device or _maps_libcuda(pid):
            try:
                comm = host_path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                comm = "?"
            result.append(CudaProcess(host_pid=pid, ns_pid=_ns_pid(pid), comm=comm, holds_device=device))
    return result


def host_pids_for(init_pid: int, ns_pids: list[int]) -> dict[int, int]:
    """After a restore: the host PID now behind each container-side PID."""
    wanted = set(ns_pids)
    mapping = {}
    for pid in container_processes(init_pid):
        ns = _ns_pid(pid)
        if ns in wanted:
            mapping[ns] = pid
    return mapping
