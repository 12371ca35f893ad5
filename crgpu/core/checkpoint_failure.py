"""After a failed checkpoint: the CUDA processes resumed, a partial image removed once no process holds it (or kept when asked), CRIU's logs moved where the operator is told to look."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from crgpu.core.plan import CheckpointPlan, work_dir_for
from crgpu.core.result import OperationResult
from crgpu.core.runtime_call import (
    safe_status,
)
from crgpu.host.errors import CrgpuError
from crgpu.image.manifest import (
    prepare_work_dir,
)


def thaw_left_paused(plan: CheckpointPlan) -> str | None:
    """Resume a container that was running and is left frozen (CRIU, a failed dump): first of all
    after a failure, as a frozen process answers no CUDA call. Its status afterwards."""
    info = plan.container
    status = safe_status(plan.adapter, info.id, info.root)
    if status == "paused" and plan.status_before == "running":
        try:
            plan.adapter.resume(info.id, info.root)
        except CrgpuError:
            pass
        status = safe_status(plan.adapter, info.id, info.root)
    return status


def after_failed_checkpoint(plan: CheckpointPlan, result: OperationResult) -> None:
    """Keep the logs, drop the partial image (unless --keep-failed), resume a container left paused."""
    result.ok = False
    image = plan.options.image_dir
    if not plan.options.keep_failed and image.is_dir():
        if plan.work_dir == image:
            kept = _move_logs(image, result.container_id)
            if result.log_path and Path(result.log_path).parent == image:
                result.log_path = str(kept / Path(result.log_path).name)
            result.work_path = str(kept)
        _remove_when_unused(image)
        result.removed_image = not image.exists()
    info = plan.container
    status = thaw_left_paused(plan)
    if status == "paused" and plan.status_before == "running":
        result.hint = (result.hint + "; " if result.hint else "") + (
            f"the container is still paused: `{plan.adapter.name} --root {info.root} resume {info.id}`"
        )
    result.container_status = status


# How long a dying CRIU may go on writing into the image dir (its stats-dump comes last).
RELEASE_TIMEOUT_S = 10.0


def _holders(directory: Path) -> bool:
    """Whether any process has a file or its working directory inside `directory` (CRIU, which
    runc started, can outlive runc by a moment after a signal and then write its stats-dump)."""
    prefix = str(directory)
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/cwd")]
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
        if any(link == prefix or link.startswith(prefix + "/") for link in links):
            return True
    return False


def _remove_when_unused(image: Path) -> None:
    """Remove a failed checkpoint's image once nothing writes into it any more: a complete image
    or none, whatever moment a signal stopped the dump."""
    deadline = time.monotonic() + RELEASE_TIMEOUT_S
    while _holders(image) and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(20):
        shutil.rmtree(image, ignore_errors=True)
        if not image.exists():
            return
        time.sleep(0.05)  # a file written between the listing and the rmdir


LOG_SUFFIXES = (".log", ".conf")


def _move_logs(image: Path, container_id: str) -> Path:
    """Move the work files (logs, CRIU configs, stats) out of an image dir about to be removed."""
    target = prepare_work_dir(work_dir_for(container_id, "failed-checkpoint"))
    for entry in image.iterdir():
        if (
            entry.is_file()
            and not entry.is_symlink()
            and (entry.suffix in LOG_SUFFIXES or entry.name.startswith("stats-"))
        ):
            shutil.move(str(entry), target / entry.name)
    return target
