"""CUDA around the runtime: which mode checkpoints a GPU container, and the driver-API session.

In driver-api mode crgpu locks and checkpoints every CUDA process (GPU memory moves into host
memory), lets CRIU dump plain processes, and afterwards restores and unlocks them. Whatever fails,
every process it touched is restored and unlocked again before the failure is reported.
"""

from __future__ import annotations

import platform
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from crgpu.criu.binary import cuda_plugin_path
from crgpu.host.cgroup_memory import host_memory_available, short_of
from crgpu.host.errors import PreconditionError
from crgpu.host.process import query_stdout
from crgpu.host.signals import interrupts_raised, signals_noted
from crgpu.nvidia import gpu, gpu_map
from crgpu.nvidia.bindings_line import MIN_DRIVER_API
from crgpu.nvidia.cuda_api import STATES, CudaDriver, CudaError
from crgpu.nvidia.cuda_helper import HelperDriver
from crgpu.nvidia.cuda_processes import CudaProcess, cuda_processes
from crgpu.nvidia.evidence import spec_env
from crgpu.nvidia.gpu import GpuUse, driver_version
from crgpu.options.models import CudaMode

RETRIES = 2
SETTLE_S = 1.0


def select_mode(
    requested: CudaMode, gpu: bool, runtime: str, container_id: str, evidence: tuple[str, ...] = ()
) -> tuple[str, list[str]]:
    """The mode this checkpoint uses, and what to tell the operator about the choice."""
    if runtime == "runsc":
        if requested not in ("auto", "off"):
            raise PreconditionError(
                f"--cuda {requested} is for runc; runsc checkpoints GPU state in the sandbox itself",
                hint="drop --cuda; give --cuda-checkpoint-path for a runsc GPU container",
            )
        return ("runsc" if gpu else "off"), []
    if requested == "off" or not gpu:
        notes = ["--cuda off: GPU state is not handled; CRIU will meet the GPU as it is"] if gpu else []
        return "off", notes
    plugin = cuda_plugin_path()
    cuda_checkpoint = shutil.which("cuda-checkpoint")
    driver = driver_version()
    machine = platform.machine()
    plugin_ready = plugin is not None and cuda_checkpoint is not None and machine == "x86_64"
    api_ready = driver is not None and driver.major >= MIN_DRIVER_API
    why_not_plugin = (
        f"NVIDIA's cuda-checkpoint is built for x86-64 only, and this node is {machine}"
        if machine != "x86_64"
        else "CRIU's cuda_plugin.so is missing"
        if plugin is None
        else "cuda-checkpoint is not on PATH"
    )
    why_not_api = (
        "no NVIDIA driver" if driver is None else f"driver {driver.version} is below {MIN_DRIVER_API}"
    )
    if requested == "plugin" or (requested == "auto" and plugin_ready):
        if not plugin_ready:
            raise PreconditionError(
                f"--cuda plugin: {why_not_plugin}",
                hint="install CRIU's CUDA plugin and cuda-checkpoint, or use --cuda driver-api",
            )
        return "plugin", [f"CUDA through CRIU's plugin ({plugin}) and {cuda_checkpoint}"]
    if requested == "driver-api" or (requested == "auto" and api_ready):
        if not api_ready:
            raise PreconditionError(
                f"--cuda driver-api: {why_not_api}", hint="needs NVIDIA driver 570 or newer"
            )
        return "driver-api", [
            f"CUDA through the driver's checkpoint API (driver {driver.version if driver else '?'})"
        ]
    why_gpu = f" (its spec: {', '.join(evidence)})" if evidence else ""
    raise PreconditionError(
        f"container {container_id!r} uses a GPU{why_gpu}, and this node can checkpoint CUDA neither "
        f"through CRIU's plugin ({why_not_plugin}) nor through the driver API ({why_not_api})",
        hint="install NVIDIA driver 570+ (driver API), or CRIU's cuda_plugin.so with cuda-checkpoint; if it "
        "holds no GPU state, checkpoint it with --cuda off",
    )


def classify(
    driver: CudaDriver, candidates: list[CudaProcess]
) -> tuple[list[CudaProcess], list[tuple[CudaProcess, str]]]:
    """Ask the driver, as gVisor and CRIU's plugin do: a candidate whose checkpoint state it
    reports as running is a CUDA process it can take; NVML-only processes, forked children
    without a context and the like fail the query, and are returned with the reason."""
    accepted: list[CudaProcess] = []
    skipped: list[tuple[CudaProcess, str]] = []
    for proc in candidates:
        try:
            state = driver.state(proc.host_pid)
        except CudaError as exc:
            skipped.append((proc, exc.message))
            continue
        if state == "running":
            accepted.append(proc)
        else:
            skipped.append((proc, f"its CUDA state is {state}, not running"))
    return accepted, skipped


