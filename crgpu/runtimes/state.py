"""The runtimes' state files and a bundle's spec, read as hostile JSON: small, not through a link, a dict or nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SPEC_MAX_BYTES = 16 * 1024 * 1024


def read_small_json(path: Path, limit: int) -> dict[str, Any]:
    """A JSON object from a file of at most `limit` bytes, not through a link; {} for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(limit + 1)
        data = json.loads(raw) if len(raw) <= limit else None
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def state_labels(config: dict[str, Any]) -> dict[str, str]:
    """runc's state keeps the bundle and the spec's annotations as KEY=VALUE labels."""
    labels: dict[str, str] = {}
    for item in config.get("labels") or []:
        if isinstance(item, str) and "=" in item:
            key, _, value = item.partition("=")
            labels[key] = value
    return labels


def bundle_rootfs(bundle: str | Path | None, spec: dict[str, Any]) -> Path | None:
    """The spec's root.path, resolved against the bundle."""
    root = spec.get("root")
    path = root.get("path") if isinstance(root, dict) else None
    if not isinstance(path, str) or not path:
        return None
    if path.startswith("/"):
        return Path(path)
    return Path(bundle) / path if bundle else None


def read_bundle_spec(bundle: str | Path | None) -> dict[str, Any]:
    """The bundle's config.json (the OCI spec runc was given, hooks and env included), or {}."""
    if not bundle:
        return {}
    try:
        with open(Path(bundle) / "config.json", "rb") as handle:
            data = json.loads(handle.read(SPEC_MAX_BYTES))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
