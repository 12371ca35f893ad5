"""The candidate CUDA processes of a container: its PID namespace's processes that hold
/dev/nvidia* open or map libcuda, and their PIDs inside and outside the namespace. Which of them
the driver can checkpoint only the driver can say (cuda_flow.classify)."""

from __future__ import annotations

import os
from dataclasses import dataclass

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
    return False


def _maps_libcuda(pid: int) -> bool:
    try:
        return "libcuda.so" in host_path(f"/proc/{pid}/maps").read_text(errors="replace")
    except OSError:
        return False


def container_processes(init_pid: int) -> list[int]:
    """Every process in the PID namespace of the container's init process."""
    namespace = _pid_namespace(init_pid)
    if namespace is None:
        return []
    found = []
    for entry in host_path("/proc").iterdir():
        if entry.name.isdigit() and _pid_namespace(int(entry.name)) == namespace:
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