def cuda_process_set(
    driver: CudaDriver, init_pid: int, container_id: str
) -> tuple[list[CudaProcess], list[tuple[CudaProcess, str]]]:
    """The container's CUDA processes as the driver sees them. One that the driver will not take
    but that holds /dev/nvidia* open or mapped would make CRIU fail on the device: refused."""
    accepted, skipped = classify(driver, cuda_processes(init_pid))
    blocking = [(p, why) for p, why in skipped if p.holds_device]
    if blocking:
        raise PreconditionError(
            f"container {container_id!r} has processes holding the GPU device that the driver cannot checkpoint: "
            + "; ".join(f"pid {p.ns_pid} ({p.comm}): {why}" for p, why in blocking),
            hint="stop them (NVML monitors, forked workers without a CUDA context, such as a DataLoader's) "
            "or checkpoint with --leave-running after they exit; CRIU cannot dump a process holding "
            "/dev/nvidia*; nothing was locked",
        )
    return accepted, skipped


@dataclass
class DriverApiSession:
    """The CUDA processes of one container, and how far each has been taken."""

    driver: CudaDriver
    processes: list[CudaProcess]
    lock_timeout_ms: int
    state: dict[int, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    gpu_bytes: int = 0
    # NVML's view at the checkpoint: which GPUs each process (host PID) uses, and how much.
    gpu_use: dict[int, GpuUse] = field(default_factory=dict)
    interrupted_by: int | None = None  # a signal that came during the give-back

    def _timed(self, phase: str, started: float) -> None:
        self.timings[phase] = self.timings.get(phase, 0.0) + time.monotonic() - started

    def suspend(self) -> None:
        """Lock every process, then checkpoint every one; on any failure (of any kind, Ctrl-C
        included) put them all back, and raise the first failure."""
        self.gpu_use = gpu.process_gpu_use([p.host_pid for p in self.processes])
        self.gpu_bytes = sum(use.bytes for use in self.gpu_use.values())
        self._check_memory()
        self.expect_bytes({pid: use.bytes for pid, use in self.gpu_use.items()})
        try:
            # SIGTERM and SIGHUP, like Ctrl-C, end here in the give-back below, never in a process
            # left locked or checkpointed by a crgpu that was killed outright.
            with interrupts_raised():
                started = time.monotonic()
                for proc in self.processes:
                    self.driver.lock(proc.host_pid, self.lock_timeout_ms)
                    self.state[proc.host_pid] = "locked"
                self._timed("cuda_lock_time", started)
                started = time.monotonic()
                for proc in self.processes:
                    self.driver.checkpoint(proc.host_pid)
                    self.state[proc.host_pid] = "checkpointed"
                self._timed("cuda_checkpoint_time", started)
        except BaseException as exc:
            problems = self.resume()
            if problems and isinstance(exc, CudaError):
                exc.detail = [*exc.detail, *problems]
            raise

    def expect_bytes(self, nbytes: dict[int, int]) -> None:
        """GPU bytes per host PID: a driver in a helper process sets its deadlines by them."""
        if isinstance(self.driver, HelperDriver):
            for pid, count in nbytes.items():
                self.driver.expect_bytes(pid, count)

    def _check_memory(self) -> None:
        """The driver copies each process's GPU memory into that process's own memory: the host
        must have it, and so must the memory cgroup the process is charged to (its container's,
        and every ancestor's: a pod's, a slice's). Checked before anything is locked."""
        gib = 2**30
        available = host_memory_available()
        if available is not None and self.gpu_bytes > available:
            raise PreconditionError(
                f"the container's CUDA processes hold {self.gpu_bytes / gib:.1f} GiB of GPU memory, which "
                f"the driver copies into host memory; this host has {available / gib:.1f} GiB available",
                hint="free host memory first; nothing was locked",
            )
        short = short_of((pid, use.bytes) for pid, use in self.gpu_use.items())
        if short is not None:
            room, need = short
            raise PreconditionError(
                f"the container's CUDA processes would copy {need / gib:.1f} GiB of GPU memory into their own "
                f"memory, and their memory cgroup leaves {room.bytes / gib:.1f} GiB: the kernel would kill "
                f"them inside the checkpoint ({room.describe()})",
                hint=f"raise the container's memory limit by {(need - room.bytes) / gib:.1f} GiB or more, or "
                "free GPU memory in it first; nothing was locked",
            )

    def resume(self, device_map: dict[str, str] | None = None) -> list[str]:
        """Restore what was checkpointed and unlock what was locked, every process, retrying once.
        Returns the problems left (empty when every process runs again). A signal meanwhile is
        noted (`interrupted_by`), not obeyed: the give-back is what a signal must not cut short."""
        with signals_noted(self._note_signal):
            problems = self._resume(device_map)
            # A lock whose call crgpu gave up on may still land after the give-back (cuda-checkpoint
            # #30): look again, a moment later where a call was killed, and give back once more.
            if isinstance(self.driver, HelperDriver) and self.driver.killed_a_call:
                time.sleep(SETTLE_S)
            for proc in self.processes:
                self._reread(proc.host_pid)
            if not problems and any(
                self.state.get(p.host_pid) in ("locked", "checkpointed") for p in self.processes
            ):
                problems = self._resume(device_map)
            return problems

    def _note_signal(self, signum: int) -> None:
        if self.interrupted_by is None:
            self.interrupted_by = signum

    def _resume(self, device_map: dict[str, str] | None) -> list[str]:
        problems: list[str] = []
        for proc in self.processes:
            self._reread(proc.host_pid)
        started = time.monotonic()
        for proc in self.processes:
            if self.state.get(proc.host_pid) == "checkpointed":
                error = self._retry(lambda pid=proc.host_pid: self.driver.restore(pid, device_map))
                if error:
                    problems.append(f"pid {proc.host_pid} ({proc.comm}): GPU restore failed: {error}")
                    continue
                self.state[proc.host_pid] = "locked"
        self._timed("cuda_restore_time", started)
        started = time.monotonic()
        for proc in self.processes:
            if self.state.get(proc.host_pid) == "locked":
                error = self._retry(lambda pid=proc.host_pid: self.driver.unlock(pid))
                if error:
                    problems.append(f"pid {proc.host_pid} ({proc.comm}): unlock failed: {error}")
                    continue
                self.state[proc.host_pid] = "running"
        self._timed("cuda_unlock_time", started)
        return problems

    def _reread(self, pid: int) -> None:
        """What the driver says now wins over what crgpu recorded (a call may have half-happened)."""
        try:
            state = self.driver.state(pid)
        except Exception:
            return
        if state in ("locked", "checkpointed", "running"):
            self.state[pid] = state

    @staticmethod
    def _retry(step: object) -> str | None:
        """One more try for a transient failure; none after an out-of-memory (NVIDIA: it stays)."""
        last = None
        for _ in range(RETRIES):
            try:
                step()  # type: ignore[operator]
                return None
            except Exception as exc:  # every error on the way back, not only the bindings' type
                last = exc.message if isinstance(exc, CudaError) else f"{type(exc).__name__}: {exc}"
                if "OUT_OF_MEMORY" in last:
                    break
        return last

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {name: int(seconds * 1_000_000) for name, seconds in self.timings.items()}
        out["gpu_bytes"] = self.gpu_bytes
        checkpoint_s = self.timings.get("cuda_checkpoint_time", 0.0)
        if self.gpu_bytes and checkpoint_s > 0:
            out["gpu_checkpoint_gbps"] = round(self.gpu_bytes / checkpoint_s / 1e9, 3)
        return out


CUDA_CHECKPOINT_TIMEOUT_S = 30.0


def cuda_checkpoint_state(pid: int) -> str | None:
    """The process's CUDA state as NVIDIA's `cuda-checkpoint --get-state --pid PID` prints it (one
    word), without the bindings; None when it cannot say (no such CUDA process, no tool)."""
    tool = shutil.which("cuda-checkpoint")
    if tool is None:
        return None
    out = query_stdout([tool, "--get-state", "--pid", str(pid)], CUDA_CHECKPOINT_TIMEOUT_S)
    words = (out or "").strip().lower().split()
    return words[0] if words and words[0] in STATES else None


def refuse_mig(spec: dict[str, Any], container_id: str) -> None:
    """The checkpoint API does not support MIG (cuda-checkpoint #42: it fails "out of memory"):
    a container on a MIG-enabled GPU, or given MIG devices, is refused before anything is locked."""
    visible = spec_env(spec).get("NVIDIA_VISIBLE_DEVICES", "")
    named = [item for item in visible.split(",") if item.strip().startswith("MIG-")]
    mig = gpu.mig_enabled_gpus()
    given = gpu_map.given_gpus(spec, gpu.gpus()) if mig else []
    on_mig = sorted(mig if given is None else set(given or []) & mig)
    if named or on_mig:
        raise PreconditionError(
            f"container {container_id!r} uses "
            + (f"MIG devices ({', '.join(named)})" if named else f"MIG-enabled GPUs ({', '.join(on_mig)})")
            + ": NVIDIA's checkpoint API does not support MIG",
            hint="checkpoint it with --cuda off only if it holds no GPU state; or run it on a GPU without MIG",
        )
