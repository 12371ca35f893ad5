"""Checkpoint and restore, runtime-agnostic: plan (validate, detect, map) then execute (run, record)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from crgpu import config
from crgpu.criu import (
    criu_log_errors,
    dirty_tracking,
    headline,
    hint_for,
    read_stats,
    runtime_error_lines,
)
from crgpu.cuda import CudaProcess, cuda_processes, device_map, host_pids_for, load_driver
from crgpu.cuda_flow import DriverApiSession, select_mode
from crgpu.errors import (
    CrgpuError,
    ImagePathError,
    Interrupted,
    NotFoundError,
    PreconditionError,
    RuntimeFailed,
)
from crgpu.guard import enforce, restore_findings
from crgpu.hostinfo import has_checkpoint_privileges, host_record
from crgpu.image import (
    ContainerRecord,
    Manifest,
    RuntimeRecord,
    check_image_path_free,
    image_sizes,
    prepare_image_dir,
    prepare_work_dir,
    read_image,
    write_manifest,
)
from crgpu.locks import container_lock
from crgpu.options import CheckpointOptions, RestoreOptions, RuntimeName
from crgpu.process import LineSink, Watchdog, run_streaming, spawn_beside
from crgpu.runtimes.base import ContainerInfo, Invocation, RuntimeAdapter, run_capture
from crgpu.runtimes.detect import choose_runtime, find_container, locate
from crgpu.safedirs import space_hint

Adapter = RuntimeAdapter
CHECKPOINTABLE = ("running", "paused")


def adapter_for(runtime: str) -> Adapter:
    if runtime == "runc":
        from crgpu.runtimes.runc import RuncAdapter, discover_runc

        return RuncAdapter(discover_runc())
    if runtime == "runsc":
        from crgpu.runtimes.runsc import RunscAdapter, discover_runsc

        return RunscAdapter(discover_runsc())
    raise PreconditionError(f"unknown runtime {runtime!r}", hint="use runc or runsc")


@dataclass
class OperationResult:
    """What one checkpoint or restore did; the CLI renders it, `--json` prints it."""

    verb: str
    ok: bool
    runtime: str
    runtime_version: str
    container_id: str
    image_path: str
    work_path: str
    argv: list[str]
    env: dict[str, str]
    criu_config: str | None
    notes: list[str]
    dry_run: bool = False
    exit_code: int = 0
    duration_s: float = 0.0
    error: str | None = None
    hint: str | None = None
    criu_errors: list[str] = field(default_factory=list)
    log_path: str | None = None
    container_status: str | None = None
    stats: dict[str, float] = field(default_factory=dict)
    interrupted_by: int | None = None
    removed_image: bool = False
    pre_dump_argv: list[list[str]] = field(default_factory=list)
    helper_argv: list[str] = field(default_factory=list)
    # What went wrong around a run that still succeeded (statistics or logs not written).
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckpointPlan:
    options: CheckpointOptions
    adapter: Adapter
    container: ContainerInfo
    work_dir: Path
    invocation: Invocation
    status_before: str
    cuda_mode: str = "off"


@dataclass(frozen=True)
class RestorePlan:
    options: RestoreOptions
    adapter: Adapter
    container_id: str
    root: Path
    bundle: Path
    work_dir: Path
    invocation: Invocation
    manifest: Manifest | None


def plan_checkpoint(opts: CheckpointOptions) -> CheckpointPlan:
    check_image_path_free(opts.image_path)
    container = find_container(opts.container_id, opts.runtime, opts.root)
    if container.gpu and opts.cuda_checkpoint_path is None:
        node_default = config.get("cuda_checkpoint_path").value
        if node_default:
            opts = opts.model_copy(update={"cuda_checkpoint_path": node_default})
    adapter = adapter_for(container.runtime)
    work_dir = opts.work_path or opts.image_path
    invocation = adapter.checkpoint_invocation(opts, container, work_dir)
    if invocation.before:
        _require_dirty_tracking()
    status = adapter.status(container.id, container.root)
    if status not in CHECKPOINTABLE:
        raise PreconditionError(
            f"container {container.id!r} is {status or 'in an unknown state'}, not running",
            hint=f"start it first; `{adapter.name} --root {container.root} state {container.id}` shows it",
        )
    cuda_mode, cuda_notes = select_mode(opts.cuda, container.gpu, container.runtime, container.id)
    invocation.notes.extend(cuda_notes)
    return CheckpointPlan(opts, adapter, container, work_dir, invocation, status, cuda_mode)


def _require_dirty_tracking() -> None:
    criu = shutil.which("criu")
    if criu is None:
        raise NotFoundError("criu not found on PATH", hint="apt-get install criu")
    ok, said = dirty_tracking(criu, lambda argv: run_capture(argv, timeout=10))
    if not ok:
        raise PreconditionError(
            f"--pre-dump needs the kernel's soft-dirty memory tracking, which this node lacks ({said})",
            hint="checkpoint without --pre-dump here (crgpu doctor shows criu.dirty_tracking)",
        )


def _work_dir(container_id: str, kind: str) -> Path:
    """A new dir under the node's work root: WORK_ROOT/ID/KIND-TIMESTAMP."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
    return Path(config.get("work_root").value) / container_id / f"{kind}-{stamp}"


