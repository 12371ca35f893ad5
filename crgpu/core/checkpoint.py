"""Checkpoint execution: under the container's lock, with cleanup that never loses a container."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack

from crgpu.core.checkpoint_failure import after_failed_checkpoint, thaw_left_paused
from crgpu.core.checkpoint_manifest import record_checkpoint, record_container_files
from crgpu.core.plan import CheckpointPlan
from crgpu.core.result import OperationResult, image_size_figures, new_result, raise_if_interrupted
from crgpu.core.runtime_call import (
    criu_stats,
    require_privileges,
    run_runtime,
    write_criu_config,
)
from crgpu.host.errors import CrgpuError, error_context
from crgpu.host.locks import container_lock
from crgpu.host.process import LineSink
from crgpu.host.signals import signals_noted
from crgpu.image.manifest import (
    prepare_image_dir,
    prepare_work_dir,
)
from crgpu.image.rootfs_diff import overlay_upper
from crgpu.nvidia.cuda import load_driver
from crgpu.nvidia.cuda_flow import DriverApiSession, cuda_process_set
from crgpu.runtimes.base import RUNTIME_STATUS_FD, Invocation


def execute_checkpoint(
    plan: CheckpointPlan, sink: LineSink, timeout_s: float | None = None
) -> OperationResult:
    """Run the checkpoint under the container's lock. A failed or interrupted one leaves no image
    (unless --keep-failed), keeps its logs, and never leaves the container paused. A refusal on the
    way (the GPU memory check) names the container and its GPU verdict, as the plan's do."""
    info = plan.container
    with error_context(container_id=info.id, gpu=info.gpu, gpu_evidence=list(info.gpu_evidence)):
        return _execute_checkpoint(plan, sink, timeout_s)


def _execute_checkpoint(plan: CheckpointPlan, sink: LineSink, timeout_s: float | None) -> OperationResult:
    opts = plan.options
    info = plan.container
    require_privileges("checkpoint")
    with container_lock(info.runtime, info.root, info.id, opts.wait), ExitStack() as deferred:
        result = new_result(
            "checkpoint", plan.adapter, info.id, opts.image_dir, plan.work_dir, plan.invocation, plan.gpu
        )
        prepare_image_dir(opts.image_dir)
        prepare_work_dir(plan.work_dir)
        started = time.monotonic()
        session = _cuda_session(plan, result) if plan.cuda_mode == "driver-api" else None
        lazy = _LazyServing(plan, lambda: record_checkpoint(plan, {}, session)) if opts.lazy_pages else None
        # The writable layer (an overlay's upper dir), found once: it decides the pause and is recorded.
        upper = overlay_upper(info.rootfs) if plan.adapter.name == "runc" and info.rootfs else None
        paused = _PausedForLayer(plan, layered=upper is not None)
        deferred.callback(paused.resume, result)  # whatever happens, never left paused
        try:
            if session is not None:
                try:
                    session.suspend()
                except CrgpuError:
                    shutil.rmtree(opts.image_dir, ignore_errors=True)
                    raise
            write_criu_config(plan.invocation)
            for k, pre in enumerate(plan.invocation.before, start=1):
                (plan.work_dir / f"predump-{k}").mkdir(mode=0o700, parents=True, exist_ok=True)
                pre_inv = Invocation(argv=pre, env=plan.invocation.env)
                run_runtime(
                    result,
                    plan.adapter,
                    pre_inv,
                    sink,
                    plan.work_dir / f"predump-{k}",
                    "checkpoint",
                    info.root,
                )
                if not result.ok:
                    result.error = f"pre-dump {k}: {result.error}"
                    break
            if result.ok:
                # From the dump on, a signal is forwarded to the runtime (run_runtime) and, once it
                # has returned, noted instead of raised: crgpu then either finishes the image
                # (crgpu.json) or removes it, never stops half-way between the two.
                deferred.enter_context(signals_noted(lambda signum: _note_signal(result, signum)))
                paused.pause()
                run_runtime(
                    result,
                    plan.adapter,
                    plan.invocation,
                    sink,
                    plan.work_dir,
                    "checkpoint",
                    info.root,
                    timeout_s,
                    watchdog=lazy.poll if lazy else None,
                    pass_fd=(lazy.write_end, RUNTIME_STATUS_FD) if lazy else None,
                )
            if lazy is not None:
                result.notes += lazy.notes
        except BaseException:
            paused.resume(result)
            if session is not None:
                thaw_left_paused(plan)  # a frozen process answers no CUDA call
            _resume_cuda(session, result)
            after_failed_checkpoint(plan, result)
            raise
        finally:
            if lazy is not None:
                lazy.close()
        if session is not None and (not result.ok or opts.leave_running):
            if not result.ok:
                thaw_left_paused(plan)  # a frozen process answers no CUDA call
            _resume_cuda(session, result)
        if result.ok and not opts.leave_running:
            cleanup_started = time.monotonic()
            plan.adapter.cleanup_after_checkpoint(info.id, info.root)
            # The runtime's own work (runsc delete), as the raw runtime's arm counts it; said apart too,
            # so a runsc checkpoint's runtime time is not read as the checkpoint's alone.
            cleanup_s = time.monotonic() - cleanup_started
            result.timings["runtime_s"] = round(result.timings.get("runtime_s", 0.0) + cleanup_s, 4)
            if plan.adapter.name == "runsc":
                result.timings["runtime_delete_s"] = round(cleanup_s, 4)
        if not result.ok:
            paused.resume(result)
            after_failed_checkpoint(plan, result)  # it reports the container's state afterwards
            raise_if_interrupted(result, plan.adapter, info.root)
            return result
        # A checkpoint that worked leaves the container running (--leave-running) or gone: no need
        # to ask the runtime a second time.
        result.container_status = "running" if opts.leave_running else None
        result.stats = criu_stats(
            plan.work_dir / "stats-dump", "runtime_checkpoint_duration", result.duration_s
        )
        if session is not None:
            result.stats.update(session.stats())
        if plan.adapter.name == "runc":
            record_container_files(plan, result, upper)
        paused.resume(result)
        record_checkpoint(plan, result.stats, session)
        result.duration_s = round(time.monotonic() - started, 4)
        result.sizes = image_size_figures(opts.image_dir, result.timings.get("runtime_s", 0.0))
        if result.interrupted_by is not None:
            result.notes.append("interrupted after the checkpoint completed: the image is complete")
            raise_if_interrupted(result, plan.adapter, info.root)
        return result


