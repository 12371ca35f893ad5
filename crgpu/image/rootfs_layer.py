"""An archive's writable layer laid into the overlay's upper directory: `rootfs-diff.tar` member by
member, `deleted.files` as overlay whiteouts.

The layer is hostile: every path is walked from the upper directory one component at a time
through directory file descriptors opened with O_NOFOLLOW, so nothing is written through a
link, whatever the layer put there before; names are relative without `..`; hard links only to
regular files this layer wrote; no device nodes; no setuid or setgid bits. Python's tarfile
filters are not used: Debian 12's Python 3.11.2 has none, and the "tar" filter checks no link
target.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from crgpu.host.errors import PreconditionError
from crgpu.host.safedirs import require_room

# Far more than a container's changed files and deletions.
LAYER_MAX_MEMBERS = 200_000
DELETED_MAX_ENTRIES = 100_000
DELETED_MAX_BYTES = 16 * 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class LayerRefused(Exception):
    """One member the layer may not hold."""


def apply_layer(diff: Path | None, deleted: Path | None, upper: Path) -> int:
    """Lay rootfs-diff.tar and deleted.files (either may be None) into `upper`. Returns the
    members written. Raises PreconditionError naming the first member refused."""
    written = 0
    try:
        if diff is not None:
            written = _apply_diff(diff, upper)
        if deleted is not None:
            _apply_whiteouts(deleted, upper)
    except LayerRefused as exc:
        raise PreconditionError(f"the archive's writable layer was refused: {exc}") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PreconditionError(f"the archive's rootfs-diff.tar was refused: {exc}") from exc
    return written


def layer_name(name: str) -> str | None:
    """A member's name relative to the layer's top, or None when it leaves the layer."""
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or "\0" in name:
        return None
    return "/".join(part for part in pure.parts if part != ".")


@contextmanager
def _directory(top: int, parts: list[str]) -> Iterator[int]:
    """The directory `parts` below `top`, made where missing, never through a link."""
    fd = os.dup(top)
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise LayerRefused(
                        f"{'/'.join(parts)} passes through {part!r}, which is not a directory"
                    ) from None
                raise
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _refuse_existing(fd: int, leaf: str, name: str) -> None:
    """An engine's layer names each path once: a second member there (over a link the layer
    made, say) is refused, not written through or in its place."""
    try:
        os.stat(leaf, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    raise LayerRefused(f"{name} is in rootfs-diff.tar twice")


def _members(tar: tarfile.TarFile, upper: Path) -> list[tarfile.TarInfo]:
    """The layer's members, counted and sized against the free space before one is written."""
    members = []
    total = 0
    for member in tar:
        members.append(member)
        total += member.size
        if len(members) > LAYER_MAX_MEMBERS:
            raise LayerRefused(f"rootfs-diff.tar holds more than {LAYER_MAX_MEMBERS} members")
    require_room(upper, total, len(members), "the archive's rootfs-diff.tar")
    return members


def _apply_diff(diff: Path, upper: Path) -> int:
    files: set[str] = set()  # regular files written: what a hard link may name
    top = os.open(upper, _DIR_FLAGS)
    try:
        # containerd's CheckpointContainer writes the layer as its content store holds it: gzip.
        with tarfile.open(diff, mode="r:*") as tar:
            members = _members(tar, upper)
            for member in members:
                _apply_member(tar, member, top, files)
    finally:
        os.close(top)
    return len(members)


def _apply_member(tar: tarfile.TarFile, member: tarfile.TarInfo, top: int, files: set[str]) -> None:
    name = layer_name(member.name)
    if name is None:
        raise LayerRefused(f"{member.name!r} leaves the layer")
    if not name:
        return  # the layer's top: the overlay's root takes the image's mode
    if member.isdev():
        raise LayerRefused(f"{name}: a device node")
    parts = name.split("/")
    with _directory(top, parts[:-1]) as fd:
        leaf = parts[-1]
        if member.isdir():
            try:
                os.mkdir(leaf, 0o700, dir_fd=fd)
            except FileExistsError:
                if not stat.S_ISDIR(os.stat(leaf, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise LayerRefused(f"{name}: a directory over a file of the layer") from None
        else:
            _refuse_existing(fd, leaf, name)
            if member.isreg():
                _write_file(tar, member, fd, leaf, name)
                files.add(name)
            elif member.issym():
                os.symlink(member.linkname, leaf, dir_fd=fd)  # inside the container: its own business
            elif member.islnk():
                target = layer_name(member.linkname)
                if not target or target not in files:
                    raise LayerRefused(
                        f"{name}: a hard link to {member.linkname!r}, which is not a file of this layer"
                    )
                os.link(target, leaf, src_dir_fd=top, dst_dir_fd=fd, follow_symlinks=False)
                files.add(name)
            elif member.isfifo():
                os.mkfifo(leaf, 0o600, dir_fd=fd)
            else:
                raise LayerRefused(f"{name}: a special file")
        _set_attributes(member, fd, leaf)


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, fd: int, leaf: str, name: str) -> None:
    handle = tar.extractfile(member)
    out = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
    try:
        left = member.size
        while left > 0 and handle is not None:
            chunk = handle.read(min(left, 1 << 20))
            if not chunk:
                raise LayerRefused(f"rootfs-diff.tar ends inside {name}")
            os.write(out, chunk)
            left -= len(chunk)
    finally:
        os.close(out)


def _set_attributes(member: tarfile.TarInfo, fd: int, leaf: str) -> None:
    """Owner, mode (no setuid or setgid bits) and time of what was just written; a symlink
    keeps its own mode."""
    os.chown(leaf, member.uid, member.gid, dir_fd=fd, follow_symlinks=False)
    if not member.issym():
        os.chmod(leaf, member.mode & 0o1777, dir_fd=fd)  # just made here: not a link
    mtime = int(member.mtime) if isinstance(member.mtime, int | float) else 0
    os.utime(leaf, (mtime, mtime), dir_fd=fd, follow_symlinks=False)


def _apply_whiteouts(deleted: Path, upper: Path) -> None:
    if deleted.lstat().st_size > DELETED_MAX_BYTES:
        raise LayerRefused(f"deleted.files is over {DELETED_MAX_BYTES} bytes")
    try:
        names = json.loads(deleted.read_text())
    except (ValueError, RecursionError) as exc:
        raise LayerRefused(f"deleted.files is not JSON: {exc}") from exc
    if not isinstance(names, list) or len(names) > DELETED_MAX_ENTRIES:
        raise LayerRefused(f"deleted.files is not a list of at most {DELETED_MAX_ENTRIES} names")
    top = os.open(upper, _DIR_FLAGS)
    try:
        for entry in names:
            name = layer_name(entry) if isinstance(entry, str) else None
            if not name:
                raise LayerRefused(f"deleted.files names {str(entry)[:80]!r}, outside the container")
            parts = name.split("/")
            with _directory(top, parts[:-1]) as fd:
                try:
                    os.mknod(parts[-1], stat.S_IFCHR | 0o000, 0, dir_fd=fd)  # an overlay whiteout
                except FileExistsError:
                    pass
    finally:
        os.close(top)
