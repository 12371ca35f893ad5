"""Rendering: Rich panels on a terminal, plain lines when piped, one JSON document with --json.

Status and panels go to stderr; data (IDs, dry-run plans, JSON) to stdout. Every string that came
from outside (an image, a runtime, a path) is shown through `printable` and never as Rich markup:
Rich reads markup only in the few labels written here.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from crgpu.host.textsafe import printable, strict_json

if TYPE_CHECKING:
    from rich.console import Console

    from crgpu.core.result import OperationResult
    from crgpu.host.errors import CrgpuError

PANEL_LINES = 18
PAGE_BYTES = 4096
Measure = Callable[[], tuple[int, "int | None"]]


# Runtime lines that repeat without telling the operator more: shown once, then counted.
_REPEATS = re.compile(r"Failed to remove cgroup \(will retry\)|retrying after error")


class _Folder:
    """Keeps the first of each repeating runtime warning (runc's "Failed to remove cgroup (will
    retry)", ten per failed restore) and counts the rest, for one line at the end."""

    def __init__(self) -> None:
        self.folded: dict[str, int] = {}

    def keep(self, line: str) -> bool:
        found = _REPEATS.search(line)
        if found is None:
            return True
        key = found.group(0)
        self.folded[key] = self.folded.get(key, -1) + 1
        return self.folded[key] == 0

    def summary(self) -> str:
        more = {key: count for key, count in self.folded.items() if count}
        return "; ".join(f"({count} more '{key}' from the runtime)" for key, count in more.items())


def size_text(count: float) -> str:
    """Bytes in binary units, the one unit system crgpu shows (GiB on bars and in summaries alike)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def progress_line(measured: tuple[int, int | None] | None, elapsed: float) -> str:
    """`412.0 MiB of ~1.0 GiB (40%), 3.2 s, 128.8 MiB/s`; the elapsed time alone without a measure."""
    if measured is None:
        return f"{elapsed:.1f} s"
    done, expected = measured
    rate = f", {size_text(done / elapsed)}/s" if elapsed > 0.5 and done else ""
    if expected:
        return f"{size_text(done)} of ~{size_text(expected)} ({min(done / expected, 9.99):.0%}), {elapsed:.1f} s{rate}"
    return f"{size_text(done)}, {elapsed:.1f} s{rate}"


def _terminal(stream: Any) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def stderr_is_terminal() -> bool:
    return _terminal(sys.stderr)


def stdout_is_terminal() -> bool:
    """Whether data written to stdout (doctor's table, inspect's tree) reaches a terminal: the
    choice follows the stream written to (as gh and kubectl decide), not stderr's."""
    return _terminal(sys.stdout)


def stdout_columns() -> int:
    import shutil

    return shutil.get_terminal_size().columns


def _console() -> Console:
    from rich.console import Console  # Rich only when drawing: keeps start-up fast

    return Console(stderr=True, highlight=False)


