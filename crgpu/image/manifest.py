"""The checkpoint directory: created safely, never overwritten, complete only once crgpu.json exists."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from crgpu import __version__
from crgpu.host.errors import ImagePathError, NotFoundError, PreconditionError
from crgpu.host.safedirs import check_private_dir, read_nofollow, space_hint, take_private_dir
from crgpu.host.textsafe import unencodable
from crgpu.image.signing import Trust, sign, verify
from crgpu.nvidia.evidence import KINDS as GPU_EVIDENCE_KINDS
from crgpu.nvidia.gpu_map import GPU_UUID
from crgpu.options.models import check_container_id, check_path_lengths

MANIFEST_NAME = "crgpu.json"
SCHEMA_VERSION = 1
MANIFEST_MAX_BYTES = 4 * 1024 * 1024
# Sizes and counts crgpu writes stay far below this; anything above is not from crgpu.
MAX_COUNT = 2**63 - 1


def _absolute_path(value: str) -> str:
    check_path_lengths(value)
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path")
    return value


AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]
ContainerId = Annotated[str, AfterValidator(check_container_id)]
_MetaKey = Annotated[str, Field(max_length=317)]  # a Kubernetes label key: 253-byte prefix, '/', 63
_MetaValue = Annotated[str, Field(max_length=16384)]
# podman's rule for a network's name (libnetwork/util NameRegex).
_NetworkName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]


class _Record(BaseModel):
    # Unknown members are kept (a newer crgpu may add some) but never used; NaN/Infinity refused.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class RuntimeRecord(_Record):
    name: Literal["runc", "runsc"]
    version: str = Field(max_length=256)
    path: str = Field(max_length=4096)
    root: AbsolutePath
    global_flags: list[str] = Field(default_factory=list, max_length=256)


class EngineRecord(_Record):
    kind: Literal["podman", "kubernetes", "containerd", "docker"]
    name: str | None = Field(default=None, max_length=256)
    namespace: str | None = Field(default=None, max_length=256)
    pod: str | None = Field(default=None, max_length=256)
    image: str | None = Field(default=None, max_length=4096)
    image_id: str | None = Field(default=None, max_length=256)
    # Kubernetes: what containerd's CRI recorded (cri_meta), which a kubelet archive carries so
    # the restored container is the kubelet's same container (hash annotation, digest image).
    labels: dict[_MetaKey, _MetaValue] = Field(default_factory=dict, max_length=256)
    annotations: dict[_MetaKey, _MetaValue] = Field(default_factory=dict, max_length=256)
    cri_name: str | None = Field(default=None, max_length=1024)
    created_at: str | None = Field(default=None, max_length=64)
    image_ref: str | None = Field(default=None, max_length=4096)
    # podman: how the container got its network (`bridge`, `none`, `host`, ...) and the networks
    # it joined, which podman's archive needs to give a restored copy a namespace of its own.
    network_mode: str | None = Field(default=None, pattern=r"^[a-z0-9]{1,32}$")
    networks: list[_NetworkName] = Field(default_factory=list, max_length=32)


class ContainerRecord(_Record):
    id: ContainerId
    bundle: AbsolutePath | None = None
    # The engine that owned the container when it was checkpointed (podman, Kubernetes, ...).
    engine: EngineRecord | None = None
    pid: int | None = Field(default=None, ge=0, le=2**31)
    gpu: bool = False
    gpu_evidence: list[str] = Field(default_factory=list, max_length=16)

    @field_validator("gpu_evidence")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        return [kind for kind in value if kind in GPU_EVIDENCE_KINDS]  # a newer crgpu's kinds: ignored


class GpuRecord(_Record):
    name: str = Field(max_length=256)
    uuid: str = Field(max_length=256)
    memory_mib: int = Field(ge=0, le=MAX_COUNT)
    minor: int | None = Field(default=None, ge=0, le=2**20)


class HostRecord(_Record):
    kernel: str = Field(default="", max_length=256)
    arch: str = Field(default="", max_length=64)
    criu_version: str | None = Field(default=None, max_length=256)
    driver_version: str | None = Field(default=None, max_length=256)
    gpus: list[GpuRecord] = Field(default_factory=list, max_length=1024)


class SizesRecord(_Record):
    total_bytes: int = Field(default=0, ge=0, le=MAX_COUNT)
    memory_pages_bytes: int | None = Field(default=None, ge=0, le=MAX_COUNT)


class Manifest(_Record):
    schema_version: int = SCHEMA_VERSION
    crgpu_version: str = Field(default=__version__, max_length=256)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(), max_length=64)
    runtime: RuntimeRecord
    container: ContainerRecord
    options: dict[str, Any] = Field(default_factory=dict)
    host: HostRecord = Field(default_factory=HostRecord)
    stats: dict[str, float] = Field(default_factory=dict)
    cuda: dict[str, Any] = Field(default_factory=dict)
    sizes: SizesRecord = Field(default_factory=SizesRecord)

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {value} is not one this crgpu reads (it reads {SCHEMA_VERSION})"
            )
        return value

    @field_validator("stats")
    @classmethod
    def _stats_bounded(cls, value: dict[str, float]) -> dict[str, float]:
        if any(abs(v) > MAX_COUNT for v in value.values()):
            raise ValueError("a statistic is out of range")
        return value

    @field_validator("cuda")
    @classmethod
    def _cuda_pids(cls, value: dict[str, Any]) -> dict[str, Any]:
        for process in value.get("processes") or []:
            pid = process.get("ns_pid") if isinstance(process, dict) else None
            if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2**22:
                raise ValueError("cuda.processes holds an entry without a valid ns_pid")
            _check_uuids(process.get("gpus"), "cuda.processes[].gpus")
            held = process.get("gpu_bytes")
            if held is not None and not _byte_count(held):
                raise ValueError("cuda.processes[].gpu_bytes is not a byte count")
            per_gpu = process.get("gpu_memory")
            if per_gpu is not None:
                if not isinstance(per_gpu, dict) or not all(_byte_count(v) for v in per_gpu.values()):
                    raise ValueError("cuda.processes[].gpu_memory is not bytes per GPU")
                _check_uuids(list(per_gpu), "cuda.processes[].gpu_memory")
        _check_uuids(value.get("container_gpus"), "cuda.container_gpus")
        return value


def _byte_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**50


def _check_uuids(value: Any, where: str) -> None:
    """A list of GPU UUIDs (what crgpu records of NVML and the spec), or absent."""
    if value is None:
        return
    if (
        not isinstance(value, list)
        or len(value) > 1024
        or not all(isinstance(u, str) and GPU_UUID.fullmatch(u) for u in value)
    ):
        raise ValueError(f"{where} is not a list of GPU UUIDs")


@dataclass(frozen=True)
class Image:
    """A checkpoint's manifest, and who wrote it as far as this node can tell."""

    manifest: Manifest
    trust: Trust


