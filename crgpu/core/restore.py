"""Restore execution: under the lock, the ID checked again, a looping CRIU stopped, GPU state put back."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from crgpu.core.lazy_pages import finish_daemon, start_daemon
from crgpu.core.plan import RestorePlan
from crgpu.core.plan_restore import refuse_existing
from crgpu.core.result import OperationResult, image_size_figures, new_result, raise_if_interrupted
from crgpu.core.runtime_call import (
    criu_stats,
    require_privileges,
    run_runtime,
    safe_status,
    write_criu_config,
)
from crgpu.criu.logs import criu_log_errors
from crgpu.host.errors import PreconditionError, error_context
from crgpu.host.locks import container_lock
from crgpu.host.mounts import mount_points_below, unmount
from crgpu.host.process import LineSink, Watchdog
from crgpu.image.manifest import prepare_work_dir
from crgpu.nvidia.cuda import load_driver
from crgpu.nvidia.cuda_api import CudaDriver, CudaError
from crgpu.nvidia.cuda_flow import DriverApiSession, cuda_checkpoint_state
from crgpu.nvidia.cuda_processes import CudaProcess, cuda_processes, host_pids_for
from crgpu.nvidia.device_nodes import given_gpu_nodes, sync_gpu_nodes
from crgpu.runtimes.detect import find_container
from crgpu.runtimes.runc_leftovers import CgroupClaim, claim_cgroups, release_state_dir
from crgpu.runtimes.state import read_bundle_spec


def execute_restore(plan: RestorePlan, sink: LineSink, timeout_s: float | None = None) -> OperationResult:
    """The restore; an archive's unpacked files and mounts are taken back whenever it fails
    (the runtime, the watchdog, an interrupt)."""
    try:
        gpu, evidence = plan.gpu
        with error_context(container_id=plan.container_id, gpu=gpu, gpu_evidence=list(evidence)):
            result = _execute_restore(plan, sink, timeout_s)
    except BaseException:
        if plan.archive is not None:
            plan.archive.discard()
        raise
    if plan.archive is not None:
        if result.ok:
            plan.archive.release()
        else:
            plan.archive.discard()
    return result


def _execute_restore(plan: RestorePlan, sink: LineSink, timeout_s: float | None) -> OperationResult:
    opts = plan.options
    require_privileges("restore")
    # An archive's restore took the lock before it unpacked, and holds it still.
    held = plan.archive is not None and plan.archive.holds_lock
    lock = (
        nullcontext() if held else container_lock(plan.adapter.name, plan.root, plan.container_id, opts.wait)
    )
    with lock:
        # Checked again under the lock: another restore may have made the ID while this one waited.
        refuse_existing(plan.container_id, plan.adapter.name, plan.root)
        result = new_result(
            "restore",
            plan.adapter,
            plan.container_id,
            opts.image_dir,
            plan.work_dir,
            plan.invocation,
            plan.gpu,
        )
        prepare_work_dir(plan.work_dir)
        write_criu_config(plan.invocation)
        daemon = start_daemon(plan) if plan.invocation.helper_argv else None
        lazy_s: float | None = None
        logs = plan.adapter.log_paths("restore", plan.work_dir, plan.invocation.global_flags)
        watchdog = _LogWatch(logs) if plan.adapter.name == "runc" else None
        cgroups = claim_cgroups(plan.bundle, plan.container_id) if plan.adapter.name == "runc" else None
        try:
            run_runtime(
                result,
                plan.adapter,
                plan.invocation,
                sink,
                plan.work_dir,
                "restore",
                plan.root,
                timeout_s,
                _watch(watchdog, daemon[0] if daemon else None, plan.work_dir),
            )
        finally:
            if daemon is not None:
                lazy_s = finish_daemon(daemon, result, plan.work_dir)
        if result.ok and plan.options.detach:
            # A detached restore returns once the container runs: no second question to the runtime.
            result.container_status = "running"
        else:
            result.container_status = safe_status(plan.adapter, plan.container_id, plan.root)
        if result.ok:
            result.stats = criu_stats(
                plan.work_dir / "stats-restore", "runtime_restore_duration", result.duration_s
            )
            if plan.adapter.name == "runc":
                result.warnings += _lost_records(plan.work_dir, result.stats, logs)
            result.sizes = image_size_figures(plan.options.image_dir, result.timings.get("runtime_s", 0.0))
            if plan.manifest is not None and plan.manifest.cuda.get("mode") == "driver-api":
                restore_cuda(plan, result)
            elif plan.manifest is not None and plan.manifest.cuda.get("mode") == "plugin":
                verify_cuda_running(plan, result)
            if lazy_s is not None:
                result.stats["time_to_running"] = result.stats["runtime_restore_duration"]
                result.stats["lazy_pages_complete"] = int(lazy_s * 1_000_000)
        elif result.container_status not in (None, "running") and not _said_it_exists(result):
            # A half-restored container would block the next try under the same ID. It is this
            # run's own: the ID was free under the lock, and the runtime did not find it taken.
            plan.adapter.delete(plan.container_id, plan.root)
            result.container_status = safe_status(plan.adapter, plan.container_id, plan.root)
        if not result.ok:
            _release_mounts(plan.work_dir)
            if cgroups is not None and not _said_it_exists(result):
                _release_runc_leftovers(plan, cgroups)
        if watchdog is not None:
            watchdog.cap_logs()  # after the delete: the looping restorer runs inside the container
        raise_if_interrupted(result, plan.adapter, plan.root)
        return result


def _release_runc_leftovers(plan: RestorePlan, cgroups: CgroupClaim) -> None:
    """The ID was free under the lock and runc did not find it taken: what runc left is this run's."""
    release_state_dir(plan.root, plan.container_id)
    cgroups.release()


