"""The checkpoint's plan: the container found and checked, the engine's rules, the CUDA processes and plugin config, the options the kernel must support; and its dry run."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime

from crgpu.core.plan import Adapter, CheckpointPlan, adapter_for
from crgpu.core.result import OperationResult, new_result
from crgpu.core.runtime_call import no_plugins_config, require_privileges
from crgpu.criu.binary import cuda_plugin_path, dirty_tracking, require_criu
from crgpu.host import config
from crgpu.host.errors import ImagePathError, PreconditionError, error_context
from crgpu.image.manifest import check_image_path_free
from crgpu.image.signing import check_node_key
from crgpu.nvidia.cuda import load_driver
from crgpu.nvidia.cuda_flow import cuda_process_set, refuse_mig, select_mode
from crgpu.options.models import CheckpointOptions
from crgpu.runtimes.base import ContainerInfo
from crgpu.runtimes.capabilities import run_capture
from crgpu.runtimes.detect import find_container
from crgpu.runtimes.engines import docker_checkpoint_dir
from crgpu.runtimes.state import read_bundle_spec

CHECKPOINTABLE = ("running", "paused")


def plan_checkpoint(opts: CheckpointOptions) -> CheckpointPlan:
    # Before any runtime state is read (runc's state files are root's), and before the dump: a
    # node key crgpu could not sign with would leave an image without its manifest.
    require_privileges("checkpoint")
    check_node_key()
    if opts.image_path is not None:
        check_image_path_free(opts.image_dir)
    container = find_container(opts.container_id, opts.runtime, opts.root)
    with error_context(
        container_id=container.id, gpu=container.gpu, gpu_evidence=list(container.gpu_evidence)
    ):
        return _plan_found(opts, container)


def _plan_found(opts: CheckpointOptions, container: ContainerInfo) -> CheckpointPlan:
    opts, handoff_notes = _engine_rules(opts, container)
    if container.gpu and opts.cuda_checkpoint_path is None:
        node_default = config.get("cuda_checkpoint_path").value
        if node_default:
            opts = opts.model_copy(update={"cuda_checkpoint_path": node_default})
    if opts.status_fd is not None:
        _check_status_fd(opts.status_fd)
    adapter = adapter_for(container.runtime)
    work_dir = opts.work_path or opts.image_dir
    cuda_mode, cuda_notes = select_mode(
        opts.cuda, container.gpu, container.runtime, container.id, container.gpu_evidence
    )
    criu_extra: tuple[str, ...] = ()
    if cuda_mode == "plugin":
        if opts.pre_dump:
            raise PreconditionError(
                "--pre-dump cannot checkpoint a GPU container through CRIU's CUDA plugin: the plugin "
                "disables itself on pre-dumps and CRIU then fails on the device mappings",
                hint="drop --pre-dump, or use --cuda driver-api",
            )
        if opts.cuda_lock_timeout_ms == 0:
            # The driver API's 0 is "no deadline"; CRIU's plugin locks within CRIU's --timeout,
            # which also bounds the freeze: 0 there is no wait at all, not an endless one.
            raise PreconditionError(
                "--cuda-lock-timeout 0 (as long as it takes) is the driver API's: CRIU's plugin locks "
                "within CRIU's timeout, which also bounds freezing the container",
                hint="give the lock a time in ms (e.g. --cuda-lock-timeout 600000), or use --cuda driver-api",
            )
        criu_extra = plugin_criu_config(opts.cuda_lock_timeout_ms)
    elif cuda_mode == "driver-api" and container.runtime == "runc":
        criu_extra = no_plugins_config(work_dir)
    invocation = adapter.checkpoint_invocation(opts, container, work_dir, criu_extra)
    if invocation.before:
        _require_dirty_tracking()
    status = _status(adapter, container)
    if status not in CHECKPOINTABLE:
        raise PreconditionError(
            f"container {container.id!r} is {status or 'in an unknown state'}, not running",
            hint=f"start it first; `{adapter.name} --root {container.root} state {container.id}` shows it",
        )
    if status == "paused" and cuda_mode in ("driver-api", "plugin"):
        # A frozen process cannot reach a lockable point: every lock would wait out its timeout,
        # and CRIU's plugin would lock it while frozen.
        raise PreconditionError(
            f"container {container.id!r} is paused: the driver cannot lock a frozen process's CUDA state",
            hint=f"resume it first (`{adapter.name} --root {container.root} resume {container.id}`), or "
            "checkpoint with --cuda off if it holds no GPU state",
        )
    if cuda_mode in ("driver-api", "plugin"):
        refuse_mig(read_bundle_spec(container.bundle), container.id)
    gpu_note = [container.gpu_note] if container.gpu_note else []
    invocation = replace(invocation, notes=[*invocation.notes, *gpu_note, *handoff_notes, *cuda_notes])
    accepted, skipped = (
        cuda_process_set(load_driver(), container.pid, container.id)
        if cuda_mode == "driver-api" and container.pid
        else ([], [])
    )
    invocation = replace(
        invocation,
        notes=[
            *invocation.notes,
            *(f"not checkpointed by the driver: pid {p.ns_pid} ({p.comm}): {why}" for p, why in skipped),
        ],
    )
    return CheckpointPlan(
        opts, adapter, container, work_dir, invocation, status, cuda_mode, tuple(accepted), tuple(skipped)
    )


def _status(adapter: Adapter, container: ContainerInfo) -> str | None:
    """The container's status. `runc state` and `runsc state` (10-45 ms of Go start-up each) read
    what detect already read: runc's state.json with the init process and the freezer (a running
    container found there is running), runsc's state file, to which a signal 0 adds whether the
    sandbox process is alive. The runtime is asked only where those leave it open."""
    if container.status == "running" and container.pid:
        if container.runtime == "runc":
            return "running"
        try:
            os.kill(container.pid, 0)
            return "running"
        except OSError:
            pass
    return adapter.status(container.id, container.root)


def _engine_rules(opts: CheckpointOptions, container: ContainerInfo) -> tuple[CheckpointOptions, list[str]]:
    """An engine's container is checkpointed so that the engine stays right about it: kept
    running, or handed to the engine (the image where it restores from), never stopped behind its
    back. Returns the options with the hand-off's image path filled in, and what to tell."""
    engine = container.engine
    if engine is None:
        if opts.hand_off:
            raise PreconditionError(
                f"container {container.id!r} belongs to no engine: there is nobody to hand the image to",
                hint="give --image-path DIR instead of --hand-off",
            )
        return opts, []
    if not opts.hand_off:
        if opts.leave_running:
            return opts, [f"the container belongs to {engine.label()}; it keeps running"]
        raise PreconditionError(
            f"container {container.id!r} belongs to {engine.label()}"
            + (f" ({engine.name})" if engine.name else "")
            + ": a checkpoint that stops it behind the engine's back leaves the engine wrong about it",
            hint=engine.checkpoint_hint(container.id),
        )
    if engine.kind == "podman" and container.bundle is not None:
        # podman restores <userdata>/checkpoint, with its logs in <userdata> (its bundle).
        image, work = container.bundle / "checkpoint", container.bundle
        restore = f"podman container restore {engine.name or container.id}"
        # podman marks a container checkpointed only inside its own checkpoint, in its private state
        # database; to podman this one simply exited, so say what that view hides.
        caveat = (
            "podman will show it Exited (137), not checkpointed: `podman start` would start it afresh "
            "and `podman rm` deletes the image with it"
        )
    elif engine.kind == "docker":
        name = "crgpu-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        image, work = docker_checkpoint_dir(container.id, name), None
        restore = f"docker start --checkpoint {name} {engine.name or container.id}"
        caveat = None  # Docker shows it as after its own `docker checkpoint create`: Exited (137)
    else:
        raise PreconditionError(
            f"--hand-off: {engine.label()} restores only from its own archives",
            hint="checkpoint with --leave-running -i DIR, then `crgpu export --format kubernetes -i DIR -o FILE`",
        )
    try:
        check_image_path_free(image)
    except ImagePathError as exc:
        # --hand-off chooses the path itself: "choose a new --image-path" would be refused.
        exc.hint = (
            f"{engine.label()} holds an older checkpoint of the running container there (one it made "
            f"with --leave-running): remove it to replace it (`rm -r {image}`)"
        )
        raise
    update: dict[str, object] = {"image_path": image}
    if opts.work_path is None and work is not None:
        update["work_path"] = work
    notes = [f"handed to {engine.label()}: `{restore}` restores it"]
    return opts.model_copy(update=update), notes + ([caveat] if caveat else [])


