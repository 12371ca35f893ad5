"""What a checkpoint records beside CRIU's images: the container's files it keeps (the spec, the writable layer) and the manifest, with the host, engine, GPUs and CUDA processes it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from crgpu.core.hostinfo import host_record
from crgpu.core.plan import CheckpointPlan
from crgpu.core.result import OperationResult
from crgpu.host.errors import PreconditionError
from crgpu.host.safedirs import read_nofollow, write_new_private
from crgpu.image.archive_names import SPEC_DUMP
from crgpu.image.manifest import (
    ContainerRecord,
    EngineRecord,
    HostRecord,
    Manifest,
    RuntimeRecord,
    image_sizes,
    write_manifest,
)
from crgpu.image.rootfs_diff import write_rootfs_diff
from crgpu.nvidia.cuda_flow import DriverApiSession
from crgpu.nvidia.cuda_processes import CudaProcess
from crgpu.nvidia.gpu_map import given_gpus
from crgpu.options.models import RuntimeName
from crgpu.runtimes.cri_meta import cri_details
from crgpu.runtimes.state import SPEC_MAX_BYTES, read_bundle_spec


def record_container_files(plan: CheckpointPlan, result: OperationResult, upper: Path | None) -> None:
    """What the engines' archives carry besides CRIU's images, kept in the image so it can leave
    the node later (crgpu export): the container's OCI spec (spec.dump), CRIU's statistics when
    they went to another work dir, and the writable layer (`upper`: the overlay's upper dir)."""
    image, info = plan.options.image_dir, plan.container
    try:
        if info.bundle is not None:
            spec = read_nofollow(info.bundle / "config.json", SPEC_MAX_BYTES)
            write_new_private(image / SPEC_DUMP, spec)
        stats = plan.work_dir / "stats-dump"
        if plan.work_dir != image and stats.is_file():
            write_new_private(image / "stats-dump", read_nofollow(stats, SPEC_MAX_BYTES))
        if upper is not None:
            entries, deleted = write_rootfs_diff(upper, image)
            result.notes.append(f"the writable layer recorded: {entries} entries, {deleted} deleted")
    except (OSError, PreconditionError) as exc:
        result.warnings.append(f"the container's spec or writable layer could not be recorded: {exc}")


def record_checkpoint(
    plan: CheckpointPlan, stats: dict[str, float], session: DriverApiSession | None
) -> None:
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
            engine=_engine_record(_engine_details(plan)) if info.engine else None,
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


def _engine_details(plan: CheckpointPlan) -> dict[str, Any]:
    """The engine's record of the container; for Kubernetes, with what containerd's CRI keeps of
    it that the kubelet's archive carries (labels, annotations, digest image)."""
    info = plan.container
    assert info.engine is not None
    record: dict[str, Any] = info.engine.record()
    if info.engine.kind == "kubernetes":
        record |= cri_details(info.id, info.pid, info.root.name)
    return record


def _engine_record(record: dict[str, Any]) -> EngineRecord:
    """The engine as the manifest records it. Names come from the engine's own data (podman's
    answer, Docker's config.v2.json, annotations): one the manifest cannot hold is left out, and
    the checkpoint that already ran is not lost over it."""
    try:
        return EngineRecord.model_validate(record)
    except ValidationError as exc:
        bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        return EngineRecord.model_validate({k: v for k, v in record.items() if k not in bad or k == "kind"})


def _process_record(proc: CudaProcess, session: DriverApiSession | None) -> dict[str, Any]:
    """A checkpointed CUDA process, with the GPUs NVML saw it use (what a restore must map) and the
    bytes it held there (a restore's deadline and its free-memory check)."""
    use = session.gpu_use.get(proc.host_pid) if session else None
    seen = {"gpus": list(use.uuids), "gpu_bytes": use.bytes, "gpu_memory": use.on()} if use else {}
    return {"ns_pid": proc.ns_pid, "comm": proc.comm, **seen}


def _container_gpus(bundle: Path | None, host: HostRecord) -> dict[str, Any]:
    """The GPUs the container's spec gave it, when the spec says (a restore without NVML's
    per-process view maps these)."""
    given = given_gpus(read_bundle_spec(bundle), host.gpus)
    return {"container_gpus": given} if given is not None else {}
