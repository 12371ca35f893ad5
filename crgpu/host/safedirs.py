"""Directories crgpu writes into are its own: made 0700 whatever the umask, or taken over only
when this user owns them and nobody else can write them; no link inside them is followed.

crgpu runs as root and CRIU writes process memory and logs into these directories: a directory
another user can write lets that user read the memory or plant a link that root then writes through.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from crgpu.host.errors import ImagePathError, PreconditionError


def space_hint(exc: OSError) -> str | None:
    if exc.errno == errno.ENOSPC:
        return "the filesystem is full: free space or choose another path"
    if exc.errno == errno.EROFS:
        return "the filesystem is read-only: choose a writable path"
    if exc.errno == errno.ENAMETOOLONG:
        return "choose a shorter path"
    return None


def make_private_dirs(path: Path) -> None:
    """Create `path` and its missing parents, each new one 0700 (chmod after mkdir: the umask
    masks mkdir's mode). Existing parents are left as they are."""
    missing: list[Path] = []
    current = path
    while True:
        try:
            current.lstat()
            break
        except FileNotFoundError:
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue  # made meanwhile: judged below like any existing directory
        os.chmod(directory, 0o700, follow_symlinks=False)


def check_private_dir(path: Path, what: str) -> bool:
    """Refuse a directory crgpu must not write into; True when it exists (and may be taken),
    False when it is still to be made. Read-only: `--dry-run` runs it too."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ImagePathError(f"cannot check {what} {path}: {exc.strerror}", hint=space_hint(exc)) from exc
    if stat.S_ISLNK(info.st_mode):
        raise ImagePathError(
            f"{what} {path} is a symlink; crgpu does not follow symlinks", hint="give the real directory"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise ImagePathError(f"{what} {path} exists and is not a directory", hint="choose a new path")
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise ImagePathError(
            f"{what} {path} was prepared by someone else (owner uid {info.st_uid}, mode "
            f"{stat.S_IMODE(info.st_mode):04o}): another user could read or change what crgpu writes there",
            hint="give a path crgpu creates itself, or one owned by root that only root can write",
        )
    _check_parent(path, what)
    return True


def _check_parent(path: Path, what: str) -> None:
    """A parent others may write, without the sticky bit, lets them swap the directory for a link."""
    try:
        parent = path.parent.stat()
    except OSError:
        return
    if parent.st_mode & 0o002 and not parent.st_mode & stat.S_ISVTX:
        raise ImagePathError(
            f"the parent of {what} {path} is writable by every user without the sticky bit",
            hint="choose a path under a directory only root can write",
        )


def take_private_dir(path: Path, what: str, *, empty: bool) -> Path:
    """Make `path` (0700), or take an existing one checked by check_private_dir and tighten it to
    0700; with `empty`, an existing one must hold nothing. No entry may be a symlink."""
    try:
        if not check_private_dir(path, what):
            make_private_dirs(path)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o700)
            entries = os.listdir(fd)
        finally:
            os.close(fd)
    except ImagePathError:
        raise
    except OSError as exc:
        raise ImagePathError(
            f"cannot create {what} {path}: {exc.strerror}",
            hint=space_hint(exc) or "check the parent directory's permissions and mount",
        ) from exc
    if empty and entries:
        raise ImagePathError(
            f"{what} {path} exists and is not empty; crgpu never overwrites a checkpoint",
            hint="choose a new --image-path, or remove the old checkpoint yourself",
        )
    links = sorted(name for name in entries if (path / name).is_symlink())
    if links:
        raise ImagePathError(
            f"{what} {path} holds a symbolic link ({links[0]}); crgpu follows no link inside its directories",
            hint="remove the link, or give a new directory",
        )
    return path


def open_new_private(path: Path, mode: int = 0o600) -> int:
    """A file descriptor to a new file (never an existing one, never through a link)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def write_new_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    with os.fdopen(open_new_private(path, mode), "wb") as out:
        out.write(data)


def open_private_append(path: Path) -> int:
    """A file descriptor appending to `path`, created 0600; a link there is refused (ELOOP)."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def read_nofollow(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file, never through a link (OSError otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks: list[bytes] = []
        left = limit
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _statvfs(path: Path) -> os.statvfs_result | None:
    """The file system `path` is or will be on (its nearest existing parent's)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return os.statvfs(path)
    except OSError:
        return None


def free_bytes(path: Path) -> int | None:
    st = _statvfs(path)
    return st.f_bavail * st.f_frsize if st is not None else None


def require_room(path: Path, total_bytes: int, members: int, what: str) -> None:
    """Refuse before a byte is written when `members` files of `total_bytes` in all do not fit
    where `path` is: each takes its size rounded up to a block, and an inode."""
    st = _statvfs(path)
    if st is None:
        return
    free, free_inodes = st.f_bavail * st.f_frsize, st.f_favail
    needed = total_bytes + members * st.f_frsize
    if needed > free:
        raise PreconditionError(
            f"{what} takes {needed} bytes and {path} has {free} free",
            hint="free space, or unpack elsewhere (CRGPU_WORK_ROOT)",
        )
    if st.f_files and members + 64 > free_inodes:
        raise PreconditionError(
            f"{what} holds {members} members and {path} has {free_inodes} free inodes",
            hint="free inodes, or unpack elsewhere (CRGPU_WORK_ROOT)",
        )


def tree_bytes(top: Path) -> int:
    """The disk space a directory tree of crgpu's takes: links not followed, mounts not entered
    (an overlay's files are its image's)."""
    total = 0
    for directory, dirs, files in os.walk(top, followlinks=False):
        dirs[:] = [d for d in dirs if not os.path.ismount(os.path.join(directory, d))]
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                pass
    return total