def plugin_criu_config(lock_timeout_ms: int) -> tuple[str, ...]:
    """CRIU config lines for its CUDA plugin: where to load it from and how long it may wait for
    a lock. runc sends neither over RPC, and CRIU loads plugins from one directory only."""
    plugin = cuda_plugin_path()
    if plugin is None:
        raise PreconditionError(
            "the image was made with CRIU's CUDA plugin, which this node lacks (cuda_plugin.so)",
            hint="install CRIU's CUDA plugin and cuda-checkpoint, or restore on a node that has them",
        )
    return (f"libdir {plugin.parent}", f"timeout {max(1, -(-lock_timeout_ms // 1000))}")


def _check_status_fd(fd: int) -> None:
    if fd < 3:
        raise PreconditionError(
            f"--status-fd {fd} is standard input, output or error",
            hint="give a descriptor of its own (3 or above)",
        )
    try:
        os.fstat(fd)
    except OSError as exc:
        raise PreconditionError(
            f"--status-fd {fd} is not an open file descriptor ({exc.strerror})",
            hint="open it for crgpu, e.g. `3>status-fifo crgpu checkpoint --status-fd 3 ...`",
        ) from exc


def _require_dirty_tracking() -> None:
    criu = require_criu()
    ok, said = dirty_tracking(criu, lambda argv: run_capture(argv, timeout=10))
    if not ok:
        raise PreconditionError(
            f"--pre-dump needs the kernel's soft-dirty memory tracking, which this node lacks ({said})",
            hint="checkpoint without --pre-dump here (crgpu doctor shows criu.dirty_tracking)",
        )


def checkpoint_dry_run(plan: CheckpointPlan) -> OperationResult:
    opts = plan.options
    result = new_result(
        "checkpoint",
        plan.adapter,
        plan.container.id,
        opts.image_dir,
        plan.work_dir,
        plan.invocation,
        plan.gpu,
    )
    result.dry_run = True
    return result
