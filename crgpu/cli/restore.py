"""`crgpu restore`: parse, build RestoreOptions, call the core, render."""

from __future__ import annotations

from typing import Any

from crgpu.cli.common import run_guarded, show_and_run, validated
from crgpu.cli.params import model_values, table_command
from crgpu.cli.render import Renderer

EXAMPLES = """
Examples:

  crgpu restore --image-path /var/lib/ckpt/web1          # runtime, root, ID, bundle from crgpu.json

  crgpu restore -i /ckpt/train --bundle /srv/train train-7-copy

  crgpu restore --dry-run -i /ckpt/x
"""


def _run(values: dict[str, Any]) -> None:
    renderer = Renderer(as_json=values["as_json"], quiet=values["quiet"])

    def body() -> int:
        from crgpu.options import RestoreOptions
        from crgpu.plan import plan_restore, restore_dry_run
        from crgpu.restore import execute_restore

        opts = validated(RestoreOptions, model_values("restore", values))
        plan = plan_restore(opts)
        return show_and_run(
            renderer,
            values["dry_run"],
            plan.invocation.notes,
            f"{plan.adapter.label} restore {plan.container_id}",
            lambda: restore_dry_run(plan),
            lambda sink: execute_restore(plan, sink),
        )

    run_guarded(renderer, values["debug"], body)


restore = table_command("restore", "Restore a container from a checkpoint made by crgpu.", _run)
