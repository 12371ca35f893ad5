"""Version numbers as the runtimes, CRIU and drivers print them (not PEP 440): compared as tuples."""

from __future__ import annotations

import re


def version_tuple(version: str) -> tuple[int, ...]:
    """`1.1.15+ds1` -> (1, 1, 15); `0.0~20240729.0` -> (0, 0); nothing numeric -> (0,)."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not match:
        return (0,)
    return tuple(int(part) for part in match.groups() if part is not None)