class Renderer:
    def __init__(self, *, as_json: bool, quiet: bool) -> None:
        self.as_json = as_json
        self.quiet = quiet
        self.rich = stderr_is_terminal()  # status, progress and panels: stderr
        self.rich_out = stdout_is_terminal()  # tables and trees of data: stdout

    # --- status lines (stderr) ---
    def status(self, message: str, *, label: str = "", style: str = "") -> None:
        """One line: crgpu's own `label` (styled on a terminal), then `message`, shown literally."""
        if self.quiet:
            return
        if self.rich:
            from rich.text import Text

            line = Text(label + " ", style=style) if label else Text()
            _console().print(line + Text(printable(message)))
        else:
            print((label + " " if label else "") + printable(message), file=sys.stderr, flush=True)

    def json(self, document: Any) -> None:
        print(strict_json(document))

    def note(self, message: str) -> None:
        self.status(message, label="note:", style="dim")

    @contextmanager
    def progress(self, title: str) -> Iterator[Any]:
        """A progress bar on a terminal (bytes done of total); nothing when piped or quiet."""
        if self.quiet or self.as_json or not self.rich:
            yield None
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        with Progress(
            title,
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            console=_console(),
            transient=True,
        ) as bar:
            task = bar.add_task(title, total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield advance

    # --- live runtime output (stderr) ---
    @contextmanager
    def stream(self, title: str, measure: Measure | None = None) -> Iterator[Any]:
        """The runtime's output live in a panel, under a line of progress: bytes written of those
        expected, elapsed time and rate (a spinner and the time where nothing can be measured).
        The panel goes when the call ends: a failure is told by the error and its detail."""
        if self.quiet:
            yield lambda _line: None
            return
        folder = _Folder()
        if not self.rich:

            def plain(line: str) -> None:
                if folder.keep(line):
                    print(printable(line), file=sys.stderr, flush=True)

            yield plain
            if folder.summary():
                print(folder.summary(), file=sys.stderr, flush=True)
            return
        from rich.console import Group
        from rich.live import Live
        from rich.panel import Panel
        from rich.spinner import Spinner
        from rich.text import Text

        shown: deque[str] = deque(maxlen=PANEL_LINES)
        started = time.monotonic()
        spinner = Spinner("dots")

        class Dynamic:
            """Rendered afresh at each of Live's refreshes: the clock moves without output."""

            def __rich__(self) -> Group:
                line = Text(progress_line(measure() if measure else None, time.monotonic() - started))
                body = Text("\n".join(shown), overflow="fold") if shown else Text("…")
                spinner.text = line
                return Group(spinner, Panel(body, title=title, border_style="blue"))

        with Live(Dynamic(), console=_console(), refresh_per_second=4, transient=True):

            def to_panel(line: str) -> None:
                if folder.keep(line):
                    shown.append(printable(line))

            yield to_panel
        if folder.summary():
            self.status(folder.summary(), style="dim")

    # --- results ---
    def result(self, result: OperationResult) -> None:
        if self.as_json:
            self.json(result.to_json())
            return
        if result.dry_run:
            print(format_plan(result))
            return
        for warning in result.warnings:
            self.status(warning, label="warning:", style="bold yellow")
        if result.ok:
            verb = "Checkpointed" if result.verb == "checkpoint" else "Restored"
            written = result.sizes.get("image_bytes")
            rate = result.sizes.get("image_bytes_per_s")
            size = (
                f" ({size_text(written)}" + (f", {size_text(rate)}/s" if rate else "") + ")"
                if written
                else ""
            )
            named = result.container or result.container_id
            who = named if named == result.container_id else f"{named} (ID {result.container_id})"
            self.status(
                f"{who} with {result.runtime} "
                f"{result.runtime_version} in {result.duration_s:.2f} s; image {result.image_path}{size}, "
                f"work {result.work_path}",
                label=verb,
                style="green",
            )
            self.stats(result.stats)
            self.timings(result.timings)
            print(printable(named))  # as the operator named it, as podman prints it
            return
        self.failure(result.error or f"{result.verb} failed", result.hint, _failure_detail(result))

    def stats(self, stats: dict[str, float]) -> None:
        rows = format_stats(stats)
        if self.quiet or not rows:
            return
        if self.rich:
            from rich.table import Table

            table = Table(title="statistics", show_header=False, box=None, padding=(0, 2))
            for name, value in rows:
                table.add_row(name, value)
            _console().print(table)
            return
        print("statistics: " + ", ".join(f"{name} {value}" for name, value in rows), file=sys.stderr)

    def timings(self, timings: dict[str, float]) -> None:
        """Where the call's time went: crgpu's fixed cost beside the runtime's."""
        names = (
            ("startup_s", "start-up"),
            ("plan_s", "plan"),
            ("runtime_s", "runtime"),
            ("post_s", "crgpu after plan"),
        )
        shown = [f"{label} {timings[key] * 1000:.0f} ms" for key, label in names if key in timings]
        if "runtime_delete_s" in timings and "runtime_s" in timings:
            # runsc: the checkpoint, then the sandbox's delete, both the runtime's (as runsc itself is timed)
            index = next(i for i, text in enumerate(shown) if text.startswith("runtime "))
            shown[index] += (
                f" (of it, runsc's delete of the sandbox {timings['runtime_delete_s'] * 1000:.0f} ms)"
            )
        if self.quiet or not shown:
            return
        self.status(", ".join(shown), label="timings:", style="dim")

    def failure(self, message: str, hint: str | None, detail: list[str]) -> None:
        message = printable(message)
        hint = printable(hint) if hint else None
        detail = [printable(line) for line in detail]
        if self.rich:
            from rich.panel import Panel
            from rich.text import Text

            console = _console()
            console.print(Text("Error: ", style="bold red") + Text(message))
            if hint:
                console.print(Text("Hint: ", style="bold yellow") + Text(hint))
            if detail:
                console.print(Panel(Text("\n".join(detail)), title="details", border_style="red"))
            return
        print(f"crgpu: error: {message}", file=sys.stderr)
        if hint:
            print(f"crgpu: hint: {hint}", file=sys.stderr)
        for line in detail:
            print(f"  {line}", file=sys.stderr)

    def error(self, exc: CrgpuError) -> None:
        if self.as_json:
            from crgpu.core.result import error_document

            self.json(error_document(exc.message, exc.hint, int(exc.exit_code), exc.detail, exc.context))
        self.failure(exc.message, exc.hint, exc.detail)


def _failure_detail(result: OperationResult) -> list[str]:
    lines = [f"criu: {line}" for line in result.criu_errors]
    if result.log_path:
        lines.append(f"log: {result.log_path}")
    if result.container_status:
        lines.append(f"container now: {result.container_status}")
    return lines


STATS_SHOWN = (
    "freezing_time",
    "frozen_time",
    "paused_time",
    "memdump_time",
    "memwrite_time",
    "pages_scanned",
    "pages_written",
    "forking_time",
    "restore_time",
    "pages_restored",
    "runtime_checkpoint_duration",
    "runtime_restore_duration",
    "time_to_running",
    "lazy_pages_complete",
    "cuda_lock_time",
    "cuda_checkpoint_time",
    "cuda_restore_time",
    "cuda_unlock_time",
    "gpu_bytes",
    "gpu_checkpoint_gbps",
)


def format_stats(stats: dict[str, float]) -> list[tuple[str, str]]:
    """The statistics operators know from podman --print-stats; times (µs) shown in ms."""
    rows = []
    for name in STATS_SHOWN:
        if name in stats:
            value = stats[name]
            timed = name.endswith(("_time", "_duration", "_complete", "time_to_running"))
            if timed:
                shown = f"{value / 1000:.1f} ms"
            elif name.startswith("pages_"):
                shown = f"{value:g} ({size_text(value * PAGE_BYTES)})"  # CRIU counts 4 KiB pages
            elif name == "gpu_bytes":
                shown = size_text(value)
            else:
                shown = f"{value:g}"
            rows.append((name, shown))
    return rows


def format_plan(result: OperationResult) -> str:
    lines = [
        f"runtime: {result.runtime} {result.runtime_version}",
        f"container: {result.container_id}",
        f"image path: {result.image_path}",
        f"work path: {result.work_path}",
    ]
    lines += [f"pre-dump {k}: {shlex.join(argv)}" for k, argv in enumerate(result.pre_dump_argv, start=1)]
    lines.append(f"argv: {shlex.join(result.argv)}")
    if result.helper_argv:
        lines.append(f"beside it: {shlex.join(result.helper_argv)}")
    for key, value in result.env.items():
        lines.append(f"env: {key}={value}")
    if result.criu_config:
        lines.append("criu config:")
        lines += [f"  {line}" for line in result.criu_config.splitlines()]
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(printable(line) for line in lines)
