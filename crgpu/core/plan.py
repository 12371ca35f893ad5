"""Plans: validate, detect and map a checkpoint or restore onto its runtime, before anything runs.

A plan is complete and immutable: `--dry-run` prints it, the executions run it unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from crgpu.host import config
from crgpu.host.errors import PreconditionError
from crgpu.image.manifest import Manifest
from crgpu.nvidia.cuda_processes import CudaProcess
from crgpu.options.models import CheckpointOptions, RestoreOptions
from crgpu.runtimes.base import ContainerInfo, Invocation, RuntimeAdapter

if TYPE_CHECKING:
    from crgpu.image.archive_restore import PreparedArchive

Adapter = RuntimeAdapter


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


def work_dir_for(container_id: str, kind: str) -> Path:
    """A new dir under the node's work root: WORK_ROOT/ID/KIND-TIMESTAMP."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
    return Path(config.get("work_root").value) / container_id / f"{kind}-{stamp}"
