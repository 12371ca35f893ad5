"""CRIU's lazy-pages daemon beside a lazy restore: started, watched, waited for."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from crgpu.core.plan import RestorePlan
from crgpu.core.result import OperationResult
from crgpu.criu.logs import criu_log_errors, hint_for
from crgpu.host.errors import RuntimeFailed
from crgpu.host.process import spawn_beside

LAZY_SOCKET_WAIT_S = 10.0


LAZY_TRANSFER_TIMEOUT_S = 3600.0


def start_daemon(plan: RestorePlan) -> tuple[subprocess.Popen[bytes], float]:
    """Start CRIU's lazy-pages daemon over the image; return once its socket is up."""
    daemon = spawn_beside(plan.invocation.helper_argv, plan.work_dir / "crgpu-lazy-pages-output.log")
    started = time.monotonic()
    socket = plan.work_dir / "lazy-pages.socket"
    while not socket.exists():
        if daemon.poll() is not None or time.monotonic() - started > LAZY_SOCKET_WAIT_S:
            daemon.kill()
            daemon.wait()
            errors = criu_log_errors(plan.work_dir / "lazy-pages.log")
            raise RuntimeFailed(
                "CRIU's lazy-pages daemon did not start" + (f": {errors[0]}" if errors else ""),
                hint=hint_for(errors)
                or "check that the kernel has userfaultfd (criu check --feature uffd-noncoop)",
                detail=[f"log: {plan.work_dir / 'lazy-pages.log'}"],
            )
        time.sleep(0.005)
    return daemon, time.monotonic()


def finish_daemon(
    daemon: tuple[subprocess.Popen[bytes], float], result: OperationResult, work_dir: Path
) -> float | None:
    """Wait until every page has arrived (the daemon exits then); the seconds that took."""
    process, started = daemon
    if not result.ok:
        process.kill()
        process.wait()
        return None
    try:
        code = process.wait(timeout=LAZY_TRANSFER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    if code != 0:
        result.ok = False
        errors = criu_log_errors(work_dir / "lazy-pages.log")
        result.error = "CRIU's lazy-pages daemon failed before every page arrived" + (
            f": {errors[0]}" if errors else ""
        )
        result.log_path = str(work_dir / "lazy-pages.log")
        return None
    return time.monotonic() - started
