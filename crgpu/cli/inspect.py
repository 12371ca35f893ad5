"""`crgpu inspect IMAGE`: what a checkpoint holds, read from its crgpu.json alone (no runtime needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from crgpu.cli.common import DebugOpt, JsonOpt, QuietOpt, run_guarded
from crgpu.cli.render import Renderer, format_stats

if TYPE_CHECKING:
    from crgpu.image import Manifest

EXAMPLES = """
Examples:

  crgpu inspect /var/lib/ckpt/web1

  crgpu inspect --json /ckpt/train | jq .stats.frozen_time
"""


def inspect(
    image_path: Annotated[Path, typer.Argument(help="The checkpoint directory.", show_default=False)],
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show what a checkpoint holds: runtime, container, options, host, GPUs, sizes, stats."""
    renderer = Renderer(as_json=as_json, quiet=quiet)

    def body() -> int:
        from crgpu.image import read_manifest

        path = image_path.expanduser().absolute()
        manifest = read_manifest(path)
        if as_json:
            print(
                json.dumps(
                    {"path": str(path), "complete": True, **manifest.model_dump(mode="json")}, indent=2
                )
            )
        else:
            print_manifest(path, manifest, renderer.rich)
        return 0

    run_guarded(renderer, debug, body)


def _sections(manifest: Manifest) -> list[tuple[str, list[str]]]:
    rt, ct, host, sizes = manifest.runtime, manifest.container, manifest.host, manifest.sizes
    options = [
        f"{k} = {v}"
        for k, v in manifest.options.items()
        if v not in (None, False, "auto") and k not in ("container_id", "image_path")
    ]
    mib = 1024 * 1024
    return [
        (
            "runtime",
            [
                f"{rt.name} {rt.version} ({rt.path})",
                f"root {rt.root}",
                "global flags: " + (" ".join(rt.global_flags) or "none"),
            ],
        ),
        (
            "container",
            [f"id {ct.id}", f"bundle {ct.bundle}", f"pid {ct.pid}", f"gpu {'yes' if ct.gpu else 'no'}"],
        ),
        (
            "created",
            [f"{manifest.created_at} by crgpu {manifest.crgpu_version} (schema {manifest.schema_version})"],
        ),
        ("options", options or ["defaults"]),
        (
            "host",
            [
                f"kernel {host.kernel} {host.arch}",
                f"CRIU {host.criu_version or '-'}",
                f"NVIDIA driver {host.driver_version or 'none'}",
            ],
        ),
        ("GPUs", [f"{g.name} {g.uuid} {g.memory_mib} MiB" for g in host.gpus] or ["none"]),
        (
            "sizes",
            [f"total {sizes.total_bytes / mib:.1f} MiB"]
            + (
                [f"memory pages {sizes.memory_pages_bytes / mib:.1f} MiB"]
                if sizes.memory_pages_bytes is not None
                else []
            ),
        ),
        ("stats", [f"{name} {value}" for name, value in format_stats(manifest.stats)] or ["none recorded"]),
    ]


def print_manifest(path: Path, manifest: Manifest, rich: bool) -> None:
    sections = _sections(manifest)
    if rich:
        from rich.console import Console
        from rich.tree import Tree

        tree = Tree(f"[bold]{path}[/bold] (complete)")
        for title, lines in sections:
            branch = tree.add(f"[cyan]{title}[/cyan]")
            for line in lines:
                branch.add(line)
        Console().print(tree)
        return
    print(f"{path} (complete)")
    for title, lines in sections:
        print(f"{title}:")
        for line in lines:
            print(f"  {line}")
