"""`crgpu restore`: parse, build RestoreOptions, call the core, render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from crgpu.cli.common import (
    DebugOpt,
    DryRunOpt,
    JsonOpt,
    QuietOpt,
    RuntimeFlagOpt,
    run_guarded,
    show_and_run,
    validated,
)
from crgpu.cli.render import Renderer

EXAMPLES = """
Examples:

  crgpu restore --image-path /var/lib/ckpt/web1          # runtime, root, ID, bundle from crgpu.json

  crgpu restore -i /ckpt/train --bundle /srv/train train-7-copy

  crgpu restore --dry-run -i /ckpt/x
"""


def restore(
    container_id: Annotated[
        Optional[str],
        typer.Argument(
            help="ID for the restored container (default: the checkpointed one).", show_default=False
        ),
    ] = None,
    image_path: Annotated[
        Optional[Path], typer.Option("--image-path", "-i", help="The checkpoint directory.")
    ] = None,
    work_path: Annotated[
        Optional[Path],
        typer.Option(
            "--work-path",
            help="Directory for CRIU's restore log and stats (default: a new dir under /var/lib/crgpu/work).",
        ),
    ] = None,
    bundle: Annotated[
        Optional[Path],
        typer.Option("--bundle", "-b", help="The container's bundle (default: from crgpu.json)."),
    ] = None,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach/--no-detach",
            "-d",
            help="Return once the container runs (default), or wait for it to exit.",
        ),
    ] = True,
    pid_file: Annotated[
        Optional[Path], typer.Option("--pid-file", help="Write the restored container's PID here.")
    ] = None,
    tcp_established: Annotated[
        bool, typer.Option("--tcp-established", help="Restore established TCP connections.")
    ] = False,
    tcp_close: Annotated[
        bool,
        typer.Option(
            "--tcp-close", help="Restore connected TCP sockets closed (as dumped with --tcp-close)."
        ),
    ] = False,
    file_locks: Annotated[bool, typer.Option("--file-locks", help="Restore file locks.")] = False,
    ext_unix_sk: Annotated[bool, typer.Option("--ext-unix-sk", help="Allow external unix sockets.")] = False,
    shell_job: Annotated[bool, typer.Option("--shell-job", help="Allow shell jobs.")] = False,
    manage_cgroups_mode: Annotated[
        Optional[str],
        typer.Option("--manage-cgroups-mode", help="soft|full|strict|ignore (ignore: runc 1.2+)."),
    ] = None,
    direct: Annotated[bool, typer.Option("--direct", help="runsc only: read pages with O_DIRECT.")] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Proceed past the image checks (missing crgpu.json, runtime mismatch)."),
    ] = False,
    trust_image: Annotated[
        bool,
        typer.Option(
            "--trust-image",
            help="Let an image this node did not sign choose the state root and bundle.",
        ),
    ] = False,
    lazy_pages: Annotated[
        bool,
        typer.Option(
            "--lazy-pages", help="Run the container at once; memory pages follow (runc: CRIU lazy-pages)."
        ),
    ] = False,
    wait: Annotated[
        Optional[float],
        typer.Option(
            "--wait", metavar="SECONDS", help="Wait this long for another crgpu holding the container."
        ),
    ] = None,
    runtime: Annotated[
        str, typer.Option("--runtime", help="runc, runsc or auto (from crgpu.json).")
    ] = "auto",
    root: Annotated[
        Optional[Path], typer.Option("--root", help="The runtime's state root (default: from crgpu.json).")
    ] = None,
    runtime_flags: RuntimeFlagOpt = None,
    as_json: JsonOpt = False,
    dry_run: DryRunOpt = False,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Restore a container from a checkpoint made by crgpu."""
    renderer = Renderer(as_json=as_json, quiet=quiet)

    def body() -> int:
        from crgpu import operations
        from crgpu.options import RestoreOptions

        opts = validated(
            RestoreOptions,
            {
                "container_id": container_id,
                "image_path": image_path,
                "work_path": work_path,
                "bundle": bundle,
                "detach": detach,
                "pid_file": pid_file,
                "tcp_established": tcp_established,
                "tcp_close": tcp_close,
                "file_locks": file_locks,
                "ext_unix_sk": ext_unix_sk,
                "shell_job": shell_job,
                "manage_cgroups_mode": manage_cgroups_mode,
                "direct": direct,
                "force": force,
                "wait": wait,
                "lazy_pages": lazy_pages,
                "trust_image": trust_image,
                "runtime": runtime,
                "root": root,
                "runtime_flags": tuple(runtime_flags or ()),
            },
        )
        plan = operations.plan_restore(opts)
        return show_and_run(
            renderer,
            dry_run,
            plan.invocation.notes,
            f"{plan.adapter.label} restore {plan.container_id}",
            lambda: operations.restore_dry_run(plan),
            lambda sink: operations.execute_restore(plan, sink),
        )

    run_guarded(renderer, debug, body)
