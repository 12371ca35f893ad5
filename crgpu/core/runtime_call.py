"""One runtime call: run it (streamed, logged), record its exit, explain a failure from CRIU's log."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from crgpu.core.hostinfo import has_checkpoint_privileges
from crgpu.core.result import OperationResult
from crgpu.criu.logs import criu_log_errors, headline, hint_for, runtime_error_lines
from crgpu.criu.stats import read_stats
from crgpu.host.errors import CrgpuError, ImagePathError, PreconditionError
from crgpu.host.process import LineSink, Watchdog, run_streaming
from crgpu.host.safedirs import space_hint
from crgpu.runtimes.base import Invocation
from crgpu.runtimes.base import RuntimeAdapter as Adapter

# An empty plugin directory of crgpu's own, in the work dir, for CRIU to load plugins from.
NO_PLUGINS_DIR = "criu-no-plugins"


def no_plugins_config(work_dir: Path) -> tuple[str, ...]:
    """CRIU config lines that keep CRIU from loading its default libdir's plugins: in driver-API
    mode crgpu drives CUDA itself, and CRIU's cuda_plugin.so (loaded for every .so there) would
    lock or restore in place first, or fail "Missing required plugin"."""
    return (f"libdir {work_dir / NO_PLUGINS_DIR}",)


def write_criu_config(inv: Invocation) -> None:
    if inv.criu_config is None or inv.criu_config_path is None:
        return
    try:
        if f"libdir {inv.criu_config_path.parent / NO_PLUGINS_DIR}" in inv.criu_config.splitlines():
            (inv.criu_config_path.parent / NO_PLUGINS_DIR).mkdir(mode=0o700, exist_ok=True)
        inv.criu_config_path.write_text(inv.criu_config)
    except OSError as exc:
        raise ImagePathError(f"cannot write {inv.criu_config_path}: {exc.strerror}") from exc


def run_runtime(
    result: OperationResult,
    adapter: Adapter,
    inv: Invocation,
    sink: LineSink,
    work_dir: Path,
    verb: str,
    root: Path,
    timeout_s: float | None = None,
    watchdog: Watchdog | None = None,
    pass_fd: tuple[int, int] | None = None,
) -> None:
    output_log = work_dir / f"crgpu-{verb}-output.log"
    try:
        run = run_streaming(
            inv.argv, sink, output_log, inv.env, timeout_s=timeout_s, watchdog=watchdog, pass_fd=pass_fd
        )
    except OSError as exc:
        raise ImagePathError(f"cannot write {output_log}: {exc.strerror}", hint=space_hint(exc)) from exc
    finally:
        if inv.criu_config_path is not None:  # the empty plugin dir is CRIU's for this call only
            with contextlib.suppress(OSError):
                os.rmdir(inv.criu_config_path.parent / NO_PLUGINS_DIR)
    result.exit_code = run.exit_code
    result.duration_s = round(run.duration_s, 4)
    result.timings["runtime_s"] = round(result.timings.get("runtime_s", 0.0) + run.duration_s, 4)
    result.interrupted_by = run.interrupted_by
    if run.exit_code == 0:
        return
    logs = [path for path in adapter.log_paths(verb, work_dir, inv.global_flags) if path.exists()]
    errors = criu_log_errors(logs[0]) if logs and adapter.name == "runc" else []
    runtime_errors = runtime_error_lines(
        [line for line in run.tail if _ERRORISH.search(line) and not line.startswith(" ")]
    )
    result.ok = False
    result.criu_errors = errors
    result.log_path = str(logs[0]) if logs else str(output_log)
    result.hint = hint_for(errors + runtime_errors) or _full(work_dir)
    first = (
        headline(errors) or headline(runtime_errors) or next((line for line in run.tail if line.strip()), "")
    )
    result.error = f"{adapter.label} {verb} failed (exit {run.exit_code})" + (f": {first}" if first else "")
    if run.stopped_because:
        result.error = f"crgpu stopped {adapter.label} {verb}: {run.stopped_because}"
        result.hint = result.hint or f"see {result.log_path}; the image may be damaged: check its files"


_ERRORISH = re.compile(r"(?i)error|fail|cannot|can't|not defined|does not exist|invalid")


def _full(work_dir: Path) -> str | None:
    """When nothing said why, a work path with no space left says it (CRIU may not have been able
    to write even its log)."""
    try:
        free = os.statvfs(work_dir).f_bavail
    except OSError:
        return None
    return (
        "the filesystem under the image or work path is full: free space or choose another --image-path"
        if free == 0
        else None
    )


def require_privileges(verb: str) -> None:
    if not has_checkpoint_privileges():
        raise PreconditionError(
            f"crgpu {verb} needs root (or CAP_SYS_ADMIN with CAP_CHECKPOINT_RESTORE): runc, runsc and CRIU do",
            hint=f"run `crgpu {verb}` as root",
        )


def criu_stats(criu_stats: Path, duration_name: str, duration_s: float) -> dict[str, float]:
    """CRIU's own statistics (runc) plus the runtime's wall time, all in microseconds."""
    stats: dict[str, float] = dict(read_stats(criu_stats))
    stats[duration_name] = int(duration_s * 1_000_000)
    return stats


def safe_status(adapter: Adapter, container_id: str, root: Path) -> str | None:
    try:
        return adapter.status(container_id, root)
    except CrgpuError:
        return None
