"""What one checkpoint or restore did: the one JSON document of `--json`, errors included."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from crgpu.host.errors import Interrupted
from crgpu.runtimes.base import Invocation
from crgpu.runtimes.base import RuntimeAdapter as Adapter


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
    # Whether crgpu takes the container for a GPU container, and what said so (nvidia/evidence.py).
    gpu: bool | None = None
    gpu_evidence: list[str] = field(default_factory=list)
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
    # Seconds: startup_s, plan_s, runtime_s (the runtime call, CRIU included), post_s (crgpu's own
    # work around it: lock, directories, CUDA, statistics, manifest, clean-up).
    timings: dict[str, float] = field(default_factory=dict)
    detail: list[str] = field(default_factory=list)
    # The image's bytes on disk and the rate the runtime wrote (checkpoint) or read (restore) them:
    # image_bytes, pages_bytes, image_bytes_per_s.
    sizes: dict[str, float] = field(default_factory=dict)
    # The container as the operator named it (a podman or Kubernetes name), beside container_id,
    # the runtime's ID it resolved to.
    container: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def error_document(
    message: str, hint: str | None, exit_code: int, detail: list[str], context: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The document `--json` prints for an error before or outside a run: the keys of a run's
    document (so scripts read one shape), what was known filled (`context`: verb, container, GPU
    verdict), the rest empty or null."""
    doc: dict[str, Any] = {}
    for item in fields(OperationResult):
        if item.default is not MISSING:
            doc[item.name] = item.default
        elif item.default_factory is not MISSING:
            doc[item.name] = item.default_factory()
        else:
            doc[item.name] = [] if item.name in ("argv", "notes") else {} if item.name == "env" else None
    doc.update({key: value for key, value in (context or {}).items() if key in doc})
    doc.update(ok=False, error=message, hint=hint, exit_code=exit_code, detail=detail)
    return doc


def new_result(
    verb: str,
    adapter: Adapter,
    container_id: str,
    image: Path,
    work: Path,
    inv: Invocation,
    gpu: tuple[bool | None, tuple[str, ...]] = (None, ()),
) -> OperationResult:
    return OperationResult(
        gpu=gpu[0],
        gpu_evidence=list(gpu[1]),
        verb=verb,
        ok=True,
        runtime=adapter.name,
        runtime_version=adapter.binary.version,
        container_id=container_id,
        image_path=str(image),
        work_path=str(work),
        # Copies: what a run adds to its result never changes the plan it ran.
        argv=list(inv.argv),
        pre_dump_argv=[list(argv) for argv in inv.before],
        helper_argv=list(inv.helper_argv),
        env=dict(inv.env),
        criu_config=inv.criu_config,
        notes=list(inv.notes),
    )


def raise_if_interrupted(result: OperationResult, adapter: Adapter, root: Path) -> None:
    if result.interrupted_by is None:
        return
    if result.verb == "restore":
        # A restore reads its image and never changes it; a container that is gone has no state to show.
        kept = "the image is unchanged"
        hint = (
            f"`{adapter.name} --root {root} state {result.container_id}` shows the container"
            if result.container_status
            else f"restore it again: `crgpu restore -i {result.image_path} {result.container_id}`"
        )
    else:
        kept = (
            "the image is complete"
            if result.ok
            else (
                "the partial image was removed"
                if result.removed_image
                else f"the partial image is kept at {result.image_path}"
            )
        )
        hint = f"`{adapter.name} --root {root} state {result.container_id}` shows the container"
    raise Interrupted(
        f"{result.verb} interrupted by signal {result.interrupted_by}; {kept}; "
        f"container now {result.container_status or 'gone'}",
        hint=hint,
        detail=[f"log: {result.log_path}"] if result.log_path else [],
    )


def image_size_figures(image_dir: Path, seconds: float) -> dict[str, float]:
    """The `sizes` of a result: the image's bytes and its bytes per second of the runtime call."""
    from crgpu.image.manifest import image_sizes

    try:
        sizes = image_sizes(image_dir)
    except OSError:
        return {}
    out: dict[str, float] = {"image_bytes": sizes.total_bytes}
    if sizes.memory_pages_bytes is not None:
        out["pages_bytes"] = sizes.memory_pages_bytes
    if seconds > 0:
        out["image_bytes_per_s"] = round(sizes.total_bytes / seconds)
    return out
