"""The runtimes' state roots and the container IDs under them. Standard library only: shell
completion lists IDs through this without loading the rest of crgpu."""

from __future__ import annotations

import glob
from pathlib import Path

from crgpu.host import config

RUNTIMES = ("runc", "runsc")


def known_roots(runtime: str) -> list[Path]:
    """The existing state roots of a runtime, globs expanded, each directory once."""
    patterns: list[str] = config.get(f"{runtime}_roots").value
    roots: list[Path] = []
    seen: set[Path] = set()
    for pattern in patterns:
        if not pattern:
            continue
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        for match in matches:
            path = Path(match)
            resolved = path.resolve()
            if resolved not in seen and path.is_dir():
                seen.add(resolved)
                roots.append(path)
    return roots


def container_ids() -> list[str]:
    """Every container ID held under the known roots of runc (`<id>/state.json`) and runsc
    (`<id>_sandbox:<sandbox>.state`)."""
    ids: set[str] = set()
    for root in known_roots("runc"):
        ids.update(Path(state).parent.name for state in glob.glob(str(root / "*" / "state.json")))
    for root in known_roots("runsc"):
        ids.update(
            Path(state).name.split("_sandbox:", 1)[0] for state in glob.glob(str(root / "*_sandbox:*.state"))
        )
    return sorted(ids)