def _release_mounts(work_dir: Path) -> None:
    """CRIU mounts its cgroup yard (`.criu.cgyard.*`, a tmpfs and one mount per controller) in the
    work directory; a restore that fails before CRIU tidies up (a lazy restore whose pages never
    came, here) leaves them there, a dozen mounts a time. The directory is this restore's own."""
    for point in mount_points_below(work_dir):
        unmount(point, detach=True)


# A restore whose CRIU log passes this has stopped making progress (a damaged image makes CRIU
# log the same failed read forever, ~30 MB/s); a real restore of many GiB logs a few MB.
RESTORE_LOG_CAP_BYTES = 128 * 1024 * 1024


# No new CRIU log line for this long: stuck.
RESTORE_STALL_S = 120.0


class _LogWatch:
    """Stops a runc restore that loops (its CRIU log past the cap) or stalls (silent too long);
    once the runtime is gone, `cap_logs` cuts what the loop wrote down to the cap."""

    def __init__(self, logs: list[Path]) -> None:
        self.logs = logs
        self.last_size = -1
        self.last_change = time.monotonic()
        self.capped = False

    def __call__(self) -> str | None:
        size = 0
        for log in self.logs:
            try:
                size += log.lstat().st_size
            except OSError:
                pass
        now = time.monotonic()
        if size != self.last_size:
            self.last_size, self.last_change = size, now
        if size > RESTORE_LOG_CAP_BYTES:
            self.capped = True
            return (
                f"CRIU's restore log passed {RESTORE_LOG_CAP_BYTES // (1024 * 1024)} MiB: CRIU is "
                "looping, most likely over a damaged or truncated image file (the log is cut there)"
            )
        if now - self.last_change > RESTORE_STALL_S:
            return f"CRIU wrote nothing for {RESTORE_STALL_S:g} s: the restore is stuck"
        return None

    def cap_logs(self) -> None:
        if self.capped:
            for log in self.logs:
                _truncate(log, RESTORE_LOG_CAP_BYTES)


def _watch(
    log_watch: _LogWatch | None, daemon: subprocess.Popen[bytes] | None, work_dir: Path
) -> Watchdog | None:
    """What stops a restore that cannot finish: a looping or silent CRIU, or a lazy-pages daemon
    that died while CRIU waits for its pages (CRIU would wait for ever)."""
    if log_watch is None and daemon is None:
        return None

    def check() -> str | None:
        if daemon is not None and daemon.poll() not in (None, 0):
            errors = criu_log_errors(work_dir / "lazy-pages.log")
            return "CRIU's lazy-pages daemon failed while the restore waited for its pages" + (
                f": {errors[0]}" if errors else ""
            )
        return log_watch() if log_watch is not None else None

    return check