def _image_for_restore(opts: RestoreOptions) -> tuple[Manifest | None, list[str]]:
    """The image's manifest, and what may be taken from it: a manifest this node signed names
    the state root and bundle; any other needs them from the operator (or --trust-image)."""
    try:
        image = read_image(opts.image_path)
    except PreconditionError:
        if not opts.force:
            raise
        return None, []
    if image.trust.trusted:
        return image.manifest, []
    missing = [flag for flag, given in (("--root", opts.root), ("--bundle", opts.bundle)) if given is None]
    if missing and not opts.trust_image:
        raise PreconditionError(
            f"the image's crgpu.json is {image.trust.describe()}: crgpu does not let it choose the "
            f"state root and bundle",
            hint=f"give {' and '.join(missing)} yourself, or --trust-image if you know where it comes from",
        )
    how = "--trust-image" if missing else "the state root and bundle given on the command line"
    return image.manifest, [f"the image's crgpu.json is {image.trust.describe()}; restoring with {how}"]


def plan_restore(opts: RestoreOptions) -> RestorePlan:
    manifest, trust_notes = _image_for_restore(opts)
    runtime_choice = choose_runtime(opts.runtime)
    if manifest is not None:
        runtime = manifest.runtime.name
        if runtime_choice not in ("auto", runtime) and not opts.force:
            raise PreconditionError(
                f"the image was made by {runtime}; it cannot be restored with {runtime_choice}",
                hint=f"restore it with --runtime {runtime} (or --force to try anyway)",
            )
        if runtime_choice != "auto":
            runtime = runtime_choice
    elif runtime_choice == "auto":
        raise PreconditionError("without crgpu.json the runtime is unknown", hint="give --runtime runc|runsc")
    else:
        runtime = runtime_choice
    container_id = opts.container_id or (manifest.container.id if manifest else None)
    if not container_id:
        raise PreconditionError(
            "without crgpu.json the container ID is unknown", hint="give the container ID"
        )
    bundle = opts.bundle or (
        Path(manifest.container.bundle) if manifest and manifest.container.bundle else None
    )
    if bundle is None:
        raise PreconditionError("the bundle directory is unknown", hint="give --bundle DIR")
    config = bundle / "config.json"
    if not config.is_file():
        raise NotFoundError(
            f"bundle {bundle} has no config.json",
            hint="give the container's bundle with --bundle (the directory holding config.json)",
        )
    if not os.access(config, os.R_OK):
        raise PreconditionError(f"cannot read {config}", hint="run crgpu as root")
    if opts.console_socket is None and _has_terminal(config):
        raise PreconditionError(
            f"the container has a terminal (terminal: true in {config}): the runtime must hand the "
            "restored terminal to a console socket",
            hint="give --console-socket SOCKET (a receiver listening there, such as runc's recvtty)",
        )
    if opts.console_socket is not None and not _is_socket(opts.console_socket):
        raise PreconditionError(
            f"--console-socket {opts.console_socket} is not a unix socket",
            hint="start a console socket receiver there first (runc's recvtty, or your engine's)",
        )
    root = (
        opts.root
        or (Path(manifest.runtime.root) if manifest else None)
        or Path("/run/runc" if runtime == "runc" else "/var/run/runsc")
    )
    _refuse_existing(container_id, runtime, root)
    try:
        adapter = adapter_for(runtime)
    except NotFoundError as exc:
        raise PreconditionError(
            f"the image needs {runtime}, which is not usable here: {exc.message}", hint=exc.hint
        ) from exc
    warnings: list[str] = list(trust_notes)
    if manifest is not None:
        if manifest.runtime.name != runtime:
            warnings.append(
                f"--force overrides: the image was made by {manifest.runtime.name}, restoring with {runtime}"
            )
        warnings += enforce(
            restore_findings(manifest, host_record(with_criu=runtime == "runc"), runtime), opts.force
        )
    work_dir = opts.work_path or _work_dir(container_id, "restore")
    global_flags = manifest.runtime.global_flags if manifest else []
    invocation = adapter.restore_invocation(opts, container_id, root, bundle, work_dir, global_flags)
    invocation.notes.extend(warnings)
    if manifest is not None and manifest.container.gpu:
        invocation.notes.extend(adapter.check_gpu_restore(opts.force))
    return RestorePlan(opts, adapter, container_id, root, bundle, work_dir, invocation, manifest)


