"""`crgpu export -i IMAGE -o FILE`: a checkpoint as an archive the engines and checkpointctl read."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from crgpu.cli.common import DebugOpt, JsonOpt, QuietOpt, path_arg, run_guarded
from crgpu.cli.render import Renderer, size_text
from crgpu.host.textsafe import printable

EXAMPLES = """
Examples:

  crgpu export -i /ckpt/web1 -o web1.tar.zst   # a podman container: podman's format, zstd

  podman container restore --import web1.tar.zst

  crgpu export -i /ckpt/train --format kubernetes --compression gzip -o train.tar.gz

  checkpointctl inspect --stats web1.tar.zst

  crgpu export -i /ckpt/train --format oci -o train.oci.tar

  skopeo copy oci-archive:train.oci.tar docker://registry.example/ckpt/train:1
"""


class Format(StrEnum):
    auto = "auto"
    podman = "podman"
    kubernetes = "kubernetes"
    oci = "oci"


class Compression(StrEnum):
    auto = "auto"
    zstd = "zstd"
    gzip = "gzip"
    none = "none"


def export(
    image_path: Annotated[
        str,
        typer.Option(
            "--image-path",
            "-i",
            metavar="DIR",
            help="The checkpoint directory (crgpu's).",
            show_default=False,
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", metavar="FILE", help="The archive to write (new).", show_default=False
        ),
    ],
    fmt: Annotated[
        Format,
        typer.Option(
            "--format",
            help="podman: for `podman container restore --import`; kubernetes: the kubelet's checkpoint "
            "archive (CRI, containerd, checkpointctl); oci: an OCI image (oci-archive) holding the "
            "kubelet's archive, for a registry and a pod spec's image; auto: podman's for a podman "
            "container, else kubernetes.",
        ),
    ] = Format.auto,
    compression: Annotated[
        Compression,
        typer.Option(
            "--compression",
            help="zstd (multi-threaded), gzip or none; auto: zstd for podman, none for kubernetes "
            "(containerd reads a plain tar only).",
        ),
    ] = Compression.auto,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a checkpoint into an archive in the engines' format (podman, Kubernetes, checkpointctl)."""
    renderer = Renderer(as_json=as_json, quiet=quiet)

    def body() -> int:
        from crgpu.image.archive_export import export_image

        with renderer.progress("exporting") as advance:
            done = export_image(
                path_arg(image_path, "--image-path"),
                path_arg(output, "--output"),
                fmt.value,
                compression.value,
                advance,
            )
        document = {
            "ok": True,
            "archive": str(done.archive),
            "format": done.format,
            "compression": done.compression,
            "members": done.members,
            "input_bytes": done.input_bytes,
            "archive_bytes": done.archive_bytes,
            "duration_s": done.duration_s,
            "notes": done.notes,
        }
        if as_json:
            renderer.json(document)
        elif not quiet:
            for note in done.notes:
                renderer.note(note)
            ratio = done.archive_bytes / done.input_bytes if done.input_bytes else 0
            rate = f", {size_text(done.input_bytes / done.duration_s)}/s" if done.duration_s > 0 else ""
            print(
                f"Exported to {printable(done.archive)} ({done.format}, {done.compression}): "
                f"{size_text(done.input_bytes)} of checkpoint in {size_text(done.archive_bytes)} of archive "
                f"({ratio:.0%}) in {done.duration_s:.2f} s{rate}"
            )
        return 0

    run_guarded(renderer, debug, body)
