"""A checkpoint directory crgpu did not make (Docker's `checkpoints/NAME`, a plain `runc
checkpoint`, CRIU's own dump): CRIU's images without crgpu.json. What inspect can say of it,
read as hostile input: sizes and CRIU's statistics, nothing followed through a link."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from crgpu.criu.stats import read_stats
from crgpu.image.manifest import MANIFEST_NAME

MAX_ENTRIES = 1_000_000


@dataclass(frozen=True)
class ForeignDir:
    checkpoint_bytes: int
    members: int
    stats: dict[str, int]


def foreign_dir(path: Path) -> ForeignDir | None:
    """The directory's CRIU images, or None when it is no such directory (it has crgpu.json, or
    no inventory.img: not a CRIU dump)."""
    try:
        if not stat.S_ISDIR(path.lstat().st_mode):
            return None
        names = os.listdir(path)
    except OSError:
        return None
    if MANIFEST_NAME in names or "inventory.img" not in names:
        return None
    total = count = 0
    for name in names[:MAX_ENTRIES]:
        try:
            st = (path / name).lstat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
            count += 1
    stats_file = path / "stats-dump"
    stats = read_stats(stats_file) if not stats_file.is_symlink() else {}
    return ForeignDir(total, count, stats)
