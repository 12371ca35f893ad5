"""`crgpu gc`: take back what archive restores unpacked and mounted, once their containers are gone."""

from __future__ import annotations

from typing import Annotated

import typer

from crgpu.cli.common import DebugOpt, JsonOpt, QuietOpt, run_guarded
from crgpu.cli.render import Renderer
from crgpu.host.textsafe import printable

EXAMPLES = """
Examples:

  crgpu gc --dry-run        # what would go, and what stays and why

  crgpu gc --json
"""

GcDryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="List what would be removed and what stays, and why; remove nothing."),
]


def gc(
    as_json: JsonOpt = False, dry_run: GcDryRunOpt = False, debug: DebugOpt = False, quiet: QuietOpt = False
) -> None:
    """Remove the unpacked archives and overlays of restored containers that no longer exist."""
    renderer = Renderer(as_json=as_json, quiet=quiet)

    def body() -> int:
        from crgpu.core.runtime_call import require_privileges
        from crgpu.image.gc import collect

        require_privileges("gc")
        result = collect(dry_run)
        if as_json:
            renderer.json(result.to_json())
            return 0
        if quiet:
            return 0
        verb = "would remove" if dry_run else "removed"
        for item in result.removed:
            print(f"{verb} {printable(item.path)} ({item.bytes / 2**20:.1f} MiB): {printable(item.why)}")
        for item in result.kept:
            print(f"kept {printable(item.path)} ({item.bytes / 2**20:.1f} MiB): {printable(item.why)}")
        total = result.freed_bytes / 2**20
        done = "to remove" if dry_run else "removed"
        print(f"{len(result.removed)} {done}, {total:.1f} MiB; {len(result.kept)} kept")
        return 0

    run_guarded(renderer, debug, body)
