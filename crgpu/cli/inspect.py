"""`crgpu inspect IMAGE`: what a checkpoint holds, read from its crgpu.json alone (no runtime needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from crgpu.cli.common import DebugOpt, JsonOpt, QuietOpt, run_guarded
from crgpu.cli.render import Renderer, format_stats
from crgpu.textsafe import printable

if TYPE_CHECKING:
    from crgpu.image import Image

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
        from crgpu.image import read_image

        path = image_path.expanduser().absolute()
        image = read_image(path)
        if as_json:
            renderer.json(
                {
                    "path": str(path),
                    "complete": True,
                    "trust": image.trust.level,
                    **image.manifest.model_dump(mode="json"),
                }
            )
        else:
            print_manifest(path, image, renderer.rich)
        return 0

    run_guarded(renderer, debug, body)


def _sections(image: Image) -> list[tuple[str, list[str]]]:
    manifest = image.manifest
    rt, ct, host, sizes = manifest.runtime, manifest.container, manifest.host, manifest.sizes
    options = [
        f"{k} = {v}"
        for k, v in manifest.options.items()
        if v not in (None, False, "auto", []) and k not in ("container_id", "image_path")
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
            [
                f"id {ct.id}",
                f"bundle {ct.bundle}",
                f"pid {ct.pid}",
                f"gpu {'yes' if ct.gpu else 'no'}"
                + (f" ({', '.join(ct.gpu_evidence)})" if ct.gpu_evidence else ""),
            ],
        ),
        (
            "created",
            [f"{manifest.created_at} by crgpu {manifest.crgpu_version} (schema {manifest.schema_version})"],
        ),
        ("trust", _trust_lines(image)),
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


def _trust_lines(image: Image) -> list[str]:
    trust = image.trust
    lines = [trust.describe()]
    if trust.trusted:
        lines.append("restore may take the state root and bundle from it")
    else:
        lines.append("restore needs --root and --bundle (or --trust-image)")
    flags = image.manifest.runtime.global_flags
    if flags and image.manifest.runtime.name == "runsc":
        lines.append("runtime flags pass crgpu's allow-list at restore (see --dry-run)")
    return lines


def print_manifest(path: Path, image: Image, rich: bool) -> None:
    """Every line is data from the image: shown literally, never as markup or terminal codes."""
    sections = _sections(image)
    if rich:
        from rich.console import Console
        from rich.text import Text
        from rich.tree import Tree

        tree = Tree(Text(printable(path), style="bold") + Text(" (complete)"))
        for title, lines in sections:
            branch = tree.add(Text(title, style="cyan"))
            for line in lines:
                branch.add(Text(printable(line)))
        Console().print(tree)
        return
    print(f"{printable(path)} (complete)")
    for title, lines in sections:
        print(f"{title}:")
        for line in lines:
            print(f"  {printable(line)}")
