"""A plan is complete before anything runs, and running it does not change it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from crgpu.checkpoint import execute_checkpoint
from crgpu.options import CheckpointOptions
from crgpu.plan import checkpoint_dry_run, plan_checkpoint
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
