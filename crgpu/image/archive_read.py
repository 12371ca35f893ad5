"""Checkpoint archives in the engines' format: what `podman container checkpoint --export` writes,
what the kubelet's checkpoint API leaves in /var/lib/kubelet/checkpoints, what checkpointctl reads.

    checkpoint/        CRIU's images and runc's descriptors.json
    stats-dump         CRIU's dump statistics
    spec.dump          the container's OCI spec
    config.dump        the engine's container config (podman: libpod's; Kubernetes: the CRI's)
    status.dump        Kubernetes only: the CRI container status
    rootfs-diff.tar    the writable layer; deleted.files: what it removed
    crgpu.json         crgpu's manifest, carried along so crgpu keeps every detail

Reading (here; writing is archive_export.py) treats the archive as hostile: only plain files and directories, relative names without
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
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from crgpu.criu.stats import parse_stats
from crgpu.host.errors import ImagePathError, PreconditionError
from crgpu.host.safedirs import free_bytes, open_new_private, take_private_dir
from crgpu.host.textsafe import unencodable
from crgpu.image.archive_names import (
    CHECKPOINT_DIR,
    CONFIG_DUMP,
    METADATA_MAX_BYTES,
    SPEC_DUMP,
    STATS_DUMP,
    Progress,
)
from crgpu.image.manifest import MANIFEST_NAME

MAX_MEMBERS = 1_000_000
# tarfile reads a stream 10 KiB at a time by default: each read passes the guard, which at GPU
# sizes made the unpacking CPU-bound (250 MB/s for 1 GiB).
STREAM_BUFFER = 1 << 20
COPY_CHUNK = 64 << 20  # bytes per copy between progress reports
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"


# ---------------------------------------------------------------- reading
@contextmanager
def open_archive(path: Path, random_access: bool = False) -> Iterator[tarfile.TarFile]:
    """A streaming reader of an archive, whatever its compression (zstd, gzip, none). A damaged
    stream is a refusal: after the tar's end the compressed stream is read to its own end, where
    gzip and zstd check their checksums, and nothing may follow it. `random_access`: an
    uncompressed archive is read as a file instead (`tar.fileobj` is the archive itself, each
    member's data at its `offset_data`), so its data can be copied in the kernel."""
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
            if random_access and stream is raw:
                with tarfile.open(fileobj=raw, mode="r:") as tar:
                    yield tar
                return
            with tarfile.open(fileobj=_Guarded(stream, raw), mode="r|", bufsize=STREAM_BUFFER) as tar:  # type: ignore[call-overload]
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
    # The layout, whoever wrote it (crgpu's exports carry crgpu.json besides).
    fmt = "kubernetes" if runtime == "io.containerd.runc.v2" else "podman"
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


def unpack(path: Path, target: Path, progress: Progress | None = None, total: int = 0) -> int:
    """Unpack an archive into a new private directory, member by member, refusing what a
    checkpoint archive never holds. Returns the bytes written; `progress` is told them as they
    are written, of `total` (what the archive's headers add up to)."""
    take_private_dir(target, "unpack directory", empty=True)
    written = 0
    try:
        free = free_bytes(target) or 0
        with open_archive(path, random_access=True) as tar:
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
                with os.fdopen(open_new_private(destination), "wb") as out:
                    _write_member(tar, member, name, out, _told(progress, written, total))
                written += member.size
    except FileExistsError as exc:
        raise PreconditionError(f"the archive holds {exc.filename} twice (or over a directory)") from exc
    return written


def _told(progress: Progress | None, before: int, total: int) -> Callable[[int], None] | None:
    """A member's bytes done, told to `progress` as the archive's: after the `before` bytes."""
    if progress is None:
        return None
    told = progress
    return lambda done: told(before + done, total)


def _write_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    name: str,
    out: IO[bytes],
    tell: Callable[[int], None] | None,
) -> None:
    """A member's data into `out`: copied in the kernel from an uncompressed archive (at GPU
    sizes the copy through Python was most of the restore's time), else read from the stream."""
    left, done = member.size, 0
    if isinstance(tar.fileobj, io.BufferedReader) and not member.issparse():  # the file itself
        source, offset = tar.fileobj.fileno(), member.offset_data
        while left > 0:
            copied = os.copy_file_range(source, out.fileno(), min(left, COPY_CHUNK), offset)
            if copied == 0:
                raise PreconditionError(f"the archive ends inside {name}")
            offset, left, done = offset + copied, left - copied, done + copied
            if tell is not None:
                tell(done)
        return
    handle = tar.extractfile(member)
    while left > 0 and handle is not None:
        chunk = handle.read(min(left, STREAM_BUFFER))
        if not chunk:
            raise PreconditionError(f"the archive ends inside {name}")
        out.write(chunk)
        left, done = left - len(chunk), done + len(chunk)
        if tell is not None:
            tell(done)


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