def _has_terminal(config: Path) -> bool:
    import json

    try:
        spec = json.loads(config.read_bytes()[: 16 * 1024 * 1024])
        return bool(isinstance(spec, dict) and (spec.get("process") or {}).get("terminal") is True)
    except (OSError, ValueError, AttributeError):
        return False  # the runtime reads it next and says what is wrong


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


def _refuse_existing(container_id: str, runtime: str, root: Path) -> None:
    if locate(container_id, runtime, root):  # type: ignore[arg-type]
        raise PreconditionError(
            f"a container {container_id!r} already exists under {root}",
            hint=f"delete it (`{runtime} --root {root} delete {container_id}`) or restore under another ID",
        )


def _result(
    verb: str, adapter: Adapter, container_id: str, image: Path, work: Path, inv: Invocation
) -> OperationResult:
    return OperationResult(
        verb=verb,
        ok=True,
        runtime=adapter.name,
        runtime_version=adapter.binary.version,
        container_id=container_id,
        image_path=str(image),
        work_path=str(work),
        argv=inv.argv,
        pre_dump_argv=inv.before,
        helper_argv=inv.helper_argv,
        env=inv.env,
        criu_config=inv.criu_config,
        notes=inv.notes,
    )


def checkpoint_dry_run(plan: CheckpointPlan) -> OperationResult:
    opts = plan.options
    result = _result(
        "checkpoint", plan.adapter, plan.container.id, opts.image_path, plan.work_dir, plan.invocation
    )
    result.dry_run = True
    return result


def restore_dry_run(plan: RestorePlan) -> OperationResult:
    result = _result(
        "restore", plan.adapter, plan.container_id, plan.options.image_path, plan.work_dir, plan.invocation
    )
    result.dry_run = True
    return result


def _write_config(inv: Invocation) -> None:
    if inv.criu_config is None or inv.criu_config_path is None:
        return
    try:
        inv.criu_config_path.write_text(inv.criu_config)
    except OSError as exc:
        raise ImagePathError(f"cannot write {inv.criu_config_path}: {exc.strerror}") from exc


