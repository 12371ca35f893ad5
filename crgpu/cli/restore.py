"""`crgpu restore`: parse, build RestoreOptions, call the core, render."""

from __future__ import annotations

from typing import Any

from crgpu.cli.common import Planned, run_planned, validated
from crgpu.cli.params import model_values, table_command

EXAMPLES = """
Examples:

  crgpu restore --image-path /var/lib/ckpt/web1          # runtime, root, ID, bundle from crgpu.json

  crgpu restore -i /ckpt/train --bundle /srv/train train-7-copy

  crgpu restore --dry-run -i /ckpt/x
"""


def _plan(values: dict[str, Any]) -> Planned:
    from crgpu.options import RestoreOptions
    from crgpu.plan import plan_restore, restore_dry_run
    from crgpu.restore import execute_restore

    plan = plan_restore(validated(RestoreOptions, model_values("restore", values)), values["dry_run"])
    return Planned(
        f"{plan.adapter.label} restore {plan.container_id}",
        plan.invocation.notes,
        lambda: restore_dry_run(plan),
        lambda sink: execute_restore(plan, sink),
    )


restore = table_command("restore", "Restore a container from a checkpoint made by crgpu.", run_planned(_plan))