def image_sizes(image_dir: Path) -> SizesRecord:
    """Bytes on disk, and the part holding memory pages (CRIU's pages-N.img, runsc's pages.img)."""
    total = 0
    pages = 0
    seen_pages = False
    for entry in image_dir.iterdir():
        if entry.name == MANIFEST_NAME or entry.is_symlink() or not entry.is_file():
            continue
        size = entry.stat().st_size
        total += size
        if entry.name.startswith("pages-") or entry.name == "pages.img":
            pages += size
            seen_pages = True
    return SizesRecord(total_bytes=total, memory_pages_bytes=pages if seen_pages else None)


def check_image_path_free(path: Path) -> bool:
    """Refuse, untouched, an image path crgpu must not write: a symlink, a file, a non-empty dir,
    one prepared by someone else. True when it exists (an empty dir crgpu may take), False when
    it is still to be made."""
    exists = check_private_dir(path, "image path")
    if exists and any(path.iterdir()):
        raise ImagePathError(
            f"image path {path} exists and is not empty; crgpu never overwrites a checkpoint",
            hint="choose a new --image-path, or remove the old checkpoint yourself",
        )
    return exists


def prepare_image_dir(path: Path) -> Path:
    """Create the image dir 0700, or take an existing empty one of root's; refuse anything else."""
    return take_private_dir(path, "image path", empty=True)