def _run(
    result: OperationResult,
    adapter: Adapter,
    inv: Invocation,
    sink: LineSink,
    work_dir: Path,
    verb: str,
    root: Path,
    timeout_s: float | None = None,
    watchdog: Watchdog | None = None,
) -> None:
    output_log = work_dir / f"crgpu-{verb}-output.log"
    try:
        run = run_streaming(inv.argv, sink, output_log, inv.env, timeout_s=timeout_s, watchdog=watchdog)
    except OSError as exc:
        raise ImagePathError(f"cannot write {output_log}: {exc.strerror}", hint=space_hint(exc)) from exc
    result.exit_code = run.exit_code
    result.duration_s = round(run.duration_s, 4)
    result.interrupted_by = run.interrupted_by
    if run.exit_code == 0:
        return
    logs = [path for path in adapter.log_paths(verb, work_dir, inv.global_flags) if path.exists()]
    errors = criu_log_errors(logs[0]) if logs and adapter.name == "runc" else []
    runtime_errors = runtime_error_lines(
        [line for line in run.tail if _ERRORISH.search(line) and not line.startswith(" ")]
    )
    result.ok = False
    result.criu_errors = errors
    result.log_path = str(logs[0]) if logs else str(output_log)
    result.hint = hint_for(errors + runtime_errors)
    first = (
        headline(errors) or headline(runtime_errors) or next((line for line in run.tail if line.strip()), "")
    )
    result.error = f"{adapter.label} {verb} failed (exit {run.exit_code})" + (f": {first}" if first else "")
    if run.stopped_because:
        result.error = f"crgpu stopped {adapter.label} {verb}: {run.stopped_because}"
        result.hint = result.hint or f"see {result.log_path}; the image may be damaged: check its files"


_ERRORISH = re.compile(r"(?i)error|fail|cannot|can't|not defined|does not exist|invalid")


def require_privileges(verb: str) -> None:
    if not has_checkpoint_privileges():
        raise PreconditionError(
            f"crgpu {verb} needs root (or CAP_SYS_ADMIN with CAP_CHECKPOINT_RESTORE): runc, runsc and CRIU do",
            hint=f"run `crgpu {verb}` as root",
        )


def execute_checkpoint(
    plan: CheckpointPlan, sink: LineSink, timeout_s: float | None = None
) -> OperationResult:
    """Run the checkpoint under the container's lock. A failed or interrupted one leaves no image
    (unless --keep-failed), keeps its logs, and never leaves the container paused."""
    opts = plan.options
    info = plan.container
    require_privileges("checkpoint")
    with container_lock(info.runtime, info.root, info.id, opts.wait):
        result = _result("checkpoint", plan.adapter, info.id, opts.image_path, plan.work_dir, plan.invocation)
        prepare_image_dir(opts.image_path)
        prepare_work_dir(plan.work_dir)
        started = time.monotonic()
        session = _cuda_session(plan) if plan.cuda_mode == "driver-api" else None
        try:
            if session is not None:
                try:
                    session.suspend()
                except CrgpuError:
                    shutil.rmtree(opts.image_path, ignore_errors=True)
                    raise
            _write_config(plan.invocation)
            for k, pre in enumerate(plan.invocation.before, start=1):
                (plan.work_dir / f"predump-{k}").mkdir(mode=0o700, parents=True, exist_ok=True)
                pre_inv = Invocation(argv=pre, env=plan.invocation.env)
                _run(
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
                _run(
                    result,
                    plan.adapter,
                    plan.invocation,
                    sink,
                    plan.work_dir,
                    "checkpoint",
                    info.root,
                    timeout_s,
                )
        except BaseException:
            _resume_cuda(session, result)
            _after_failed_checkpoint(plan, result)
            raise
        if session is not None and (not result.ok or opts.leave_running):
            _resume_cuda(session, result)
        if result.ok and not opts.leave_running:
            plan.adapter.cleanup_after_checkpoint(info.id, info.root)
        if not result.ok:
            _after_failed_checkpoint(plan, result)  # it reports the container's state afterwards
            _raise_if_interrupted(result, plan.adapter, info.root)
            return result
        result.container_status = _safe_status(plan.adapter, info.id, info.root)
        result.stats = _stats(plan.work_dir / "stats-dump", "runtime_checkpoint_duration", result.duration_s)
        if session is not None:
            result.stats.update(session.stats())
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
            ),
            options=opts.model_dump(mode="json"),
            host=host_record(with_criu=plan.adapter.name == "runc"),
            stats=result.stats,
            cuda={
                "mode": plan.cuda_mode,
                "processes": [
                    {"ns_pid": p.ns_pid, "comm": p.comm} for p in (session.processes if session else [])
                ],
            },
            sizes=image_sizes(opts.image_path),
        )
        write_manifest(opts.image_path, manifest)
        result.duration_s = round(time.monotonic() - started, 4)
        if result.interrupted_by is not None:
            result.notes.append("interrupted after the checkpoint completed: the image is complete")
            _raise_if_interrupted(result, plan.adapter, info.root)
        return result


