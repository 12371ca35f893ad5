"""What every runtime adapter shares: invocations, container facts, binaries, the adapter protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from crgpu.host.versions import version_tuple
from crgpu.runtimes.engines import Engine

if TYPE_CHECKING:
    from crgpu.options.models import CheckpointOptions, RestoreOptions


# The file descriptor number under which the runtime gets crgpu's status pipe (lazy checkpoints).
RUNTIME_STATUS_FD = 3


@dataclass(frozen=True)
class Invocation:
    """One runtime call, complete: what --dry-run prints and process.py runs."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    criu_config: str | None = None
    criu_config_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    # The runtime's global flags this call uses (runsc: the sandbox's, carried into crgpu.json).
    global_flags: list[str] = field(default_factory=list)
    # A helper crgpu runs beside the runtime: CRIU's lazy-pages daemon for a lazy restore.
    helper_argv: list[str] = field(default_factory=list)
    # Runs before `argv`, in order: pre-dump rounds.
    before: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class ContainerInfo:
    """A container as found in a runtime's state root."""

    id: str
    runtime: str
    root: Path
    state_path: Path
    pid: int | None = None
    bundle: Path | None = None
    rootfs: Path | None = None  # the spec's root.path, resolved against the bundle
    gpu: bool = False
    gpu_evidence: tuple[str, ...] = ()  # what was found: hook, cdi, env, device, annotation, nvproxy-flag
    gpu_note: str | None = None  # why evidence found does not make it a GPU container
    status: str | None = None
    global_flags: list[str] = field(default_factory=list)
    engine: Engine | None = None  # podman, Kubernetes, containerd or Docker, when one owns it


@dataclass(frozen=True)
class RuntimeBinary:
    """A runtime executable and the flags its help texts say it accepts."""

    name: str
    path: Path
    version: str
    checkpoint_flags: frozenset[str]
    restore_flags: frozenset[str]
    global_flags: frozenset[str] = frozenset()
    help_texts: dict[str, str] = field(default_factory=dict)

    def version_tuple(self) -> tuple[int, ...]:
        return version_tuple(self.version)


def option_flag(field: str) -> str:
    """The crgpu flag of an options field: `link_remap` -> `--link-remap`."""
    return "--" + field.replace("_", "-")


class BinaryAdapter:
    """What both adapters share: the binary they drive, and how they name it to the operator."""

    name = ""

    def __init__(self, binary: RuntimeBinary) -> None:
        self.binary = binary

    @property
    def label(self) -> str:
        return f"{self.name} {self.binary.version}"


class RuntimeAdapter(Protocol):
    """What plan, checkpoint and restore need of a runtime; runc.py and runsc.py each implement it."""

    name: str
    binary: RuntimeBinary

    @property
    def label(self) -> str: ...

    def checkpoint_invocation(
        self, opts: CheckpointOptions, info: ContainerInfo, work_dir: Path, criu_extra: tuple[str, ...] = ()
    ) -> Invocation: ...

    def restore_invocation(
        self,
        opts: RestoreOptions,
        container_id: str,
        root: Path,
        bundle: Path,
        work_dir: Path,
        global_flags: list[str],
        criu_extra: tuple[str, ...] = (),
    ) -> Invocation: ...

    def status(self, container_id: str, root: Path) -> str | None: ...

    def cleanup_after_checkpoint(self, container_id: str, root: Path) -> None: ...

    def pause(self, container_id: str, root: Path) -> None: ...

    def resume(self, container_id: str, root: Path) -> None: ...

    def delete(self, container_id: str, root: Path) -> None: ...

    def check_gpu_restore(self, force: bool, global_flags: tuple[str, ...] = ()) -> list[str]: ...

    def log_paths(self, verb: str, work_dir: Path, global_flags: list[str]) -> list[Path]: ...
