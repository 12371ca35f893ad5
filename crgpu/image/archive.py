"""Checkpoint archives in the engines' format: what `podman container checkpoint --export` writes,
what the kubelet's checkpoint API leaves in /var/lib/kubelet/checkpoints, what checkpointctl reads.

    checkpoint/        CRIU's images and runc's descriptors.json
    stats-dump         CRIU's dump statistics
    spec.dump          the container's OCI spec
    config.dump        the engine's container config (podman: libpod's; Kubernetes: the CRI's)
    status.dump        Kubernetes only: the CRI container status
    rootfs-diff.tar    the writable layer; deleted.files: what it removed
    crgpu.json         crgpu's manifest, carried along so crgpu keeps every detail

Writing streams the image through the compressor into the archive (no second copy on disk).
Reading treats the archive as hostile: only plain files and directories, relative names without
`..`, each member and the whole within the free space, nothing outside the target directory.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

from crgpu.criu.stats import parse_stats
from crgpu.host.errors import ImagePathError, PreconditionError
from crgpu.host.safedirs import free_bytes, open_new_private, read_nofollow, take_private_dir
from crgpu.host.textsafe import unencodable
from crgpu.image.archive_names import (
    CHECKPOINT_DIR,
    CONFIG_DUMP,
    DELETED_NAME,
    DIFF_NAME,
    SPEC_DUMP,
    STATS_DUMP,
    STATUS_DUMP,
)
from crgpu.image.manifest import MANIFEST_NAME, Manifest, read_image

ArchiveFormat = Literal["podman", "kubernetes"]
Compression = Literal["zstd", "gzip", "none"]
METADATA_MAX_BYTES = 16 * 1024 * 1024
MAX_MEMBERS = 1_000_000
# Files of a crgpu image that are crgpu's or the runtime's, not CRIU's images.
_NOT_CRIU = {MANIFEST_NAME, STATS_DUMP, SPEC_DUMP, DIFF_NAME, DELETED_NAME, "dump.log"}
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"
Progress = Callable[[int, int], None]


# ---------------------------------------------------------------- export
@dataclass
class ExportResult:
    archive: Path
    format: ArchiveFormat
    compression: Compression
    members: int
    input_bytes: int
    archive_bytes: int
    duration_s: float
    notes: list[str] = field(default_factory=list)


def export_image(
    image_dir: Path,
    out: Path,
    fmt: ArchiveFormat = "podman",
    compression: Compression = "zstd",
    progress: Progress | None = None,
) -> ExportResult:
    """Write a crgpu image into an engine-format archive at `out` (new; written beside it under a
    temporary name and renamed into place, so a failed export leaves nothing at `out`)."""
    started = time.monotonic()
    image = read_image(image_dir)
    manifest = image.manifest
    if manifest.runtime.name != "runc":
        raise PreconditionError(
            "the engines' archives hold CRIU images: this image was made by runsc",
            hint="restore it with crgpu restore (runsc images travel as the directory itself)",
        )
    if out.exists() or out.is_symlink():
        raise ImagePathError(f"{out} exists", hint="give a new file name, or remove it first")
    where = out.parent.resolve()
    if image_dir.resolve() in (where, *where.parents):
        raise ImagePathError(
            f"{out} is inside the image {image_dir}: the next export would pack it in",
            hint="write the archive outside the image directory",
        )
    members = _members(image_dir)
    notes = []
    config = _config_dump(manifest, fmt)
    # Small metadata first, then the files at the top, then CRIU's images.
    metadata: list[tuple[str, bytes]] = [
        (CONFIG_DUMP, _json(config)),
        (MANIFEST_NAME, read_nofollow(image_dir / MANIFEST_NAME, METADATA_MAX_BYTES)),
    ]
    if fmt == "kubernetes":
        metadata.append((STATUS_DUMP, _json(_status_dump(manifest, config))))
    if not (image_dir / DIFF_NAME).is_file():
        notes.append("the container was not on an overlay: rootfs-diff.tar is empty")
        metadata.append((DIFF_NAME, _empty_tar()))
    total = sum(size for _, _, size in members) + sum(len(data) for _, data in metadata)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    fd = open_new_private(partial)
    done = 0
    try:
        with os.fdopen(fd, "wb") as raw:
            with _compressor(raw, compression) as stream:
                tar = _TarWriter(stream)
                for name, data in metadata:
                    _add_bytes(tar, name, data)
                    done += len(data)
                added_dir = False
                for arcname, path, size in members:
                    if arcname.startswith(f"{CHECKPOINT_DIR}/") and not added_dir:
                        _add_dir(tar, CHECKPOINT_DIR)
                        added_dir = True
                    _add_file(tar, arcname, path)
                    done += size
                    if progress is not None:
                        progress(done, total)
                tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.rename(partial, out)
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise
    count = len(members) + len(metadata) + 1
    return ExportResult(
        out, fmt, compression, count, total, out.stat().st_size, round(time.monotonic() - started, 4), notes
    )


def _members(image_dir: Path) -> list[tuple[str, Path, int]]:
    """(name in the archive, file, size): CRIU's images under checkpoint/, the rest at the top."""
    found: list[tuple[str, Path, int]] = []
    top = {STATS_DUMP, SPEC_DUMP, DIFF_NAME, DELETED_NAME}
    for entry in sorted(image_dir.iterdir()):
        st = entry.lstat()
        if stat.S_ISDIR(st.st_mode) and entry.name.startswith("predump-"):
            raise PreconditionError(
                "the image was made with --pre-dump: its parent images are not part of the engines' format",
                hint="checkpoint again without --pre-dump to export it",
            )
        if not stat.S_ISREG(st.st_mode):
            continue  # links and anything else stay out
        if entry.name in top:
            found.append((entry.name, entry, st.st_size))
        elif entry.name not in _NOT_CRIU and not entry.name.startswith("crgpu-"):
            found.append((f"{CHECKPOINT_DIR}/{entry.name}", entry, st.st_size))
    found.sort(key=lambda member: (member[0].startswith(f"{CHECKPOINT_DIR}/"), member[0]))
    names = {name for name, _, _ in found}
    if f"{CHECKPOINT_DIR}/inventory.img" not in names:
        raise PreconditionError(f"{image_dir} holds no CRIU inventory.img: not a complete runc checkpoint")
    if SPEC_DUMP not in names:
        raise PreconditionError(
            f"{image_dir} has no spec.dump (an image of an older crgpu): the archive needs the container's spec",
            hint="checkpoint the container again with this crgpu",
        )
    return found