def prepare_work_dir(path: Path) -> Path:
    return take_private_dir(path, "work path", empty=False)


def write_manifest(image_dir: Path, manifest: Manifest) -> Path:
    """Write crgpu.json, signed with this node's key, atomically (temporary file, fsync, rename,
    fsync of the dir)."""
    target = image_dir / MANIFEST_NAME
    tmp = image_dir / f".{MANIFEST_NAME}.tmp"
    document = manifest.model_dump(mode="json", exclude={"signature"})
    document["signature"] = sign(document)
    data = json.dumps(document, indent=2, allow_nan=False).encode() + b"\n"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, target)
        dir_fd = os.open(image_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ImagePathError(f"cannot write {target}: {exc.strerror}", hint=space_hint(exc)) from exc
    return target


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _not_root(path: Path) -> PreconditionError:
    """Images and work dirs are root's (0700): a refusal names the user, not the image."""
    return PreconditionError(
        f"cannot read {path}: permission denied", hint="run crgpu as root: its images are root's"
    )


def read_image(image_dir: Path) -> Image:
    """The manifest of a checkpoint directory, validated as hostile input, and its trust."""
    path = image_dir / MANIFEST_NAME
    try:
        os.lstat(image_dir)
    except FileNotFoundError:
        raise NotFoundError(
            f"image path {image_dir} does not exist",
            hint="give the checkpoint's directory or archive (`crgpu gc` lists the images crgpu knows)",
        ) from None
    except PermissionError as exc:
        raise _not_root(image_dir) from exc
    if not image_dir.is_dir():
        raise ImagePathError(
            f"image path {image_dir} is not a directory", hint="give the checkpoint's directory"
        )
    damaged = "restore with --force plus the container ID, --runtime, --root and --bundle"
    try:
        raw = read_nofollow(path, MANIFEST_MAX_BYTES + 1)
    except FileNotFoundError:
        raise PreconditionError(
            f"{image_dir} has no {MANIFEST_NAME}: the checkpoint is incomplete or not made by crgpu",
            hint="restore it with --force plus the container ID, --runtime and --bundle, at your own risk",
        ) from None
    except PermissionError as exc:
        if os.geteuid() != 0:
            raise _not_root(path) from exc
        raise PreconditionError(
            f"{path} is not a regular file crgpu can read ({exc.strerror})", hint=damaged
        ) from exc
    except OSError as exc:
        raise PreconditionError(
            f"{path} is not a regular file crgpu can read ({exc.strerror})", hint=damaged
        ) from exc
    return parse_manifest(raw, str(path))


def parse_manifest(raw: bytes, path: str) -> Image:
    """A manifest's bytes (from an image dir or an archive), validated as hostile input."""
    damaged = "restore with --force plus the container ID, --runtime, --root and --bundle"
    if len(raw) > MANIFEST_MAX_BYTES:
        raise PreconditionError(f"{path} is larger than {MANIFEST_MAX_BYTES} bytes: not a crgpu manifest")
    try:
        document = json.loads(raw, parse_constant=_no_constants)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        bad = unencodable(document)
        if bad is not None:
            raise ValueError(f"it holds text that is not valid Unicode ({bad})")
        manifest = Manifest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise PreconditionError(f"{path} is damaged or not crgpu's: {where}: {reason}", hint=damaged) from exc
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PreconditionError(f"{path} is not valid JSON: {str(exc)[:200]}", hint=damaged) from exc
    return Image(manifest, verify(document))
