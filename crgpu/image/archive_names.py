"""The names the engines' checkpoint archives use, shared by the image, export and import, and
how an archive is told from an image directory. Standard library only: restore and checkpoint
load this, not the archive code."""

from __future__ import annotations

import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

CHECKPOINT_DIR = "checkpoint"
SPEC_DUMP = "spec.dump"
CONFIG_DUMP = "config.dump"
STATUS_DUMP = "status.dump"
STATS_DUMP = "stats-dump"
DIFF_NAME = "rootfs-diff.tar"
DELETED_NAME = "deleted.files"
DEVSHM_NAME = "devshm-checkpoint.tar"  # podman's: the container's private /dev/shm
# Told the bytes done of a total as an archive is written or unpacked (a progress bar).
Progress = Callable[[int, int], None]
# Opens a progress bar by its title; yields None where none is shown (piped, quiet, JSON).
ProgressOpener = Callable[[str], AbstractContextManager[Progress | None]]
# The most a metadata member (spec.dump, config.dump, the manifest, ...) may hold.
METADATA_MAX_BYTES = 16 * 1024 * 1024


def is_archive(path: Path) -> bool:
    """An archive is a regular file; an image is a directory."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False
