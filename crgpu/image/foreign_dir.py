"""A checkpoint directory crgpu did not make (Docker's `checkpoints/NAME`, a plain `runc
checkpoint`, CRIU's own dump): CRIU's images without crgpu.json. What inspect can say of it,
read as hostile input: sizes and CRIU's statistics, nothing followed through a link."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from crgpu.criu.stats import parse_stats
from crgpu.host.safedirs import read_nofollow
from crgpu.image.manifest import MANIFEST_NAME

MAX_ENTRIES = 1_000_000
STATS_MAX_BYTES = 1 << 20  # CRIU's stats image is a few dozen bytes


@dataclass(frozen=True)
class ForeignDir:
    checkpoint_bytes: int
    members: int
    stats: dict[str, int]


def foreign_dir(path: Path) -> ForeignDir | None:
    """The directory's CRIU images, or None when it is no such directory (it has crgpu.json, or
    no inventory.img: not a CRIU dump)."""
    try:
        if not stat.S_ISDIR(path.lstat().st_mode) or os.path.lexists(path / MANIFEST_NAME):
            return None  # crgpu's own image: read_image reads it (listing it is not needed)
        names = os.listdir(path)
    except OSError:
        return None
    if "inventory.img" not in names:
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
    try:
        stats = parse_stats(read_nofollow(path / "stats-dump", STATS_MAX_BYTES))
    except OSError:  # absent, a link, not a file
        stats = {}
    return ForeignDir(total, count, stats)
