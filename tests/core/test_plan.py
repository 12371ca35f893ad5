"""A plan is complete before anything runs, and running it does not change it."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from crgpu.core.checkpoint import execute_checkpoint
from crgpu.core.plan_checkpoint import checkpoint_dry_run, plan_checkpoint
from crgpu.options.models import CheckpointOptions
from tests.fakes import install_fake_runc


def test_executing_a_plan_leaves_it_as_the_dry_run_showed_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_runc(tmp_path, monkeypatch, on_checkpoint="echo 'criu failed' >&2; exit 1")
    plan = plan_checkpoint(CheckpointOptions(container_id="c1", image_path=tmp_path / "img", link_remap=True))
    before = copy.deepcopy(plan.invocation)
    shown = checkpoint_dry_run(plan).to_json()
    result = execute_checkpoint(plan, lambda _line: None)
    assert not result.ok and result.error  # a failure appends to the result's lists...
    result.notes.append("added by the run")
    result.argv.append("--changed")
    assert plan.invocation == before  # ...never to the plan's
    assert checkpoint_dry_run(plan).to_json() == shown


def test_a_runsc_sandbox_is_running_by_its_state_file_and_a_live_process() -> None:
    """`runsc state` is a 45 ms Go start-up; the state file and a signal 0 answer the same."""
    import subprocess

    from crgpu.core.plan_checkpoint import _status
    from crgpu.runtimes.base import ContainerInfo

    asked: list[str] = []

    class Runsc:
        def status(self, container_id: str, root: Path) -> str:
            asked.append(container_id)
            return "stopped"

    alive = ContainerInfo("g1", "runsc", Path("/r"), Path("/r/s"), pid=os.getpid(), status="running")
    assert _status(Runsc(), alive) == "running" and asked == []  # type: ignore[arg-type]
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = ContainerInfo("g2", "runsc", Path("/r"), Path("/r/s"), pid=gone.pid, status="running")
    assert _status(Runsc(), dead) == "stopped" and asked == ["g2"]  # type: ignore[arg-type]
    # runc: detect says `running` only where runc's own files prove it (tests/cli/test_start_up.py), else None
    runc = ContainerInfo("c1", "runc", Path("/r"), Path("/r/s"), pid=os.getpid(), status=None)
    assert _status(Runsc(), runc) == "stopped" and asked == ["g2", "c1"]  # type: ignore[arg-type]
