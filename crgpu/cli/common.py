"""What every command shares: error handling, exit codes, the common flags."""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from crgpu.host.errors import CrgpuError, ExitCode, UsageError, error_context
from crgpu.host.textsafe import printable

if TYPE_CHECKING:
    from pydantic import BaseModel

    from crgpu.cli.render import Renderer
    from crgpu.core.result import OperationResult
    from crgpu.host.process import LineSink
    from crgpu.image.archive_names import ProgressOpener

# pydantic loads only when a command runs: `crgpu --help` and `--version` stay fast.
M = TypeVar("M", bound="BaseModel")

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else there.")
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print the exact argv, environment and CRIU config; run nothing.")
]
DebugOpt = Annotated[
    bool, typer.Option("--debug", help="Show tracebacks of internal errors.", envvar="CRGPU_DEBUG")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors and data.")]


def summary(doc: str) -> str:
    """A docstring's first sentence, whole, however its lines are broken."""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    return first.split(". ")[0].rstrip(".")


def unwrapped(text: str) -> str:
    """Help text whose paragraphs click prints as they are: an example is never broken inside
    its command (click's `\\b` marks a paragraph it must not rewrap)."""
    return "\n\n".join(f"\b\n{paragraph}" for paragraph in text.strip("\n").split("\n\n"))


def path_arg(text: str, flag: str) -> Path:
    """A path from the command line, checked as the options model checks paths (NUL bytes, lengths),
    made absolute. Typer's Path type would stat it while parsing and raise on a NUL byte."""
    from crgpu.options.models import check_path_lengths

    try:
        check_path_lengths(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}", hint="see --help") from None
    if not text:
        raise UsageError(f"{flag}: path is empty", hint="see --help")
    return Path(text).expanduser().absolute()


def validated(model: type[M], values: dict[str, Any]) -> M:
    """Build an options model from the flags given (None: not given, so the model's default)."""
    from pydantic import ValidationError

    from crgpu.options.models import validation_messages

    try:
        return model.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        lines = validation_messages(exc)
        raise UsageError(
            "invalid options: " + "; ".join(lines) if len(lines) == 1 else "invalid options",
            hint="see --help",
            detail=lines if len(lines) > 1 else [],
        ) from exc


def run_guarded(renderer: Renderer, debug: bool, body: Callable[[], int]) -> None:
    """Run a command body; map every failure to its exit code, a traceback only with --debug."""
    try:
        code = body()
    except CrgpuError as exc:
        renderer.error(exc)
        raise typer.Exit(int(exc.exit_code)) from None
    except KeyboardInterrupt:
        renderer.error(CrgpuError("interrupted", exit_code=ExitCode.INTERRUPTED))
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except (typer.Exit, SystemExit):
        raise
    except OSError as exc:
        # A path the kernel refused that no check above caught: a path problem, not a crash.
        where = f" {printable(exc.filename)}" if exc.filename else ""
        if isinstance(exc, PermissionError) and os.geteuid() != 0:
            # Images, work dirs and runtime state are root's (0700): not the path, the user.
            error = CrgpuError(
                f"cannot use{where}: permission denied",
                hint="run crgpu as root: its images and the runtimes' state are root's",
                exit_code=ExitCode.PRECONDITION,
            )
        else:
            error = CrgpuError(
                f"cannot use{where}: {exc.strerror or exc}",
                hint="check the path and its permissions",
                exit_code=ExitCode.IMAGE_PATH,
            )
        renderer.error(error)
        raise typer.Exit(int(error.exit_code)) from None
    except Exception as exc:
        if debug or os.environ.get("CRGPU_DEBUG"):
            traceback.print_exc(file=sys.stderr)
        renderer.error(
            CrgpuError(
                f"internal error: {type(exc).__name__}: {exc}",
                hint="run again with --debug for the traceback, and report it",
            )
        )
        raise typer.Exit(int(ExitCode.RUNTIME_FAILED)) from None
    raise typer.Exit(code)


@dataclass(frozen=True)
class Planned:
    """A checkpoint or restore, planned: its panel title, its notes, and its two ways to go."""

    title: str
    notes: list[str]
    preview: Callable[[], OperationResult]
    execute: Callable[[LineSink], OperationResult]
    # Bytes written so far and the bytes expected (None: unknown), for the live progress line.
    measure: Callable[[], tuple[int, int | None]] | None = None


def run_planned(
    verb: str, parse: Callable[[dict[str, Any]], Callable[[ProgressOpener], Planned]]
) -> Callable[[dict[str, Any]], None]:
    """The body of checkpoint and restore: plan, then the dry run's plan, or the notes, the
    runtime's live output and the result; every failure through run_guarded."""

    def run(values: dict[str, Any]) -> None:
        from crgpu.cli.render import Renderer  # not for --help

        renderer = Renderer(as_json=values["as_json"], quiet=values["quiet"])

        def body() -> int:
            # A refusal's document names the verb and the container as typed (a plan that found it
            # puts the resolved ID and its GPU verdict in first).
            typed = values.get("container_id")
            with error_context(verb=verb, container_id=typed, container=typed):
                return planned_body()

        def planned_body() -> int:
            from crgpu.core.timings import process_age_s

            plan = parse(values)
            startup = process_age_s()
            started = time.monotonic()
            planned = plan(renderer.progress)
            timings = {"startup_s": startup, "plan_s": round(time.monotonic() - started, 4)}
            if values["dry_run"]:
                preview = planned.preview()
                preview.container = values.get("container_id") or preview.container_id
                preview.timings.update({k: v for k, v in timings.items() if v is not None})
                renderer.result(preview)
                return 0
            for note in planned.notes:
                renderer.note(note)
            started = time.monotonic()
            with renderer.stream(planned.title, planned.measure) as sink:
                result = planned.execute(sink)
            result.container = values.get("container_id") or result.container_id
            own = time.monotonic() - started - result.timings.get("runtime_s", 0.0)
            result.timings = {
                **{k: v for k, v in timings.items() if v is not None},
                "runtime_s": result.timings.get("runtime_s", 0.0),
                **(
                    {"runtime_delete_s": result.timings["runtime_delete_s"]}
                    if "runtime_delete_s" in result.timings
                    else {}
                ),
                "post_s": round(max(own, 0.0), 4),
            }
            renderer.result(result)
            return int(result.ok is False)

        run_guarded(renderer, values["debug"], body)

    return run
