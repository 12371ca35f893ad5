"""The checkpoint directory: created safely, never overwritten, complete only once crgpu.json exists."""

from __future__ import annotations

import errno
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crgpu import __version__
from crgpu.errors import ImagePathError, PreconditionError

MANIFEST_NAME = "crgpu.json"
SCHEMA_VERSION = 1


class RuntimeRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    path: str
    root: str
    global_flags: list[str] = Field(default_factory=list)


class ContainerRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    bundle: str | None = None
    pid: int | None = None
    gpu: bool = False


class GpuRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    uuid: str
    memory_mib: int


class HostRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    kernel: str = ""
    arch: str = ""
    criu_version: str | None = None
    driver_version: str | None = None
    gpus: list[GpuRecord] = Field(default_factory=list)


class SizesRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    total_bytes: int = 0
    memory_pages_bytes: int | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    crgpu_version: str = __version__
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    runtime: RuntimeRecord
    container: ContainerRecord
    options: dict[str, Any] = Field(default_factory=dict)
    host: HostRecord = Field(default_factory=HostRecord)
    stats: dict[str, float] = Field(default_factory=dict)
    cuda: dict[str, Any] = Field(default_factory=dict)
    sizes: SizesRecord = Field(default_factory=SizesRecord)


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
    """Refuse, untouched, an image path crgpu must not write: a symlink, a file, a non-empty dir.
    True when it exists (an empty dir crgpu may take), False when it is still to be made."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ImagePathError(f"cannot check image path {path}: {exc.strerror}") from exc
    if stat.S_ISLNK(info.st_mode):
        raise ImagePathError(
            f"image path {path} is a symlink; crgpu does not follow symlinks",
            hint="give the real directory",
        )
    if not stat.S_ISDIR(info.st_mode):
        raise ImagePathError(f"image path {path} exists and is not a directory", hint="choose a new path")
    if any(path.iterdir()):
        raise ImagePathError(
            f"image path {path} exists and is not empty; crgpu never overwrites a checkpoint",
            hint="choose a new --image-path, or remove the old checkpoint yourself",
        )
    return True


def prepare_image_dir(path: Path) -> Path:
    """Create the image dir 0700, or take an existing empty one; refuse anything else, untouched."""
    if check_image_path_free(path):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
    except OSError as exc:
        raise ImagePathError(
            f"cannot create image path {path}: {exc.strerror}",
            hint=_space_hint(exc) or "check the parent directory's permissions and mount",
        ) from exc
    return path


def prepare_work_dir(path: Path) -> Path:
    if path.is_symlink():
        raise ImagePathError(f"work path {path} is a symlink; crgpu does not follow symlinks")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ImagePathError(
            f"cannot create work path {path}: {exc.strerror}", hint=_space_hint(exc)
        ) from exc
    return path


def _space_hint(exc: OSError) -> str | None:
    if exc.errno == errno.ENOSPC:
        return "the filesystem is full: free space or choose another path"
    if exc.errno == errno.EROFS:
        return "the filesystem is read-only: choose a writable path"
    return None


def write_manifest(image_dir: Path, manifest: Manifest) -> Path:
    """Write crgpu.json atomically (temporary file, fsync, rename, fsync of the dir)."""
    target = image_dir / MANIFEST_NAME
    tmp = image_dir / f".{MANIFEST_NAME}.tmp"
    data = manifest.model_dump_json(indent=2).encode() + b"\n"
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
        raise ImagePathError(f"cannot write {target}: {exc.strerror}", hint=_space_hint(exc)) from exc
    return target


def read_manifest(image_dir: Path) -> Manifest:
    path = image_dir / MANIFEST_NAME
    if not image_dir.is_dir():
        raise ImagePathError(
            f"image path {image_dir} is not a directory", hint="give the checkpoint's directory"
        )
    if not path.is_file():
        raise PreconditionError(
            f"{image_dir} has no {MANIFEST_NAME}: the checkpoint is incomplete or not made by crgpu",
            hint="restore it with --force plus the container ID, --runtime and --bundle, at your own risk",
        )
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise PreconditionError(
            f"{path} is unreadable or damaged: {str(exc).splitlines()[0]}",
            hint="restore with --force plus the container ID, --runtime and --bundle",
        ) from exc