def _truncate(path: Path, size: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _lost_records(work_dir: Path, stats: dict[str, float], logs: list[Path]) -> list[str]:
    """What CRIU could not write during a restore that worked (a full work path does that)."""
    lost = []
    if "restore_time" not in stats:
        lost.append(
            f"CRIU's statistics could not be read from {work_dir / 'stats-restore'} "
            "(is the work path full?): this restore has no CRIU statistics"
        )
    for log in logs:
        try:
            empty = log.lstat().st_size == 0
        except OSError:
            empty = True
        if empty:
            lost.append(f"CRIU's log {log} is missing or empty (is the work path full?)")
    return lost


def _said_it_exists(result: OperationResult) -> bool:
    return any("exist" in line for line in [result.error or "", *result.criu_errors])


def verify_cuda_running(plan: RestorePlan, result: OperationResult) -> None:
    """After a plugin restore: every CUDA process must run. CRIU's plugin disables itself when it
    cannot work (no cuda-checkpoint) and CRIU still reports success, with CUDA left checkpointed."""
    info = find_container(plan.container_id, plan.adapter.name, plan.root)  # type: ignore[arg-type]
    candidates = cuda_processes(info.pid) if info.pid else []
    try:
        ask: Callable[[int], str | None] = _driver_state(load_driver())
    except CudaError as exc:
        # The plugin's own tool answers without the bindings: it is on PATH in exactly this mode.
        if shutil.which("cuda-checkpoint") is None:
            result.warnings.append(
                f"the CUDA processes' state after the plugin restore is not verified: {exc.message}"
            )
            return
        ask = cuda_checkpoint_state
    stuck = []
    for proc in candidates:
        state = ask(proc.host_pid)
        if state is None:
            continue  # not a process the driver checkpoints
        if state != "running":
            stuck.append(f"pid {proc.ns_pid} ({proc.comm}) is {state}")
    if stuck:
        result.ok = False
        result.error = "CRIU's CUDA plugin left processes not running: " + "; ".join(stuck)
        result.hint = "resume them: `crgpu cuda restore --pid PID` then `crgpu cuda unlock --pid PID`"


def _gpu_nodes_of_the_bundle(plan: RestorePlan, init_pid: int | None, result: OperationResult) -> None:
    """The restored /dev holds the image's GPU nodes; the GPU state goes to the bundle's GPUs:
    make the nodes the bundle's before the state moves (nvidia/device_nodes.py)."""
    nodes = given_gpu_nodes(read_bundle_spec(plan.bundle))
    if not nodes or not init_pid:
        return
    try:
        result.notes += sync_gpu_nodes(init_pid, nodes)
    except (PreconditionError, OSError) as exc:
        message = exc.message if isinstance(exc, PreconditionError) else f"{exc.strerror}"
        result.warnings.append(
            f"the restored container's GPU device nodes were left as the image had them: {message}"
        )


def _driver_state(driver: CudaDriver) -> Callable[[int], str | None]:
    def state(pid: int) -> str | None:
        try:
            return driver.state(pid)
        except CudaError:
            return None

    return state


def restore_cuda(plan: RestorePlan, result: OperationResult) -> None:
    """After the runtime restore: put the GPU state back (onto other GPUs if they differ), unlock."""
    assert plan.manifest is not None
    ns_pids = [int(p["ns_pid"]) for p in plan.manifest.cuda.get("processes", [])]
    if not ns_pids:
        return
    info = find_container(plan.container_id, plan.adapter.name, plan.root)  # type: ignore[arg-type]
    mapping = host_pids_for(info.pid or 0, ns_pids)
    missing = [pid for pid in ns_pids if pid not in mapping]
    processes = [CudaProcess(host_pid=mapping[n], ns_pid=n, comm="?") for n in ns_pids if n in mapping]
    session = DriverApiSession(load_driver(), processes, 0)
    session.state = {p.host_pid: "checkpointed" for p in processes}
    held = {int(p["ns_pid"]): int(p.get("gpu_bytes") or 0) for p in plan.manifest.cuda.get("processes", [])}
    session.expect_bytes({mapping[n]: held[n] for n in ns_pids if n in mapping and held.get(n)})
    _gpu_nodes_of_the_bundle(plan, info.pid, result)
    problems = session.resume(plan.gpu_map)
    if session.interrupted_by is not None and result.interrupted_by is None:
        result.interrupted_by = session.interrupted_by  # obeyed now that every process is back
    result.stats.update(session.stats())
    problems += [f"container pid {pid}: not found after the runtime restore" for pid in missing]
    if problems:
        result.ok = False
        result.error = "GPU restore incomplete: " + "; ".join(problems)
        result.hint = "check them with `crgpu cuda state --pid PID`"
