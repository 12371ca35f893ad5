"""The restore's plan: the image or archive it restores, the bundle, root and ID checked, what a restore must never do (share a live container, go behind an engine), the GPU map and the CUDA needs; and its dry run."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crgpu.core.hostinfo import host_record
from crgpu.core.plan import RestorePlan, adapter_for, work_dir_for
from crgpu.core.plan_checkpoint import plugin_criu_config
from crgpu.core.result import OperationResult, new_result
from crgpu.core.runtime_call import no_plugins_config, require_privileges
from crgpu.host.errors import CrgpuError, NotFoundError, PreconditionError, error_context
from crgpu.host.locks import container_lock
from crgpu.image.archive_names import ProgressOpener, is_archive
from crgpu.image.guard import enforce, gpus_used, restore_findings
from crgpu.image.manifest import MANIFEST_NAME, HostRecord, Manifest, read_image
from crgpu.nvidia.gpu import persistence_modes
from crgpu.nvidia.gpu_map import GPU_UUID, describe, given_gpus, plan_device_map
from crgpu.nvidia.restore_preflight import check_driver_api_restore
from crgpu.options.models import RestoreOptions
from crgpu.runtimes.detect import bundle_holder, choose_runtime, find_container, locate
from crgpu.runtimes.engines import Engine
from crgpu.runtimes.state import bundle_rootfs, read_bundle_spec

if TYPE_CHECKING:
    from crgpu.image.archive_restore import PreparedArchive


def _from_archive(
    opts: RestoreOptions, progress: ProgressOpener | None
) -> tuple[RestoreOptions, PreparedArchive]:
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
        netns=opts.netns,
        progress=progress,
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


def plan_restore(
    opts: RestoreOptions, dry_run: bool = False, progress: ProgressOpener | None = None
) -> RestorePlan:
    """`progress` opens the progress bar an archive's unpacking shows (the caller's, by title)."""
    require_privileges("restore")
    if opts.netns is not None and (opts.bundle is not None or not is_archive(opts.image_dir)):
        raise PreconditionError(
            "--netns is for an archive's restore into a bundle crgpu makes: a bundle's own spec names "
            "its network namespace",
            hint="drop --netns, or set the network namespace's path in the bundle's config.json",
        )
    if not is_archive(opts.image_dir):
        return _plan_restore(opts, [])
    if dry_run:
        raise PreconditionError(
            "a dry run of an archive's restore would unpack it",
            hint="see what it holds with `crgpu inspect ARCHIVE`",
        )
    opts, prepared = _from_archive(opts, progress)
    try:
        return replace(_plan_restore(opts, prepared.notes), archive=prepared)
    except BaseException:
        prepared.discard()  # refused after unpacking: take back the mount and the files
        raise


def _plan_restore(opts: RestoreOptions, archive_notes: list[str]) -> RestorePlan:
    manifest, trust_notes = _image_for_restore(opts)
    if manifest is None:
        return _plan_image(opts, manifest, [*archive_notes, *trust_notes])
    # A refusal's document names the container and what the image says of its GPU.
    with error_context(
        container_id=opts.container_id or manifest.container.id,
        gpu=manifest.container.gpu,
        gpu_evidence=list(manifest.container.gpu_evidence),
    ):
        return _plan_image(opts, manifest, [*archive_notes, *trust_notes])


def _plan_image(opts: RestoreOptions, manifest: Manifest | None, trust_notes: list[str]) -> RestorePlan:
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
        if manifest.cuda.get("mode") == "driver-api" and runtime == "runc":
            try:
                check_driver_api_restore(list(manifest.cuda.get("processes") or []), gpu_map)
            except PreconditionError as exc:
                if not opts.force:
                    raise
                warnings.append(f"--force overrides: {exc.message}")
    work_dir = opts.work_path or work_dir_for(container_id, "restore")
    global_flags = manifest.runtime.global_flags if manifest else []
    criu_extra = _cuda_restore_needs(manifest, opts, runtime, warnings, work_dir)
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
    manifest: Manifest | None, opts: RestoreOptions, runtime: str, warnings: list[str], work_dir: Path
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
    if mode == "driver-api" and runtime == "runc":
        return no_plugins_config(work_dir)
    if mode != "plugin" or runtime != "runc":
        return ()
    try:
        if shutil.which("cuda-checkpoint") is None:
            raise PreconditionError(
                "the image was made with CRIU's CUDA plugin and cuda-checkpoint is not on PATH here: "
                "the plugin would disable itself and leave the CUDA processes checkpointed",
                hint="install cuda-checkpoint (NVIDIA), or restore on a node that has it",
            )
        if "Disabled" in persistence_modes():
            raise PreconditionError(
                "the image was made with CRIU's CUDA plugin, and persistence mode is off here: "
                "cuda-checkpoint's restore fails 'operation not permitted' and leaves the processes "
                "checkpointed (cuda-checkpoint #25)",
                hint="turn it on first: nvidia-smi -pm 1 (or run nvidia-persistenced)",
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
