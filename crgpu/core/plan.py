"""Plans: validate, detect and map a checkpoint or restore onto its runtime, before anything runs.

A plan is complete and immutable: `--dry-run` prints it, the executions run it unchanged."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crgpu.core.hostinfo import host_record
from crgpu.core.result import OperationResult, new_result
from crgpu.core.runtime_call import require_privileges
from crgpu.criu.binary import cuda_plugin_path, dirty_tracking, require_criu
from crgpu.host import config
from crgpu.host.errors import CrgpuError, NotFoundError, PreconditionError
from crgpu.host.locks import container_lock
from crgpu.image.archive_names import is_archive
from crgpu.image.guard import enforce, gpus_used, restore_findings
from crgpu.image.manifest import MANIFEST_NAME, HostRecord, Manifest, check_image_path_free, read_image
from crgpu.image.signing import check_node_key
from crgpu.nvidia.cuda import load_driver
from crgpu.nvidia.cuda_flow import classify, select_mode
from crgpu.nvidia.cuda_processes import CudaProcess, cuda_processes
from crgpu.nvidia.gpu_map import GPU_UUID, describe, given_gpus, plan_device_map
from crgpu.options.models import CheckpointOptions, RestoreOptions
from crgpu.runtimes.base import ContainerInfo, Invocation, RuntimeAdapter
from crgpu.runtimes.capabilities import run_capture
from crgpu.runtimes.detect import bundle_holder, choose_runtime, find_container, locate
from crgpu.runtimes.engines import Engine, docker_checkpoint_dir
from crgpu.runtimes.state import bundle_rootfs, read_bundle_spec

if TYPE_CHECKING:
    from crgpu.image.archive_restore import PreparedArchive

Adapter = RuntimeAdapter


CHECKPOINTABLE = ("running", "paused")


def load_adapters() -> None:
    """Import both runtime adapters now (a command's own code), not in the middle of planning."""
    import crgpu.runtimes.runc
    import crgpu.runtimes.runsc  # noqa: F401


def adapter_for(runtime: str) -> Adapter:
    if runtime == "runc":
        from crgpu.runtimes.runc import RuncAdapter, discover_runc

        return RuncAdapter(discover_runc())
    if runtime == "runsc":
        from crgpu.runtimes.runsc import RunscAdapter, discover_runsc

        return RunscAdapter(discover_runsc())
    raise PreconditionError(f"unknown runtime {runtime!r}", hint="use runc or runsc")


@dataclass(frozen=True)
class CheckpointPlan:
    options: CheckpointOptions
    adapter: Adapter
    container: ContainerInfo
    work_dir: Path
    invocation: Invocation
    status_before: str
    cuda_mode: str = "off"
    # driver-api: the processes the driver will checkpoint, and those it will not (with why).
    cuda_processes: tuple[CudaProcess, ...] = ()
    cuda_skipped: tuple[tuple[CudaProcess, str], ...] = ()

    @property
    def gpu(self) -> tuple[bool | None, tuple[str, ...]]:
        return self.container.gpu, self.container.gpu_evidence


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
    # driver-api images: old -> new GPU UUIDs for the CUDA restore (None: the GPUs they came from).
    gpu_map: dict[str, str] | None = None
    # An archive's restore: what crgpu unpacked and mounted (and the lock it took first), taken
    # back when the restore fails.
    archive: PreparedArchive | None = None

    @property
    def gpu(self) -> tuple[bool | None, tuple[str, ...]]:
        """What the image recorded (unknown without crgpu.json)."""
        if self.manifest is None:
            return None, ()
        return self.manifest.container.gpu, tuple(self.manifest.container.gpu_evidence)


def plan_checkpoint(opts: CheckpointOptions) -> CheckpointPlan:
    # Before any runtime state is read (runc's state files are root's), and before the dump: a
    # node key crgpu could not sign with would leave an image without its manifest.
    require_privileges("checkpoint")
    check_node_key()
    if opts.image_path is not None:
        check_image_path_free(opts.image_dir)
    container = find_container(opts.container_id, opts.runtime, opts.root)
    opts, handoff_notes = _engine_rules(opts, container)
    if container.gpu and opts.cuda_checkpoint_path is None:
        node_default = config.get("cuda_checkpoint_path").value
        if node_default:
            opts = opts.model_copy(update={"cuda_checkpoint_path": node_default})
    if opts.status_fd is not None:
        _check_status_fd(opts.status_fd)
    adapter = adapter_for(container.runtime)
    work_dir = opts.work_path or opts.image_dir
    cuda_mode, cuda_notes = select_mode(opts.cuda, container.gpu, container.runtime, container.id)
    criu_extra: tuple[str, ...] = ()
    if cuda_mode == "plugin":
        if opts.pre_dump:
            raise PreconditionError(
                "--pre-dump cannot checkpoint a GPU container through CRIU's CUDA plugin: the plugin "
                "disables itself on pre-dumps and CRIU then fails on the device mappings",
                hint="drop --pre-dump, or use --cuda driver-api",
            )
        criu_extra = plugin_criu_config(opts.cuda_lock_timeout_ms)
    invocation = adapter.checkpoint_invocation(opts, container, work_dir, criu_extra)
    if invocation.before:
        _require_dirty_tracking()
    status = _status(adapter, container)
    if status not in CHECKPOINTABLE:
        raise PreconditionError(
            f"container {container.id!r} is {status or 'in an unknown state'}, not running",
            hint=f"start it first; `{adapter.name} --root {container.root} state {container.id}` shows it",
        )
    invocation = replace(invocation, notes=[*invocation.notes, *handoff_notes, *cuda_notes])
    accepted, skipped = _cuda_process_set(container) if cuda_mode == "driver-api" else ([], [])
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
    elif engine.kind == "docker":
        name = "crgpu-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        image, work = docker_checkpoint_dir(container.id, name), None
        restore = f"docker start --checkpoint {name} {engine.name or container.id}"
    else:
        raise PreconditionError(
            f"--hand-off: {engine.label()} restores only from its own archives",
            hint="checkpoint with --leave-running -i DIR and `crgpu export --format kubernetes`",
        )
    check_image_path_free(image)
    update: dict[str, object] = {"image_path": image}
    if opts.work_path is None and work is not None:
        update["work_path"] = work
    return opts.model_copy(update=update), [f"handed to {engine.label()}: `{restore}` restores it"]


def _cuda_process_set(container: ContainerInfo) -> tuple[list[CudaProcess], list[tuple[CudaProcess, str]]]:
    """The container's CUDA processes as the driver sees them. One that the driver will not take
    but that holds /dev/nvidia* open would make CRIU fail on the device: refused up front."""
    candidates = cuda_processes(container.pid) if container.pid else []
    accepted, skipped = classify(load_driver(), candidates)
    blocking = [(p, why) for p, why in skipped if p.holds_device]
    if blocking:
        raise PreconditionError(
            f"container {container.id!r} has processes holding the GPU device that the driver cannot "
            "checkpoint: " + "; ".join(f"pid {p.ns_pid} ({p.comm}): {why}" for p, why in blocking),
            hint="stop them (NVML monitors, forked workers without a CUDA context) or checkpoint with "
            "--leave-running after they exit; CRIU cannot dump a process holding /dev/nvidia*",
        )
    return accepted, skipped


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


def work_dir_for(container_id: str, kind: str) -> Path:
    """A new dir under the node's work root: WORK_ROOT/ID/KIND-TIMESTAMP."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
    return Path(config.get("work_root").value) / container_id / f"{kind}-{stamp}"


def _from_archive(opts: RestoreOptions) -> tuple[RestoreOptions, PreparedArchive]:
    """An archive is unpacked (as hostile input) and its bundle made; the restore then runs on
    the unpacked images under crgpu's own state root (never one an archive names)."""
    from crgpu.image.archive_restore import prepare as prepare_archive

    root = opts.root or Path("/run/runc")
    prepared = prepare_archive(
        opts.image_dir,
        opts.container_id,
        opts.bundle,
        opts.rootfs,
        opts.trust_image,
        before_unpack=lambda container_id: refuse_existing(container_id, "runc", root),
        console_socket=opts.console_socket is not None,
        lock_for=lambda container_id: container_lock("runc", root, container_id, opts.wait),
        state_root=root,
        cgroup_mode=opts.manage_cgroups_mode,
    )
    update: dict[str, object] = {
        "image_path": prepared.image_dir,
        "container_id": prepared.container_id,
        "bundle": prepared.bundle,
        "root": root,
        "runtime": "runc" if opts.runtime == "auto" else opts.runtime,
        "force": opts.force or not (prepared.image_dir / MANIFEST_NAME).is_file(),
    }
    if not (prepared.image_dir / MANIFEST_NAME).is_file():
        prepared.notes.append(f"a {prepared.summary.format} archive: no crgpu.json, restored with runc")
    return opts.model_copy(update=update), prepared


def _image_for_restore(opts: RestoreOptions) -> tuple[Manifest | None, list[str]]:
    """The image's manifest, and what may be taken from it: a manifest this node signed names
    the state root and bundle; any other needs them from the operator (or --trust-image)."""
    try:
        image = read_image(opts.image_dir)
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


def plan_restore(opts: RestoreOptions, dry_run: bool = False) -> RestorePlan:
    require_privileges("restore")
    if not is_archive(opts.image_dir):
        return _plan_restore(opts, [])
    if dry_run:
        raise PreconditionError(
            "a dry run of an archive's restore would unpack it",
            hint="see what it holds with `crgpu inspect ARCHIVE`",
        )
    opts, prepared = _from_archive(opts)
    try:
        return replace(_plan_restore(opts, prepared.notes), archive=prepared)
    except BaseException:
        prepared.discard()  # refused after unpacking: take back the mount and the files
        raise


def _plan_restore(opts: RestoreOptions, archive_notes: list[str]) -> RestorePlan:
    manifest, trust_notes = _image_for_restore(opts)
    trust_notes = [*archive_notes, *trust_notes]
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
    spec = read_bundle_spec(bundle)
    if opts.console_socket is None and _has_terminal(spec):
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
    _refuse_behind_engine(manifest, container_id, root)  # first: its hint is the engine's command
    refuse_existing(container_id, runtime, root)
    _refuse_shared_bundle(bundle, root, manifest, opts.lazy_pages)
    _require_rootfs(bundle, spec)
    try:
        adapter = adapter_for(runtime)
    except NotFoundError as exc:
        raise PreconditionError(
            f"the image needs {runtime}, which is not usable here: {exc.message}", hint=exc.hint
        ) from exc
    warnings: list[str] = list(trust_notes)
    gpu_map: dict[str, str] | None = None
    if manifest is not None:
        if manifest.runtime.name != runtime:
            warnings.append(
                f"--force overrides: the image was made by {manifest.runtime.name}, restoring with {runtime}"
            )
        here = host_record(with_criu=runtime == "runc", with_gpus=manifest.container.gpu)
        warnings += enforce(restore_findings(manifest, here, runtime), opts.force)
        gpu_map = _gpu_map(manifest, here, spec, opts.force, warnings)
    work_dir = opts.work_path or work_dir_for(container_id, "restore")
    global_flags = manifest.runtime.global_flags if manifest else []
    criu_extra = _cuda_restore_needs(manifest, opts, runtime, warnings)
    invocation = adapter.restore_invocation(
        opts, container_id, root, bundle, work_dir, global_flags, criu_extra
    )
    if manifest is not None and manifest.container.gpu:
        warnings += adapter.check_gpu_restore(opts.force, tuple(invocation.global_flags))
    invocation = replace(invocation, notes=[*invocation.notes, *warnings])
    return RestorePlan(opts, adapter, container_id, root, bundle, work_dir, invocation, manifest, gpu_map)


def _gpu_map(
    manifest: Manifest, here: HostRecord, spec: dict[str, Any], force: bool, warnings: list[str]
) -> dict[str, str] | None:
    """Where a driver-API image's CUDA state goes: the GPUs its processes used, onto the GPUs the
    bundle gives the restored container (decided before anything runs, shown by --dry-run)."""
    if manifest.cuda.get("mode") != "driver-api" or not manifest.cuda.get("processes"):
        return None
    try:
        pairs, notes = plan_device_map(
            [g for g in manifest.host.gpus if GPU_UUID.fullmatch(g.uuid)],
            gpus_used(manifest) or None,
            here.gpus,
            given_gpus(spec, here.gpus),
        )
    except PreconditionError as exc:
        if not force:
            raise
        warnings.append(f"--force overrides: {exc.message}")
        return None
    warnings += [*notes, *describe(pairs)]
    return pairs


def _refuse_behind_engine(manifest: Manifest | None, container_id: str, root: Path) -> None:
    """A container an engine owned goes back through the engine, or becomes crgpu's own under
    another ID or state root: never back into the engine's root behind its back."""
    engine = manifest.container.engine if manifest is not None else None
    if engine is None or manifest is None:
        return
    if container_id == manifest.container.id or root == Path(manifest.runtime.root):
        who = Engine(engine.kind, engine.name, engine.namespace, engine.pod)
        raise PreconditionError(
            f"the image is of a container {who.label()} owned ({engine.name or manifest.container.id}): "
            "restoring it behind the engine's back leaves the engine wrong about it",
            hint=who.restore_hint(manifest.container.id),
        )


def _require_rootfs(bundle: Path, spec: dict[str, Any]) -> None:
    """An engine unmounts a stopped container's root filesystem; restoring onto the empty mount
    point fails in CRIU and leaves stubs that break the engine's own clean-up."""
    rootfs = bundle_rootfs(bundle, spec)
    if rootfs is None:
        return
    try:
        empty = not any(rootfs.iterdir())
    except OSError:
        empty = True
    if empty:
        raise PreconditionError(
            f"the bundle's root filesystem {rootfs} is missing or empty (not mounted?)",
            hint="mount the container's root filesystem first (an engine's container: restore it through the "
            "engine), or give --bundle with a complete one",
        )


def _has_terminal(spec: dict[str, Any]) -> bool:
    process = spec.get("process")
    return isinstance(process, dict) and process.get("terminal") is True


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


def _cuda_restore_needs(
    manifest: Manifest | None, opts: RestoreOptions, runtime: str, warnings: list[str]
) -> tuple[str, ...]:
    """What restoring the image's GPU state needs here: CRIU's plugin and cuda-checkpoint for a
    plugin image (else the plugin disables itself and CRIU "succeeds" with CUDA still checkpointed),
    a detached restore for a driver-API image (crgpu puts its GPU state back after runc returns)."""
    mode = manifest.cuda.get("mode") if manifest is not None else None
    if mode == "driver-api" and not opts.detach:
        raise PreconditionError(
            "the image's GPU state is put back by crgpu after the runtime returns: --no-detach would wait "
            "for a container that waits for its GPU",
            hint="restore detached (the default)",
        )
    if mode != "plugin" or runtime != "runc":
        return ()
    try:
        if shutil.which("cuda-checkpoint") is None:
            raise PreconditionError(
                "the image was made with CRIU's CUDA plugin and cuda-checkpoint is not on PATH here: "
                "the plugin would disable itself and leave the CUDA processes checkpointed",
                hint="install cuda-checkpoint (NVIDIA), or restore on a node that has it",
            )
        timeout = manifest.options.get("cuda_lock_timeout_ms") if manifest is not None else None
        return plugin_criu_config(timeout if isinstance(timeout, int) and 0 <= timeout < 2**31 else 10_000)
    except PreconditionError as exc:
        if not opts.force:
            raise
        warnings.append(f"--force overrides: {exc.message}")
        return ()


def refuse_existing(container_id: str, runtime: str, root: Path) -> None:
    if not locate(container_id, runtime, root):  # type: ignore[arg-type]
        return
    try:
        engine = find_container(container_id, runtime, root).engine  # type: ignore[arg-type]
    except CrgpuError:
        engine = None
    if engine is not None:
        # Never a runtime command for an engine's container: the engine would be left wrong.
        raise PreconditionError(
            f"a container {container_id!r} of {engine.label()} already exists under {root}",
            hint=f"restore under another ID and --root (remove {engine.label()}'s container only through "
            f"{engine.label()})",
        )
    raise PreconditionError(
        f"a container {container_id!r} already exists under {root}",
        hint=f"remove it first (`{runtime} --root {root} delete --force {container_id}`, which stops it) or "
        "restore under another ID",
    )


def _refuse_shared_bundle(bundle: Path, root: Path, manifest: Manifest | None, lazy: bool) -> None:
    """A restored copy never runs inside a live container: in its bundle it would share the
    live one's root filesystem, its cgroup and its network namespace. The one exception is the
    other half of a lazy migration: the source stays frozen while it serves its pages, and CRIU
    ends it once they are moved."""
    extra = [root] + ([Path(manifest.runtime.root)] if manifest is not None else [])
    holder = bundle_holder(bundle, extra)
    if holder is None:
        return
    holder_id, holder_root = holder
    if (
        lazy
        and manifest is not None
        and manifest.options.get("lazy_pages") is True
        and (holder_id == manifest.container.id)
    ):
        return
    raise PreconditionError(
        f"the bundle {bundle} is that of container {holder_id!r} under {holder_root}, which still exists: a "
        "copy restored there would share its root filesystem, cgroup and network namespace",
        hint="restore into a bundle of its own (--bundle DIR), or through an archive (`crgpu export`, then "
        "`crgpu restore -i ARCHIVE --rootfs DIR NEW-ID`: its own overlay, cgroup and network namespace)",
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


def restore_dry_run(plan: RestorePlan) -> OperationResult:
    result = new_result(
        "restore",
        plan.adapter,
        plan.container_id,
        plan.options.image_dir,
        plan.work_dir,
        plan.invocation,
        plan.gpu,
    )
    result.dry_run = True
    return result
