"""`crgpu doctor`: parse, run the checks (and the probe), render a table or JSON."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from crgpu.cli.common import DebugOpt, JsonOpt, QuietOpt, path_arg, run_guarded
from crgpu.cli.render import Renderer, stdout_columns
from crgpu.host.textsafe import printable

if TYPE_CHECKING:
    from crgpu.doctor.report import DoctorReport

EXAMPLES = """
Examples:

  crgpu doctor                       # can this node checkpoint runc, runsc, CUDA containers?

  crgpu doctor --probe               # plus a real checkpoint/restore round trip per runtime

  crgpu doctor --json --strict       # for CI gates: warnings count as failures

  crgpu doctor --image-path /ckpt --container train-7   # is there room for this checkpoint?
"""

TABLE_MIN_COLUMNS = 100
MARK = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skip": "skip"}
STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
GROUP_ORDER = ("runc and CRIU", "gVisor", "GPU", "host", "image")


def doctor(
    probe: Annotated[
        bool, typer.Option("--probe", help="Also checkpoint and restore a throwaway container per runtime.")
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Count warnings as failures.")] = False,
    image_path: Annotated[
        Optional[str],
        typer.Option("--image-path", "-i", metavar="DIR", help="Check free space for a checkpoint here."),
    ] = None,
    container: Annotated[
        Optional[str],
        typer.Option(
            "--container", metavar="CONTAINER_ID", help="With --image-path: count this container's memory."
        ),
    ] = None,
    root: Annotated[
        Optional[str],
        typer.Option(
            "--root", metavar="DIR", help="With --container: the runtime's state root to find it in."
        ),
    ] = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check that this node can checkpoint (GPU) containers, and say exactly what to fix."""
    renderer = Renderer(as_json=as_json, quiet=quiet)

    def body() -> int:
        from crgpu.doctor.report import run_doctor
        from crgpu.host.cgroup_memory import container_memory_bytes

        memory = 0
        if container:
            from crgpu.runtimes.detect import find_container

            state_root = path_arg(root, "--root") if root is not None else None
            memory = container_memory_bytes(find_container(container, root=state_root).pid)
        if probe and not as_json:
            renderer.status("probing: a throwaway container per runtime, checkpointed and restored ...")
        target = path_arg(image_path, "--image-path") if image_path is not None else None
        report = run_doctor(image_path=target, container_memory=memory, strict=strict, probe=probe)
        render_report(report, renderer)
        return 0 if report.ok else 1

    run_guarded(renderer, debug, body)


def render_report(report: DoctorReport, renderer: Renderer) -> None:
    if renderer.as_json:
        renderer.json(report.to_json())
        return
    groups = sorted(
        {c.group for c in report.checks}, key=lambda g: GROUP_ORDER.index(g) if g in GROUP_ORDER else 99
    )
    if renderer.rich_out and stdout_columns() >= TABLE_MIN_COLUMNS:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title="crgpu doctor", show_lines=False)
        for column in ("", "check", "status", "detail"):
            table.add_column(column, overflow="fold")
        for group in groups:
            table.add_section()
            for n, check in enumerate(c for c in report.checks if c.group == group):
                detail = Text(printable(check.detail))
                if check.fix and check.status in ("fail", "warn"):
                    detail += Text("\nfix: ", style="yellow") + Text(printable(check.fix))
                shown_group = group if n == 0 else ""  # the group once, on its first row
                table.add_row(
                    shown_group, check.id, Text(MARK[check.status], style=STYLE[check.status]), detail
                )
        console = Console()
        console.print(table)
        settings = Table(title="effective config", show_header=True)
        for column in ("setting", "value", "from"):
            settings.add_column(column, overflow="fold")
        for item in report.config:
            settings.add_row(
                item["name"], Text(printable(_show(item["value"]))), Text(printable(item["source"]))
            )
        console.print(settings)
        console.print(Text(printable(report.summary), style="green" if report.ok else "bold red"))
        return
    # A list below ~100 columns (a 14-character detail column broke paths mid-word) and in pipes.
    out = sys.stdout
    for group in groups:
        print(f"{group}:", file=out)
        for check in (c for c in report.checks if c.group == group):
            print(f"  [{MARK[check.status]:>4}] {check.id}: {printable(check.detail)}", file=out)
            if check.fix and check.status in ("fail", "warn"):
                print(f"         fix: {printable(check.fix)}", file=out)
    print("config:", file=out)
    for item in report.config:
        print(
            f"  {item['name']} = {printable(_show(item['value']))}  ({printable(item['source'])})", file=out
        )
    print(report.summary, file=out)


def _show(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ":".join(str(v) for v in value)
    return str(value)
