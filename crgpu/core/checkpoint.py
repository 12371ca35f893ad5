"""Checkpoint execution: under the container's lock, with cleanup that never loses a container."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, cast

from pydantic import ValidationError

from crgpu.core.hostinfo import host_record
from crgpu.core.plan import CheckpointPlan, work_dir_for
from crgpu.core.result import OperationResult, new_result, raise_if_interrupted
from crgpu.core.runtime_call import (
    criu_stats,
    require_privileges,
    run_runtime,
    safe_status,
    write_criu_config,
)
from crgpu.host.errors import CrgpuError, PreconditionError
from crgpu.host.locks import container_lock
from crgpu.host.process import LineSink
from crgpu.host.safedirs import read_nofollow, write_new_private
from crgpu.image.archive_names import SPEC_DUMP
from crgpu.image.manifest import (
    ContainerRecord,
    EngineRecord,
    HostRecord,
    Manifest,
    RuntimeRecord,
    image_sizes,
    prepare_image_dir,
    prepare_work_dir,
    write_manifest,
)
from crgpu.image.rootfs_diff import overlay_upper, write_rootfs_diff
from crgpu.nvidia.cuda import load_driver
from crgpu.nvidia.cuda_flow import DriverApiSession
from crgpu.nvidia.cuda_processes import CudaProcess
from crgpu.nvidia.gpu_map import given_gpus
from crgpu.options.models import RuntimeName
from crgpu.runtimes.base import RUNTIME_STATUS_FD, Invocation
from crgpu.runtimes.state import SPEC_MAX_BYTES, read_bundle_spec


def execute_checkpoint(
    plan: CheckpointPlan, sink: LineSink, timeout_s: float | None = None
) -> OperationResult:
    """Run the checkpoint under the container's lock. A failed or interrupted one leaves no image
    (unless --keep-failed), keeps its logs, and never leaves the container paused."""
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
        lazy = _LazyServing(plan, lambda: _write(plan, {}, session)) if opts.lazy_pages else None
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
                deferred.enter_context(_signals_deferred(result))
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
            _resume_cuda(session, result)
            _after_failed_checkpoint(plan, result)
            raise
        finally:
            if lazy is not None:
                lazy.close()
        if session is not None and (not result.ok or opts.leave_running):
            _resume_cuda(session, result)
        if result.ok and not opts.leave_running:
            cleanup_started = time.monotonic()
            plan.adapter.cleanup_after_checkpoint(info.id, info.root)
            # The runtime's own work (runsc delete), as the raw runtime's arm counts it.
            result.timings["runtime_s"] = round(
                result.timings.get("runtime_s", 0.0) + time.monotonic() - cleanup_started, 4
            )
        if not result.ok:
            _after_failed_checkpoint(plan, result)  # it reports the container's state afterwards
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
            _record_container_files(plan, result)
        _write(plan, result.stats, session)
        result.duration_s = round(time.monotonic() - started, 4)
        if result.interrupted_by is not None:
            result.notes.append("interrupted after the checkpoint completed: the image is complete")
            raise_if_interrupted(result, plan.adapter, info.root)
        return result


@contextmanager
def _signals_deferred(result: OperationResult) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP recorded in `result.interrupted_by` instead of raised."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum: int, _frame: FrameType | None) -> None:
        if result.interrupted_by is None:
            result.interrupted_by = signum

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _record_container_files(plan: CheckpointPlan, result: OperationResult) -> None:
    """What the engines' archives carry besides CRIU's images, kept in the image so it can leave
    the node later (crgpu export): the container's OCI spec (spec.dump), CRIU's statistics when
    they went to another work dir, and the writable layer of an overlay root filesystem."""
    image, info = plan.options.image_dir, plan.container
    try:
        if info.bundle is not None:
            spec = read_nofollow(info.bundle / "config.json", SPEC_MAX_BYTES)
            write_new_private(image / SPEC_DUMP, spec)
        stats = plan.work_dir / "stats-dump"
        if plan.work_dir != image and stats.is_file():
            write_new_private(image / "stats-dump", read_nofollow(stats, SPEC_MAX_BYTES))
        upper = overlay_upper(info.rootfs) if info.rootfs else None
        if upper is not None:
            entries, deleted = write_rootfs_diff(upper, image)
            result.notes.append(f"the writable layer recorded: {entries} entries, {deleted} deleted")
    except (OSError, PreconditionError) as exc:
        result.warnings.append(f"the container's spec or writable layer could not be recorded: {exc}")


def _write(plan: CheckpointPlan, stats: dict[str, float], session: DriverApiSession | None) -> None:
    """crgpu.json for this checkpoint, signed, written atomically (a lazy checkpoint writes it
    twice: once the pages are served, then with the statistics)."""
    info, opts = plan.container, plan.options
    host = host_record(with_criu=plan.adapter.name == "runc", with_gpus=info.gpu)
    manifest = Manifest(
        runtime=RuntimeRecord(
            name=cast(RuntimeName, plan.adapter.name),
            version=plan.adapter.binary.version,
            path=str(plan.adapter.binary.path),
            root=str(info.root),
            global_flags=plan.invocation.global_flags,
        ),
        container=ContainerRecord(
            id=info.id,
            bundle=str(info.bundle) if info.bundle else None,
            pid=info.pid,
            gpu=info.gpu,
            gpu_evidence=list(info.gpu_evidence),
            engine=_engine_record(info.engine.record()) if info.engine else None,
        ),
        options=opts.model_dump(mode="json"),
        host=host,
        stats=stats,
        cuda={
            "mode": plan.cuda_mode,
            "processes": [_process_record(p, session) for p in (session.processes if session else [])],
            **(_container_gpus(info.bundle, host) if session else {}),
            **(
                {
                    "not_checkpointed": [
                        {"ns_pid": p.ns_pid, "comm": p.comm, "why": why} for p, why in plan.cuda_skipped
                    ]
                }
                if plan.cuda_skipped
                else {}
            ),
        },
        sizes=image_sizes(opts.image_dir),
    )
    write_manifest(opts.image_dir, manifest)


def _engine_record(record: dict[str, str]) -> EngineRecord:
    """The engine as the manifest records it. Names come from the engine's own data (podman's
    answer, Docker's config.v2.json, annotations): one the manifest cannot hold is left out, and
    the checkpoint that already ran is not lost over it."""
    try:
        return EngineRecord.model_validate(record)
    except ValidationError as exc:
        bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        return EngineRecord.model_validate({k: v for k, v in record.items() if k not in bad or k == "kind"})


def _process_record(proc: CudaProcess, session: DriverApiSession | None) -> dict[str, Any]:
    """A checkpointed CUDA process, with the GPUs NVML saw it use (what a restore must map)."""
    use = session.gpu_use.get(proc.host_pid) if session else None
    return {"ns_pid": proc.ns_pid, "comm": proc.comm, **({"gpus": list(use.uuids)} if use else {})}


def _container_gpus(bundle: Path | None, host: HostRecord) -> dict[str, Any]:
    """The GPUs the container's spec gave it, when the spec says (a restore without NVML's
    per-process view maps these)."""
    given = given_gpus(read_bundle_spec(bundle), host.gpus)
    return {"container_gpus": given} if given is not None else {}


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
    driver = load_driver()
    processes = list(plan.cuda_processes)
    if not processes:
        result.notes.append("driver-api: no CUDA process found in the container")
    return DriverApiSession(driver, processes, plan.options.cuda_lock_timeout_ms)


def _resume_cuda(session: DriverApiSession | None, result: OperationResult) -> None:
    """Put every CUDA process back to running; what could not be is said, never hidden."""
    if session is None or all(state == "running" for state in session.state.values()):
        return
    problems = session.resume()
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


def _after_failed_checkpoint(plan: CheckpointPlan, result: OperationResult) -> None:
    """Keep the logs, drop the partial image (unless --keep-failed), resume a container left paused."""
    result.ok = False
    image = plan.options.image_dir
    if not plan.options.keep_failed and image.is_dir():
        if plan.work_dir == image:
            kept = _move_logs(image, result.container_id)
            if result.log_path and Path(result.log_path).parent == image:
                result.log_path = str(kept / Path(result.log_path).name)
            result.work_path = str(kept)
        _remove_when_unused(image)
        result.removed_image = not image.exists()
    info = plan.container
    status = safe_status(plan.adapter, info.id, info.root)
    if status == "paused" and plan.status_before == "running":
        try:
            plan.adapter.resume(info.id, info.root)
        except CrgpuError:
            pass
        status = safe_status(plan.adapter, info.id, info.root)
        if status == "paused":
            result.hint = (result.hint + "; " if result.hint else "") + (
                f"the container is still paused: `{plan.adapter.name} --root {info.root} resume {info.id}`"
            )
    result.container_status = status


# How long a dying CRIU may go on writing into the image dir (its stats-dump comes last).
RELEASE_TIMEOUT_S = 10.0


def _holders(directory: Path) -> bool:
    """Whether any process has a file or its working directory inside `directory` (CRIU, which
    runc started, can outlive runc by a moment after a signal and then write its stats-dump)."""
    prefix = str(directory)
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/cwd")]
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
        if any(link == prefix or link.startswith(prefix + "/") for link in links):
            return True
    return False


def _remove_when_unused(image: Path) -> None:
    """Remove a failed checkpoint's image once nothing writes into it any more: a complete image
    or none, whatever moment a signal stopped the dump."""
    deadline = time.monotonic() + RELEASE_TIMEOUT_S
    while _holders(image) and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(20):
        shutil.rmtree(image, ignore_errors=True)
        if not image.exists():
            return
        time.sleep(0.05)  # a file written between the listing and the rmdir


LOG_SUFFIXES = (".log", ".conf")


def _move_logs(image: Path, container_id: str) -> Path:
    """Move the work files (logs, CRIU configs, stats) out of an image dir about to be removed."""
    target = prepare_work_dir(work_dir_for(container_id, "failed-checkpoint"))
    for entry in image.iterdir():
        if (
            entry.is_file()
            and not entry.is_symlink()
            and (entry.suffix in LOG_SUFFIXES or entry.name.startswith("stats-"))
        ):
            shutil.move(str(entry), target / entry.name)
    return target
