"""Paths of the host's /proc, /sys and /dev, under $CRGPU_HOST_ROOT when the tests set one.
Standard library only."""

from __future__ import annotations

import os
from pathlib import Path


def host_path(path: str) -> Path:
    root = os.environ.get("CRGPU_HOST_ROOT")
    return Path(root + path) if root else Path(path)
