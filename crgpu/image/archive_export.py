"""Exporting an image as an archive: crgpu's own, or the layouts podman and the kubelet (CRI) read, streamed through a compressor; nothing of the image is followed through a link."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

from crgpu.host.errors import ImagePathError, PreconditionError, UsageError
from crgpu.host.safedirs import open_new_private, read_nofollow
from crgpu.image.archive_names import (
    CHECKPOINT_DIR,
    CONFIG_DUMP,
    DELETED_NAME,
    DIFF_NAME,
    METADATA_MAX_BYTES,
    SPEC_DUMP,
    STATS_DUMP,
    STATUS_DUMP,
    Progress,
)
from crgpu.image.manifest import MANIFEST_NAME, EngineRecord, Manifest, read_image
from crgpu.image.oci_archive import oci_annotations, write_oci_archive

ArchiveFormat = Literal["podman", "kubernetes", "oci"]
Compression = Literal["zstd", "gzip", "none"]
# Files of a crgpu image that are crgpu's or the runtime's, not CRIU's images.
_NOT_CRIU = {MANIFEST_NAME, STATS_DUMP, SPEC_DUMP, DIFF_NAME, DELETED_NAME, "dump.log"}
# containerd reads the kubelet's archive as a plain tar only (`archive/tar: invalid tar header`
# for zstd or gzip); podman's own export is zstd.
DEFAULT_COMPRESSION: dict[ArchiveFormat, Compression] = {
    "podman": "zstd",
    "kubernetes": "none",
    "oci": "none",
}
CRI_CONTAINER_RUNNING = 1  # runtime.v1 ContainerState
# podman's network modes for which it makes the container a network namespace of its own.
NETNS_MODES = ("bridge", "slirp4netns", "pasta")


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
    fmt: ArchiveFormat | Literal["auto"] = "auto",
    compression: Compression | Literal["auto"] = "auto",
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
    if fmt == "auto":
        fmt = archive_format_for(manifest)
    if fmt == "oci" and compression not in ("auto", "none"):
        raise UsageError(
            "an OCI checkpoint image is written uncompressed (its layer is the kubelet's plain tar)",
            hint="drop --compression, or give --compression none",
        )
    chosen: Compression = DEFAULT_COMPRESSION[fmt] if compression == "auto" else compression
    config = _config_dump(manifest, "kubernetes" if fmt == "oci" else fmt)
    metadata: list[tuple[str, bytes]] = [
        (CONFIG_DUMP, _json(config)),
        (MANIFEST_NAME, read_nofollow(image_dir / MANIFEST_NAME, METADATA_MAX_BYTES)),
    ]
    if fmt in ("kubernetes", "oci"):
        metadata.append((STATUS_DUMP, _json(_status_dump(manifest, config))))
        if "@sha256:" not in config["rootfsImageRef"]:
            notes.append(
                "containerd restores this archive only onto its base image by digest (NAME@sha256:...), "
                "and this image names none: its container was not a Kubernetes one"
            )
    if not (image_dir / DIFF_NAME).is_file():
        notes.append("the container was not on an overlay: rootfs-diff.tar is empty")
        metadata.append((DIFF_NAME, _empty_tar()))
    total = sum(size for _, _, size in members) + sum(len(data) for _, data in metadata)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    fd = open_new_private(partial)
    try:
        with os.fdopen(fd, "w+b") as raw:
            if fmt == "oci":
                notes.append("the OCI image holds the kubelet's layout (containerd and CRI-O restore it)")
                write_oci_archive(raw, lambda layer: _write_tar(layer, metadata, members, total, progress),
                                  oci_annotations(manifest, config))  # fmt: skip
            else:
                with _compressor(raw, chosen) as stream:
                    _write_tar(stream, metadata, members, total, progress)
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
        out, fmt, chosen, count, total, out.stat().st_size, round(time.monotonic() - started, 4), notes
    )


def _write_tar(
    stream: IO[bytes],
    metadata: list[tuple[str, bytes]],
    members: list[tuple[str, Path, int]],
    total: int,
    progress: Progress | None,
) -> None:
    """The archive itself: the small metadata first, then the files at the top, then CRIU's images."""
    tar = _TarWriter(stream)
    done = 0
    for name, data in metadata:
        _add_bytes(tar, name, data)
        done += len(data)
    added_dir = False
    for arcname, path, size in members:
        if arcname.startswith(f"{CHECKPOINT_DIR}/") and not added_dir:
            _add_dir(tar, CHECKPOINT_DIR)
            added_dir = True
        base = done

        def copied(count: int, base: int = base) -> None:  # within the file: the pages are one file of GBs
            if progress is not None:
                progress(base + count, total)

        _add_file(tar, arcname, path, copied)
        done += size
        if progress is not None:
            progress(done, total)
    tar.close()


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


