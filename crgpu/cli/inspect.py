"""`crgpu inspect IMAGE`: what a checkpoint holds, read from its crgpu.json alone (no runtime needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from crgpu.cli.common import DebugOpt, JsonOpt, QuietOpt, path_arg, run_guarded
from crgpu.cli.render import Renderer, format_stats
from crgpu.host.textsafe import printable

if TYPE_CHECKING:
    from crgpu.image.manifest import Image

EXAMPLES = """
Examples:

  crgpu inspect /var/lib/ckpt/web1

  crgpu inspect --json /ckpt/train | jq .stats.frozen_time
"""


def inspect(
    image_path: Annotated[
        str,
        typer.Argument(
            help="The checkpoint directory, or a checkpoint archive.",
            show_default=False,
            metavar="IMAGE_PATH",
        ),
    ],
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show what a checkpoint holds: runtime, container, options, host, GPUs, sizes, stats. An
    archive (crgpu export, podman --export, the kubelet's) is read without unpacking it."""
    renderer = Renderer(as_json=as_json, quiet=quiet)

    def body() -> int:
        from crgpu.image.archive_names import is_archive
        from crgpu.image.manifest import read_image

        path = path_arg(image_path, "IMAGE")
        if is_archive(path):
            return _inspect_archive(path, as_json, renderer)
        if _inspect_foreign_dir(path, as_json, renderer):
            return 0
        image = read_image(path)
        if as_json:
            renderer.json(_with_verdict(image, path=str(path), complete=True, trust=image.trust.level))
        else:
            print_manifest(path, image, renderer.rich_out)
        return 0

    run_guarded(renderer, debug, body)


def _inspect_foreign_dir(path: Path, as_json: bool, renderer: Renderer) -> bool:
    """CRIU's images without crgpu.json (Docker's checkpoint folders, a plain runc checkpoint):
    shown as foreign and unsigned; False when `path` is no such directory."""
    from crgpu.image.foreign_dir import foreign_dir

    found = foreign_dir(path)
    if found is None:
        return False
    document = {
        "path": str(path),
        "archive": False,
        "format": "criu",
        "trust": "unsigned",
        "checkpoint_bytes": found.checkpoint_bytes,
        "members": found.members,
        "stats": found.stats,
        "crgpu": None,
    }
    if as_json:
        renderer.json(document)
        return True
    print(
        f"{printable(path)} (CRIU's images without crgpu.json: Docker's, runc's or CRIU's own checkpoint; "
        "foreign and unsigned)"
    )
    print(f"  checkpoint: {found.checkpoint_bytes / 2**20:.1f} MiB in {found.members} files")
    for name, value in format_stats({k: float(v) for k, v in found.stats.items()}):
        print(f"  {printable(name)}: {printable(value)}")
    print("  restore: needs --force plus the container ID, --runtime, --root and --bundle")
    return True


def _with_verdict(image: Image, **verdict: object) -> dict[str, object]:
    """The manifest's document under crgpu's own verdict (path, trust): a manifest may carry
    extra members, and none of them may stand in for what crgpu found."""
    document = image.manifest.model_dump(mode="json")
    return {**verdict, **{key: value for key, value in document.items() if key not in verdict}}


def _inspect_archive(path: Path, as_json: bool, renderer: Renderer) -> int:
    from crgpu.image.archive_read import read_summary
    from crgpu.image.manifest import parse_manifest

    summary = read_summary(path)
    image = parse_manifest(summary.manifest, f"{path}:crgpu.json") if summary.manifest is not None else None
    config = summary.config

    def text(key: str) -> str | None:
        value = config.get(key)
        return value if isinstance(value, str) else None

    document = {
        "path": str(path),
        "archive": True,
        "format": summary.format,
        "container": {
            "id": text("id"),
            "name": text("name"),
            "image": text("rootfsImageName") or text("rootfsImageRef"),
            "runtime": text("runtime"),
            "created": text("createdTime"),
        },
        "checkpoint_bytes": summary.checkpoint_bytes,
        "members": summary.members,
        "stats": summary.stats,
        "crgpu": _with_verdict(image, trust=image.trust.level) if image is not None else None,
    }
    if as_json:
        renderer.json(document)
        return 0
    made = ", with crgpu.json" if summary.manifest is not None else ""
    print(f"{printable(path)} ({summary.format} archive{made})")
    for key, value in document["container"].items():  # type: ignore[attr-defined]
        print(f"  {key}: {printable(value) if value is not None else '-'}")
    print(f"  checkpoint: {summary.checkpoint_bytes / 2**20:.1f} MiB in {summary.members} members")
    for name, value in format_stats({k: float(v) for k, v in summary.stats.items()}):
        print(f"  {printable(name)}: {printable(value)}")
    if image is not None:
        print(f"  crgpu.json: {printable(image.trust.describe())}")
    return 0


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