def _cuda_session(plan: CheckpointPlan) -> DriverApiSession:
    driver = load_driver()
    processes = cuda_processes(plan.container.pid) if plan.container.pid else []
    if not processes:
        plan.invocation.notes.append("driver-api: no CUDA process found in the container")
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


def _raise_if_interrupted(result: OperationResult, adapter: Adapter, root: Path) -> None:
    if result.interrupted_by is None:
        return
    kept = (
        "the image is complete"
        if result.ok
        else (
            "the partial image was removed"
            if result.removed_image
            else f"the partial image is kept at {result.image_path}"
        )
    )
    raise Interrupted(
        f"{result.verb} interrupted by signal {result.interrupted_by}; {kept}; "
        f"container now {result.container_status or 'gone'}",
        hint=f"`{adapter.name} --root {root} state {result.container_id}` shows the container",
        detail=[f"log: {result.log_path}"] if result.log_path else [],
    )


def _after_failed_checkpoint(plan: CheckpointPlan, result: OperationResult) -> None:
    """Keep the logs, drop the partial image (unless --keep-failed), resume a container left paused."""
    result.ok = False
    image = plan.options.image_path
    if not plan.options.keep_failed and image.is_dir():
        if plan.work_dir == image:
            kept = _move_logs(image, result.container_id)
            if result.log_path and Path(result.log_path).parent == image:
                result.log_path = str(kept / Path(result.log_path).name)
            result.work_path = str(kept)
        shutil.rmtree(image, ignore_errors=True)
        result.removed_image = not image.exists()
    info = plan.container
    status = _safe_status(plan.adapter, info.id, info.root)
    if status == "paused" and plan.status_before == "running":
        try:
            plan.adapter.resume(info.id, info.root)
        except CrgpuError:
            pass
        status = _safe_status(plan.adapter, info.id, info.root)
        if status == "paused":
            result.hint = (result.hint + "; " if result.hint else "") + (
                f"the container is still paused: `{plan.adapter.name} --root {info.root} resume {info.id}`"
            )
    result.container_status = status


LOG_SUFFIXES = (".log", ".conf")


def _move_logs(image: Path, container_id: str) -> Path:
    """Move the work files (logs, CRIU configs, stats) out of an image dir about to be removed."""
    target = prepare_work_dir(_work_dir(container_id, "failed-checkpoint"))
    for entry in image.iterdir():
        if (
            entry.is_file()
            and not entry.is_symlink()
            and (entry.suffix in LOG_SUFFIXES or entry.name.startswith("stats-"))
        ):
            shutil.move(str(entry), target / entry.name)
    return target


def execute_restore(plan: RestorePlan, sink: LineSink, timeout_s: float | None = None) -> OperationResult:
    opts = plan.options
    require_privileges("restore")
    with container_lock(plan.adapter.name, plan.root, plan.container_id, opts.wait):
        # Checked again under the lock: another restore may have made the ID while this one waited.
        _refuse_existing(plan.container_id, plan.adapter.name, plan.root)
        result = _result(
            "restore", plan.adapter, plan.container_id, opts.image_path, plan.work_dir, plan.invocation
        )
        prepare_work_dir(plan.work_dir)
        _write_config(plan.invocation)
        daemon = _start_lazy_pages(plan) if plan.invocation.helper_argv else None
        lazy_s: float | None = None
        logs = plan.adapter.log_paths("restore", plan.work_dir, plan.invocation.global_flags)
        watchdog = _LogWatch(logs) if plan.adapter.name == "runc" else None
        try:
            _run(
                result,
                plan.adapter,
                plan.invocation,
                sink,
                plan.work_dir,
                "restore",
                plan.root,
                timeout_s,
                watchdog,
            )
        finally:
            if daemon is not None:
                lazy_s = _finish_lazy_pages(daemon, result, plan.work_dir)
        result.container_status = _safe_status(plan.adapter, plan.container_id, plan.root)
        if result.ok:
            result.stats = _stats(
                plan.work_dir / "stats-restore", "runtime_restore_duration", result.duration_s
            )
            if plan.adapter.name == "runc":
                result.warnings += _lost_records(plan.work_dir, result.stats, logs)
            if plan.manifest is not None and plan.manifest.cuda.get("mode") == "driver-api":
                _restore_cuda(plan, result)
            if lazy_s is not None:
                result.stats["time_to_running"] = result.stats["runtime_restore_duration"]
                result.stats["lazy_pages_complete"] = int(lazy_s * 1_000_000)
        elif result.container_status not in (None, "running") and not _said_it_exists(result):
            # A half-restored container would block the next try under the same ID. It is this
            # run's own: the ID was free under the lock, and the runtime did not find it taken.
            plan.adapter.delete(plan.container_id, plan.root)
            result.container_status = _safe_status(plan.adapter, plan.container_id, plan.root)
        if watchdog is not None:
            watchdog.cap_logs()  # after the delete: the looping restorer runs inside the container
        _raise_if_interrupted(result, plan.adapter, plan.root)
        return result


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


