"""One lock per container, held across a whole checkpoint or restore (flock under /run/crgpu)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from crgpu.host.errors import BusyError, ImagePathError
from crgpu.host.safedirs import make_private_dirs

DEFAULT_LOCK_DIR = Path("/run/crgpu")
POLL_S = 0.1


def lock_path(runtime: str, root: Path, container_id: str) -> Path:
    """One lock file per container: keyed on the state root as the kernel resolves it (so
    `/run/x` and `/run/../run/x` are one lock) and the ID, hashed so any length fits."""
    base = Path(os.environ.get("CRGPU_LOCK_DIR") or DEFAULT_LOCK_DIR)
    key = f"{runtime}\0{os.path.realpath(root)}\0{container_id}".encode()
    return base / f"{runtime}-{hashlib.sha256(key).hexdigest()[:32]}.lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return "another crgpu"
    return f"crgpu (pid {pid})" if pid.isdigit() else "another crgpu"


@contextmanager
def container_lock(
    runtime: str, root: Path, container_id: str, wait_s: float | None = None
) -> Iterator[Path]:
    """Hold the container's lock; exit code 6 at once when busy, or after wait_s seconds."""
    path = lock_path(runtime, root, container_id)
    try:
        make_private_dirs(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ImagePathError(
            f"cannot open the lock {path}: {exc.strerror}", hint="run crgpu as root"
        ) from exc
    try:
        deadline = time.monotonic() + (wait_s or 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    waited = f" after waiting {wait_s:g} s" if wait_s else ""
                    raise BusyError(
                        f"container {container_id!r} is busy: {_holder(path)} holds {path}{waited}",
                        hint="wait for it to finish, or pass --wait SECONDS",
                    ) from None
                time.sleep(POLL_S)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # closing releases the flock
