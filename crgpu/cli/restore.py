"""`crgpu restore`: parse, build RestoreOptions, call the core, render."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crgpu.cli.common import Planned, run_planned, validated
from crgpu.cli.params import model_values, table_command

if TYPE_CHECKING:
    from crgpu.image.archive_names import ProgressOpener

EXAMPLES = """
Examples:

  crgpu restore --image-path /var/lib/ckpt/web1          # runtime, root, ID, bundle from crgpu.json

  crgpu restore -i /ckpt/train --bundle /srv/train train-7-copy

  crgpu restore --dry-run -i /ckpt/x
"""


def _parse(values: dict[str, Any]) -> Callable[[ProgressOpener], Planned]:
    """Parsing ends with the validated options (the command's code loaded); planning is the rest."""
    from crgpu.core.plan import load_adapters
    from crgpu.core.plan_restore import plan_restore, restore_dry_run
    from crgpu.core.restore import execute_restore
    from crgpu.options.models import RestoreOptions

    load_adapters()
    opts = validated(RestoreOptions, model_values("restore", values))

    def plan(progress: ProgressOpener) -> Planned:
        planned = plan_restore(opts, values["dry_run"], progress)
        return Planned(
            f"{planned.adapter.label} restore {planned.container_id}",
            planned.invocation.notes,
            lambda: restore_dry_run(planned),
            lambda sink: execute_restore(planned, sink),
        )

    return plan


restore = table_command(
    "restore",
    "Restore a container from a checkpoint directory or archive (crgpu's, podman's, the kubelet's).",
    run_planned("restore", _parse),
)
