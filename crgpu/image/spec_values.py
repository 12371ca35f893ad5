"""What rebuilding an archive's spec keeps track of (its notes, what reaches the host, the bind mounts' stand-ins) and the readers that take a hostile spec's values only in the shape they must have."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CAP_NAME = re.compile(r"CAP_[A-Z_]{1,32}")
RLIMIT_NAME = re.compile(r"RLIMIT_[A-Z]{1,16}")
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,256}")
U32 = 2**32 - 1
U64 = 2**64 - 1


@dataclass
class StandIn:
    """A bind mount's source made in the bundle instead of the archive host's path."""

    path: Path  # in the bundle
    destination: str  # where the container sees it
    is_dir: bool  # its type when the container's root has no mount point to tell
    content: bytes = b""


class Rebuild:
    """One rebuild's findings, gathered while the spec's sections are rebuilt."""

    def __init__(self, bundle: Path) -> None:
        self.bundle = bundle
        self.notes: list[str] = []
        self.reaching: list[str] = []
        self.stand_ins: list[StandIn] = []
        # The archive's network namespace was a path (a pod's, a CNI network's): CRIU recorded it
        # as the external extRootNetNS, and its restore needs one to be handed in.
        self.external_net = False
        self.hostname: str | None = None


def show(value: object) -> str:
    return repr(str(value)[:80])


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_uint(value: object, limit: int = U32) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit else None


def strings(value: object, limit: int = 65_536) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value[:limit] if isinstance(item, str) and "\0" not in item]
