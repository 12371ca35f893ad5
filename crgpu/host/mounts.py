"""The mount table (/proc/self/mountinfo): what is mounted where, and taking a mount away again.
Standard library only."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from crgpu.host.root import read_host_text

UMOUNT_TIMEOUT_S = 60.0
_ESCAPES = {" ": "\\040", "\t": "\\011", "\n": "\\012", "\\": "\\134"}


def escape(path: str) -> str:
    """A path as mountinfo writes it (octal escapes for space, tab, newline and backslash)."""
    return "".join(_ESCAPES.get(char, char) for char in path)


def unescape(field: str) -> str:
    for char, code in _ESCAPES.items():
        field = field.replace(code, char)
    return field


def mountinfo_lines() -> list[str]:
    text = read_host_text("/proc/self/mountinfo")
    return [] if text is None else text.splitlines()


def mount_points_below(directory: Path) -> list[Path]:
    """Every mount point strictly inside `directory`, the deepest first (the order to unmount in)."""
    prefix = escape(str(directory).rstrip("/")) + "/"
    points = set()
    for line in mountinfo_lines():
        if prefix not in line:  # a node with an engine has thousands of lines
            continue
        fields = line.split(" - ", 1)[0].split()
        if len(fields) >= 5 and fields[4].startswith(prefix):
            points.add(Path(unescape(fields[4])))
    return sorted(points, key=lambda point: (-len(point.parts), str(point)))


def unmount(point: Path, *, detach: bool = False) -> bool:
    """umount(8) on `point` (`detach`: lazily, as `umount -l`); whether it is no mount point now."""
    flags = ["-l"] if detach else []
    subprocess.run(
        ["umount", *flags, "--", str(point)],
        capture_output=True,
        timeout=UMOUNT_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return not os.path.ismount(point)
