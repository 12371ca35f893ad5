"""`crgpu checkpoint`: parse, build CheckpointOptions, call the core, render."""

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

  crgpu checkpoint --image-path /var/lib/ckpt/web1 web1

  crgpu checkpoint --leave-running --tcp-established -i /ckpt/train train-7

  crgpu checkpoint --dry-run --link-remap -i /ckpt/x x      # show argv, env and CRIU config

  crgpu checkpoint --root /run/gvisor --image-path /ckpt/g g1   # a runsc sandbox: its flags carried over

  crgpu checkpoint --cuda-checkpoint-path /usr/bin/cuda-checkpoint -i /ckpt/gpu gpu-job   # runsc + nvproxy
"""


def checkpoint(
    container_id: Annotated[str, typer.Argument(help="The container to checkpoint.", show_default=False)],
    image_path: Annotated[
        Optional[Path],
        typer.Option("--image-path", "-i", help="Directory for the checkpoint; must be new or empty."),
    ] = None,
    work_path: Annotated[
        Optional[Path],
        typer.Option("--work-path", help="Directory for CRIU's logs and stats (default: the image path)."),
    ] = None,
    leave_running: Annotated[
        bool, typer.Option("--leave-running", help="Keep the container running after the checkpoint.")
    ] = False,
    tcp_established: Annotated[
        bool, typer.Option("--tcp-established", help="Checkpoint established TCP connections.")
    ] = False,
    skip_in_flight: Annotated[
        bool,
        typer.Option(
            "--skip-in-flight", "--tcp-skip-in-flight", help="Skip half-open (in-flight) TCP connections."
        ),
    ] = False,
    link_remap: Annotated[
        bool, typer.Option("--link-remap", help="Link deleted-but-open files back so they can be dumped.")
    ] = False,
    tcp_close: Annotated[
        bool,
        typer.Option("--tcp-close", help="Drop established TCP connections (restore with --tcp-close too)."),
    ] = False,
    file_locks: Annotated[bool, typer.Option("--file-locks", help="Checkpoint file locks.")] = False,
    ext_unix_sk: Annotated[bool, typer.Option("--ext-unix-sk", help="Allow external unix sockets.")] = False,
    shell_job: Annotated[
        bool, typer.Option("--shell-job", help="Allow shell jobs (a controlling terminal).")
    ] = False,
    manage_cgroups_mode: Annotated[
        Optional[str],
        typer.Option("--manage-cgroups-mode", help="soft|full|strict|ignore (ignore: runc 1.2+)."),
    ] = None,
    compression: Annotated[
        Optional[str], typer.Option("--compression", help="runsc only: none|flate-best-speed.")
    ] = None,
    direct: Annotated[bool, typer.Option("--direct", help="runsc only: write pages with O_DIRECT.")] = False,
    exclude_committed_zero_pages: Annotated[
        bool, typer.Option("--exclude-committed-zero-pages", help="runsc only: leave zero pages out.")
    ] = False,
    cuda_checkpoint_path: Annotated[
        Optional[str],
        typer.Option(
            "--cuda-checkpoint-path",
            help="runsc GPU containers: cuda-checkpoint's path inside the container.",
        ),
    ] = None,
    pre_dump: Annotated[
        int,
        typer.Option(
            "--pre-dump", metavar="N", help="runc: N pre-dump rounds first, to shorten the final freeze."
        ),
    ] = 0,
    cuda: Annotated[
        str,
        typer.Option(
            "--cuda",
            help="runc GPU containers: auto, plugin (CRIU's), driver-api (crgpu drives the driver) or off.",
        ),
    ] = "auto",
    cuda_lock_timeout_ms: Annotated[
        int,
        typer.Option(
            "--cuda-lock-timeout",
            metavar="MS",
            help="driver-api: how long to wait for each CUDA process to lock.",
        ),
    ] = 10_000,
    keep_failed: Annotated[
        bool,
        typer.Option(
            "--keep-failed",
            help="Keep the partial image of a failed checkpoint (default: remove it, keep its logs).",
        ),
    ] = False,
    wait: Annotated[
        Optional[float],
        typer.Option(
            "--wait", metavar="SECONDS", help="Wait this long for another crgpu holding the container."
        ),
    ] = None,
    runtime: Annotated[
        str,
        typer.Option("--runtime", help="runc, runsc or auto (detect from the state roots)."),
    ] = "auto",
    root: Annotated[
        Optional[Path],
        typer.Option("--root", help="The runtime's state root (default: search the known roots)."),
    ] = None,
    runtime_flags: RuntimeFlagOpt = None,
    as_json: JsonOpt = False,
    dry_run: DryRunOpt = False,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Checkpoint a running container into a new image directory."""
    renderer = Renderer(as_json=as_json, quiet=quiet)

    def body() -> int:
        from crgpu import operations
        from crgpu.options import CheckpointOptions

        opts = validated(
            CheckpointOptions,
            {
                "container_id": container_id,
                "image_path": image_path,
                "work_path": work_path,
                "leave_running": leave_running,
                "tcp_established": tcp_established,
                "skip_in_flight": skip_in_flight,
                "link_remap": link_remap,
                "tcp_close": tcp_close,
                "file_locks": file_locks,
                "ext_unix_sk": ext_unix_sk,
                "shell_job": shell_job,
                "manage_cgroups_mode": manage_cgroups_mode,
                "compression": compression,
                "direct": direct,
                "exclude_committed_zero_pages": exclude_committed_zero_pages,
                "cuda_checkpoint_path": cuda_checkpoint_path,
                "keep_failed": keep_failed,
                "pre_dump": pre_dump,
                "cuda": cuda,
                "cuda_lock_timeout_ms": cuda_lock_timeout_ms,
                "wait": wait,
                "runtime": runtime,
                "root": root,
                "runtime_flags": tuple(runtime_flags or ()),
            },
        )
        plan = operations.plan_checkpoint(opts)
        return show_and_run(
            renderer,
            dry_run,
            plan.invocation.notes,
            f"{plan.adapter.label} checkpoint {plan.container.id}",
            lambda: operations.checkpoint_dry_run(plan),
            lambda sink: operations.execute_checkpoint(plan, sink),
        )

    run_guarded(renderer, debug, body)