class _LazyServing:
    """A lazy checkpoint's status pipe: CRIU writes one NUL byte once it serves the pages; then
    the image can be restored, so crgpu writes crgpu.json and tells --status-fd."""

    def __init__(self, plan: CheckpointPlan, write_manifest_now: Callable[[], None]) -> None:
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        self.write_manifest_now = write_manifest_now
        self.operator_fd = plan.options.status_fd
        self.notes: list[str] = []
        self.serving = False

    def poll(self) -> str | None:
        if self.serving:
            return None
        try:
            byte = os.read(self.read_end, 1)
        except BlockingIOError:
            return None
        if not byte:
            return None
        self.serving = True
        try:
            self.write_manifest_now()
        except CrgpuError as exc:
            return f"the image could not be made restorable: {exc.message}"
        self.notes.append("the image was restorable (crgpu.json written) while its pages were served")
        if self.operator_fd is not None:
            try:
                os.write(self.operator_fd, b"\0")
            except OSError as exc:
                self.notes.append(f"--status-fd {self.operator_fd} could not be written: {exc.strerror}")
        return None

    def close(self) -> None:
        os.close(self.read_end)
        os.close(self.write_end)


def _cuda_session(plan: CheckpointPlan, result: OperationResult) -> DriverApiSession:
    """The CUDA processes as they are now, under the container's lock: one that started CUDA
    since the plan is taken too (or refused, holding the device), one that ended is dropped."""
    driver = load_driver()
    planned = {p.host_pid for p in plan.cuda_processes}
    info = plan.container
    processes = cuda_process_set(driver, info.pid, info.id)[0] if info.pid else []
    result.notes += [
        f"pid {p.ns_pid} ({p.comm}) started CUDA since the plan: taken too"
        for p in processes
        if p.host_pid not in planned
    ]
    if not processes:
        result.notes.append("driver-api: no CUDA process found in the container")
    return DriverApiSession(driver, processes, plan.options.cuda_lock_timeout_ms)


class _PausedForLayer:
    """A --leave-running checkpoint of a runc container on an overlay root pauses it from just
    before the dump until its writable layer is recorded: read after the resume, the layer held
    writes CRIU never saw, and the archive's restore failed (`File tmp/out has bad size`). Not
    for GPU containers (the CUDA plugin and the driver API need the processes running to lock
    them) nor lazy dumps (the pages are served after the dump returns)."""

    def __init__(self, plan: CheckpointPlan, layered: bool) -> None:
        opts, info = plan.options, plan.container
        self.plan = plan
        self.wanted = (
            plan.adapter.name == "runc"
            and opts.leave_running
            and not opts.lazy_pages
            and plan.status_before == "running"
            and plan.cuda_mode == "off"
            and not info.gpu
            and layered
        )
        self.since: float | None = None

    def pause(self) -> None:
        if self.wanted and self.since is None:
            self.plan.adapter.pause(self.plan.container.id, self.plan.container.root)
            self.since = time.monotonic()

    def resume(self, result: OperationResult) -> None:
        if self.since is None:
            return
        since, self.since = self.since, None
        info = self.plan.container
        try:
            self.plan.adapter.resume(info.id, info.root)
        except CrgpuError as exc:
            result.warnings.append(
                f"the container crgpu paused for its writable layer could not be resumed: {exc.message}; "
                f"run `runc --root {info.root} resume {info.id}`"
            )
        result.stats["paused_time"] = int((time.monotonic() - since) * 1_000_000)


def _note_signal(result: OperationResult, signum: int) -> None:
    if result.interrupted_by is None:
        result.interrupted_by = signum


def _resume_cuda(session: DriverApiSession | None, result: OperationResult) -> None:
    """Put every CUDA process back to running; what could not be is said, never hidden."""
    if session is None or all(state == "running" for state in session.state.values()):
        return
    problems = session.resume()
    if session.interrupted_by is not None:
        _note_signal(result, session.interrupted_by)  # obeyed once every process is back
    result.stats.update(
        {k: v for k, v in session.stats().items() if k in ("cuda_restore_time", "cuda_unlock_time")}
    )
    if problems:
        result.ok = False
        result.error = (
            (result.error + "; " if result.error else "")
            + "CUDA processes left behind: "
            + "; ".join(problems)
        )
        result.hint = (
            "check them with `crgpu cuda state --pid PID`; unlock with `crgpu cuda unlock --pid PID`"
        )
