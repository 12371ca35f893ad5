"""Paths of the host's /proc, /sys and /dev, under $CRGPU_HOST_ROOT when the tests set one, and
reading them. Standard library only."""

from __future__ import annotations

import os
from pathlib import Path


def host_path(path: str) -> Path:
    root = os.environ.get("CRGPU_HOST_ROOT")
    return Path(root + path) if root else Path(path)


def read_host_text(path: str) -> str | None:
    """A file of the host's /proc or /sys as text (bytes that are no UTF-8 replaced), or None when
    it cannot be read."""
    try:
        return host_path(path).read_text(errors="replace")
    except OSError:
        return None


def stat_fields(stat: str) -> list[str]:
    """The fields of a /proc/PID/stat text from the third on: state, ppid, ..., starttime at index
    19. The command name before them may hold spaces and parentheses: they start after the last ')'."""
    return stat[stat.rfind(")") + 2 :].split()
