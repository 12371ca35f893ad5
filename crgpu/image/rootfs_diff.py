"""A container's writable layer, as the engines' archives carry it: `rootfs-diff.tar` (what the
container added or changed) and `deleted.files` (what it removed, a JSON list).

An engine's container runs on an overlay mount whose upper directory is exactly that layer; crgpu
finds it in the mount table and records it beside the CRIU images after a checkpoint, as podman
does, so that an image can leave the node with the files its processes hold open. A container on
a plain directory has no layer to record.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from crgpu.host.mounts import escape, mountinfo_lines, unescape
from crgpu.host.safedirs import open_new_private, write_new_private
from crgpu.image.archive_names import DELETED_NAME, DIFF_NAME


def overlay_upper(rootfs: Path) -> Path | None:
    """The upper directory of the overlay mounted at `rootfs`, or None (not an overlay). Only the
    lines naming that mount point are parsed: a node with an engine has thousands."""
    lines = mountinfo_lines()
    target = f" {escape(str(rootfs))} "
    found = None
    for line in lines:
        if target not in line or " - overlay " not in line:
            continue
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3 or fields[4] != target.strip():
            continue
        for option in tail[2].split(","):
            if option.startswith("upperdir="):
                found = Path(unescape(option.removeprefix("upperdir=")))  # the last mount wins
    return found


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def write_rootfs_diff(upper: Path, image_dir: Path) -> tuple[int, int]:
    """Write DIFF_NAME (and DELETED_NAME when something was deleted) into the image dir from an
    overlay upper dir. Returns (entries, deleted). Links are stored as links, never followed."""
    import tarfile  # only for a container on an overlay

    deleted: list[str] = []
    entries = 0
    with (
        os.fdopen(open_new_private(image_dir / DIFF_NAME), "wb") as raw,
        tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for directory, dirs, files in os.walk(upper, followlinks=False):
            dirs.sort()
            for name in sorted([*dirs, *files]):
                path = Path(directory) / name
                relative = str(path.relative_to(upper))
                st = path.lstat()
                if _is_whiteout(st):
                    deleted.append(relative)
                    continue
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    continue  # device nodes and sockets of the layer stay behind
                tar.add(path, arcname=relative, recursive=False)
                entries += 1
    if deleted:
        write_new_private(image_dir / DELETED_NAME, json.dumps(deleted).encode())
    return entries, len(deleted)