def archive_format_for(manifest: Manifest) -> ArchiveFormat:
    """The format an image's own engine restores: podman's for a podman container; the kubelet's
    (which containerd and checkpointctl read) for every other one, plain runc's included."""
    engine = manifest.container.engine
    return "podman" if engine is not None and engine.kind == "podman" else "kubernetes"


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
            **_podman_network(engine),
        }
    image = engine.image if engine and engine.image else ""
    return {
        "id": manifest.container.id,
        "name": (engine.cri_name if engine else None) or name,
        "rootfsImage": image,
        "rootfsImageRef": (engine.image_ref if engine else None) or image,
        "rootfsImageName": image,
        "runtime": "io.containerd.runc.v2",
        "createdTime": (engine.created_at if engine else None) or created,
        "checkpointedTime": created,
    }


def _podman_network(engine: EngineRecord) -> dict[str, Any]:
    """What podman's own archive says of a container's network, so `podman container restore
    --import` makes a restored copy a namespace of its own (without these keys it reuses the one
    spec.dump names: the source's, with the source's IP). podman's own export writes the same."""
    if engine.network_mode not in NETNS_MODES:
        return {}
    keys: dict[str, Any] = {"createNetNS": True, "networkMode": engine.network_mode}
    if engine.network_mode == "bridge" and engine.networks:
        keys["newNetworks"] = {name: {"interface_name": f"eth{i}"} for i, name in enumerate(engine.networks)}
    return keys


def _status_dump(manifest: Manifest, config: dict[str, Any]) -> dict[str, Any]:
    """The CRI ContainerStatus as containerd writes it and reads it back (Go's protobuf JSON:
    snake_case names, the state as its enum number); containerd gives the restored container the
    labels and annotations found here, the kubelet's container hash among them."""
    engine = manifest.container.engine
    return {
        "id": manifest.container.id,
        "metadata": {"name": engine.name if engine and engine.name else manifest.container.id},
        "state": CRI_CONTAINER_RUNNING,
        "created_at": _nanoseconds(config["createdTime"]),
        "image": {"image": config["rootfsImageName"]},
        "image_ref": config["rootfsImageRef"],
        "labels": dict(engine.labels) if engine else {},
        "annotations": dict(engine.annotations) if engine else {},
    }


def _nanoseconds(iso: str) -> int:
    """An RFC 3339 time as Unix nanoseconds, all nine digits of Go's fraction kept (Python's
    datetime stops at microseconds)."""
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", iso)
    if match is None:
        return 0
    try:
        whole = datetime.fromisoformat(match[1] + ("+00:00" if match[3] == "Z" else match[3]))
    except ValueError:
        return 0
    return int(whole.timestamp()) * 1_000_000_000 + int((match[2] or "0").ljust(9, "0"))


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


PROGRESS_STEP = 16 << 20  # the bar moves every 16 MiB within a file


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


def _add_file(tar: _TarWriter, name: str, path: Path, copied: Callable[[int], None] | None = None) -> None:
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
            if copied is not None and (size - left) % PROGRESS_STEP < len(chunk):
                copied(size - left)
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