def _config_dump(manifest: Manifest, fmt: ArchiveFormat) -> dict[str, Any]:
    engine = manifest.container.engine
    name = (engine.name if engine else None) or manifest.container.id
    created = manifest.created_at
    if fmt == "podman":
        if engine is None or engine.kind != "podman" or not engine.image or not engine.image_id:
            raise PreconditionError(
                "podman restores an archive onto the container's image, and this image does not name one "
                "(its container was not podman's)",
                hint="export --format kubernetes, or checkpoint a podman container",
            )
        return {
            "id": manifest.container.id,
            "name": name,
            "rootfsImageName": engine.image,
            "rootfsImageID": engine.image_id,
            "runtime": "runc",
            "createdTime": created,
        }
    image = engine.image if engine and engine.image else ""
    return {
        "id": manifest.container.id,
        "name": name,
        "rootfsImageName": image,
        "rootfsImageRef": image,
        "runtime": "io.containerd.runc.v2",
        "createdTime": created,
    }


def _status_dump(manifest: Manifest, config: dict[str, Any]) -> dict[str, Any]:
    engine = manifest.container.engine
    return {
        "id": manifest.container.id,
        "metadata": {"name": engine.name if engine and engine.name else manifest.container.id, "attempt": 0},
        "state": "CONTAINER_RUNNING",
        "createdAt": _nanoseconds(manifest.created_at),
        "image": {"image": config["rootfsImageName"]},
        "imageRef": config["rootfsImageRef"],
        "labels": {},
        "annotations": {},
    }