LAZY_SOCKET_WAIT_S = 10.0
LAZY_TRANSFER_TIMEOUT_S = 3600.0


def _start_lazy_pages(plan: RestorePlan) -> tuple[subprocess.Popen[bytes], float]:
    """Start CRIU's lazy-pages daemon over the image; return once its socket is up."""
    daemon = spawn_beside(plan.invocation.helper_argv, plan.work_dir / "crgpu-lazy-pages-output.log")
    started = time.monotonic()
    socket = plan.work_dir / "lazy-pages.socket"
    while not socket.exists():
        if daemon.poll() is not None or time.monotonic() - started > LAZY_SOCKET_WAIT_S:
            daemon.kill()
            daemon.wait()
            errors = criu_log_errors(plan.work_dir / "lazy-pages.log")
            raise RuntimeFailed(
                "CRIU's lazy-pages daemon did not start" + (f": {errors[0]}" if errors else ""),
                hint=hint_for(errors)
                or "check that the kernel has userfaultfd (criu check --feature uffd-noncoop)",
                detail=[f"log: {plan.work_dir / 'lazy-pages.log'}"],
            )
        time.sleep(0.005)
    return daemon, time.monotonic()


def _finish_lazy_pages(
    daemon: tuple[subprocess.Popen[bytes], float], result: OperationResult, work_dir: Path
) -> float | None:
    """Wait until every page has arrived (the daemon exits then); the seconds that took."""
    process, started = daemon
    if not result.ok:
        process.kill()
        process.wait()
        return None
    try:
        code = process.wait(timeout=LAZY_TRANSFER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    if code != 0:
        result.ok = False
        errors = criu_log_errors(work_dir / "lazy-pages.log")
        result.error = "CRIU's lazy-pages daemon failed before every page arrived" + (
            f": {errors[0]}" if errors else ""
        )
        result.log_path = str(work_dir / "lazy-pages.log")
        return None
    return time.monotonic() - started


def _restore_cuda(plan: RestorePlan, result: OperationResult) -> None:
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
    here = [g.uuid for g in host_record(with_criu=False).gpus]
    problems = session.resume(device_map([g.uuid for g in plan.manifest.host.gpus], here))
    result.stats.update(session.stats())
    problems += [f"container pid {pid}: not found after the runtime restore" for pid in missing]
    if problems:
        result.ok = False
        result.error = "GPU restore incomplete: " + "; ".join(problems)
        result.hint = "check them with `crgpu cuda state --pid PID`"


def _stats(criu_stats: Path, duration_name: str, duration_s: float) -> dict[str, float]:
    """CRIU's own statistics (runc) plus the runtime's wall time, all in microseconds."""
    stats: dict[str, float] = dict(read_stats(criu_stats))
    stats[duration_name] = int(duration_s * 1_000_000)
    return stats


def _safe_status(adapter: Adapter, container_id: str, root: Path) -> str | None:
    try:
        return adapter.status(container_id, root)
    except CrgpuError:
        return None