def _nanoseconds(iso: str) -> int:
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1e9)
    except ValueError:
        return 0


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, allow_nan=False).encode()


def _empty_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT):
        pass
    return buffer.getvalue()


def _info(name: str, size: int, mode: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type, info.mtime = size, mode, kind, int(time.time())
    return info


class _TarWriter:
    """A tar stream written straight into the compressor: headers from tarfile (PAX), file data in
    1 MiB reads. tarfile's own stream mode copies through 10 KiB blocks, which costs a third of
    an export's time."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.offset = 0

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.offset += len(data)

    def pad(self) -> None:
        if self.offset % tarfile.BLOCKSIZE:
            self.write(b"\0" * (tarfile.BLOCKSIZE - self.offset % tarfile.BLOCKSIZE))

    def header(self, info: tarfile.TarInfo) -> None:
        self.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def close(self) -> None:
        self.write(b"\0" * (2 * tarfile.BLOCKSIZE))
        if self.offset % tarfile.RECORDSIZE:
            self.write(b"\0" * (tarfile.RECORDSIZE - self.offset % tarfile.RECORDSIZE))


def _add_bytes(tar: _TarWriter, name: str, data: bytes) -> None:
    tar.header(_info(name, len(data), 0o600))
    tar.write(data)
    tar.pad()


def _add_dir(tar: _TarWriter, name: str) -> None:
    tar.header(_info(name, 0, 0o700, tarfile.DIRTYPE))


def _add_file(tar: _TarWriter, name: str, path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        tar.header(_info(name, size, 0o600))
        left = size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise PreconditionError(f"{path} shrank while it was exported")
            tar.write(chunk)
            left -= len(chunk)
        tar.pad()
    finally:
        os.close(fd)


@contextmanager
def _compressor(raw: IO[bytes], compression: Compression) -> Iterator[IO[bytes]]:
    if compression == "none":
        yield raw
    elif compression == "gzip":
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as stream:
            yield stream  # type: ignore[misc]
    else:
        import zstandard  # type: ignore[import-untyped, import-not-found, unused-ignore]

        # threads=-1: one worker per CPU (podman's export is single-threaded zstd).
        writer: Any = zstandard.ZstdCompressor(level=3, threads=-1, write_checksum=True).stream_writer(
            raw, closefd=False
        )
        try:
            yield writer
        finally:
            writer.close()


# ---------------------------------------------------------------- reading
@contextmanager
def open_archive(path: Path) -> Iterator[tarfile.TarFile]:
    """A streaming reader of an archive, whatever its compression (zstd, gzip, none). A damaged
    stream is a refusal: after the tar's end the compressed stream is read to its own end, where
    gzip and zstd check their checksums, and nothing may follow it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise PreconditionError(f"cannot open the archive {path}: {exc.strerror}") from exc
    errors: tuple[type[BaseException], ...] = (tarfile.TarError, EOFError, OSError, ValueError)
    with os.fdopen(fd, "rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        stream: IO[bytes]
        if magic.startswith(_ZSTD_MAGIC):
            import zstandard

            errors = (*errors, zstandard.ZstdError)
            stream = zstandard.ZstdDecompressor().stream_reader(raw, closefd=False, read_across_frames=True)
        elif magic.startswith(_GZIP_MAGIC):
            import zlib

            errors = (*errors, zlib.error)
            stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        else:
            stream = raw
        try:
            with tarfile.open(fileobj=_Guarded(stream, raw), mode="r|") as tar:  # type: ignore[call-overload]
                yield tar
                _drain(tar, stream, stream is not raw)
        except errors as exc:
            if isinstance(exc, ImagePathError | PreconditionError):
                raise
            raise PreconditionError(
                f"{path} is not a readable checkpoint archive (damaged or truncated): {exc}",
                hint="copy the archive again from its source",
            ) from exc


# Reading an archive may take its time, but never more than this plus a second per MiB of the file
# read so far: a reader that spins without consuming the file is stopped.
READ_DEADLINE_S = 120.0
READ_MIN_BYTES_PER_S = 1 << 20


class _Guarded:
    """The stream tarfile reads: an end of data is final (Python 3.11's stream reader skips an
    absurdly large member by reading an empty stream for ever) and a deadline that grows with
    the bytes read from the file stops a reader that no longer makes progress."""

    def __init__(self, stream: IO[bytes], raw: IO[bytes]) -> None:
        self.stream, self.raw = stream, raw
        self.ended = 0
        self.started = time.monotonic()

    def read(self, size: int = -1) -> bytes:
        if self.ended > 2:
            raise EOFError("unexpected end of data (a member larger than the archive?)")
        limit = READ_DEADLINE_S + self.raw.tell() / READ_MIN_BYTES_PER_S
        if time.monotonic() - self.started > limit:
            raise PreconditionError(
                f"reading the archive made no progress for {limit:.0f} s: it is damaged or hostile",
                hint="copy the archive again from its source",
            )
        data = self.stream.read(size)
        if not data and size != 0:
            self.ended += 1
        return data


def _drain(tar: tarfile.TarFile, stream: IO[bytes], compressed: bool) -> None:
    """Read a fully iterated archive to the end of its stream: the gzip CRC and the zstd frame
    checksum are checked only there. Only zeros (tar's end blocks and padding) may follow the tar."""
    if not tar._loaded:  # type: ignore[attr-defined]
        return  # the caller stopped early: nothing to verify
    if not compressed:
        return
    while chunk := stream.read(1 << 20):
        if chunk.count(0) != len(chunk):
            raise PreconditionError("the archive has data after its end: damaged or not one archive")


def _safe_name(name: str) -> str:
    """A member's name as a relative path inside the target, or a refusal."""
    pure = PurePosixPath(name)
    if pure.is_absolute() or not pure.parts or any(part in ("..", "") for part in pure.parts):
        raise PreconditionError(
            f"the archive holds {name!r}, a path that leaves the directory it is unpacked into",
            hint="the archive is damaged or hostile: nothing was written outside the target",
        )
    clean = str(PurePosixPath(*[p for p in pure.parts if p != "."]))
    if clean in ("", "."):
        return "."
    return clean


def _check_member(member: tarfile.TarInfo) -> str:
    name = _safe_name(member.name)
    if not (member.isreg() or member.isdir()):
        kind = (
            "a link"
            if member.issym() or member.islnk()
            else "a device node"
            if member.isdev()
            else "a special file"
        )
        raise PreconditionError(
            f"the archive holds {name!r}, {kind}: a checkpoint archive holds only files and directories",
            hint="the archive is damaged or hostile: nothing was written outside the target",
        )
    return name


def _checked_members(tar: tarfile.TarFile, path: Path) -> Iterator[tuple[tarfile.TarInfo, str]]:
    """Each member with its checked name; at most MAX_MEMBERS of them."""
    for count, member in enumerate(tar, start=1):
        if count > MAX_MEMBERS:
            raise PreconditionError(f"{path} holds more than {MAX_MEMBERS} members")
        yield member, _check_member(member)


@dataclass
class ArchiveSummary:
    """What an archive says of itself, read without unpacking it."""

    format: str
    config: dict[str, Any]
    spec: dict[str, Any]
    manifest: bytes | None  # crgpu.json as it is in the archive: parse_manifest validates it
    stats: dict[str, int]
    checkpoint_bytes: int
    members: int
    unpacked_bytes: int = 0  # every member's size: what unpacking writes


def read_summary(path: Path, budget: int | None = None) -> ArchiveSummary:
    """The archive's metadata (config.dump, spec.dump, stats-dump, crgpu.json) and the size of its
    CRIU images, streamed: nothing is written. With a `budget` (the bytes free where it will be
    unpacked), an archive whose members' headers add up to more is refused at that header, before
    its data is read."""
    found: dict[str, bytes] = {}
    size, count, total = 0, 0, 0
    with open_archive(path) as tar:
        for member, name in _checked_members(tar, path):
            count += 1
            total += member.size
            if budget is not None and total > budget:
                raise PreconditionError(
                    f"unpacking {path} takes more than the {budget} bytes free where it is unpacked",
                    hint="free space, or unpack elsewhere (CRGPU_WORK_ROOT)",
                )
            if name.startswith(f"{CHECKPOINT_DIR}/"):
                size += member.size
            elif name in (CONFIG_DUMP, SPEC_DUMP, STATS_DUMP, MANIFEST_NAME) and member.isreg():
                if member.size > METADATA_MAX_BYTES:
                    raise PreconditionError(f"the archive's {name} is {member.size} bytes: not metadata")
                handle = tar.extractfile(member)
                found[name] = handle.read() if handle else b""
    if CONFIG_DUMP not in found or SPEC_DUMP not in found:
        raise PreconditionError(
            f"{path} is not a checkpoint archive: it has no config.dump or spec.dump",
            hint="give an archive from crgpu export, podman container checkpoint --export or the kubelet",
        )
    config = _json_object(found[CONFIG_DUMP], CONFIG_DUMP)
    spec = _json_object(found[SPEC_DUMP], SPEC_DUMP)
    manifest = found.get(MANIFEST_NAME)
    runtime = config.get("runtime")
    fmt = (
        "crgpu" if manifest is not None else "kubernetes" if runtime == "io.containerd.runc.v2" else "podman"
    )
    return ArchiveSummary(
        fmt, config, spec, manifest, parse_stats(found.get(STATS_DUMP, b"")), size, count, total
    )


def _json_object(raw: bytes, name: str) -> dict[str, Any]:
    def refuse(value: str) -> None:
        raise ValueError(f"{value} is not JSON")

    try:
        data = json.loads(raw, parse_constant=refuse)
    except (ValueError, RecursionError) as exc:
        raise PreconditionError(f"the archive's {name} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PreconditionError(f"the archive's {name} is not a JSON object")
    bad = unencodable(data)
    if bad is not None:
        raise PreconditionError(f"the archive's {name} holds text that is not valid Unicode ({bad})")
    return data


def unpack(path: Path, target: Path) -> int:
    """Unpack an archive into a new private directory, member by member, refusing what a
    checkpoint archive never holds. Returns the bytes written."""
    take_private_dir(target, "unpack directory", empty=True)
    written = 0
    try:
        free = free_bytes(target) or 0
        with open_archive(path) as tar:
            for member, name in _checked_members(tar, path):
                if member.size > free - written:
                    raise PreconditionError(
                        f"the archive's {name} is {member.size} bytes, more than the {free - written} bytes "
                        f"left on {target}",
                        hint="free space, or unpack elsewhere (CRGPU_WORK_ROOT)",
                    )
                destination = target / name
                _make_parents(target, destination.parent)
                if member.isdir():
                    _make_parents(target, destination)
                    continue
                handle = tar.extractfile(member)
                with os.fdopen(open_new_private(destination), "wb") as out:
                    left = member.size
                    while left > 0 and handle is not None:
                        chunk = handle.read(min(left, 1 << 20))
                        if not chunk:
                            raise PreconditionError(f"the archive ends inside {name}")
                        out.write(chunk)
                        left -= len(chunk)
                written += member.size
    except FileExistsError as exc:
        raise PreconditionError(f"the archive holds {exc.filename} twice (or over a directory)") from exc
    return written


def _make_parents(root: Path, directory: Path) -> None:
    """mkdir -p inside root, refusing to pass through anything but crgpu's own directories."""
    current = root
    for part in directory.relative_to(root).parts:
        current = current / part
        try:
            os.mkdir(current, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(current.lstat().st_mode):
                raise PreconditionError(f"the archive puts a directory over the file {current}") from None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ImagePathError(f"no space left for {current}") from exc
            raise
