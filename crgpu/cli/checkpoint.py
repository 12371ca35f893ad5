"""`crgpu checkpoint`: parse, build CheckpointOptions, call the core, render."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crgpu.cli.common import Planned, run_planned, validated
from crgpu.cli.params import model_values, table_command

if TYPE_CHECKING:
    from crgpu.image.archive_names import ProgressOpener

EXAMPLES = """
Examples:

  crgpu checkpoint --image-path /var/lib/ckpt/web1 web1

  crgpu checkpoint --leave-running --tcp-established -i /ckpt/train train-7

  crgpu checkpoint --dry-run --link-remap -i /ckpt/x x      # show argv, env and CRIU config

  crgpu checkpoint --root /run/gvisor --image-path /ckpt/g g1   # a runsc sandbox: its flags carried over

  crgpu checkpoint --cuda-checkpoint-path /usr/bin/cuda-checkpoint -i /ckpt/gpu gpu-job   # runsc + nvproxy
"""


def _parse(values: dict[str, Any]) -> Callable[[ProgressOpener], Planned]:
    """Parsing ends with the validated options (the command's code loaded); planning is the rest."""
    from crgpu.core.checkpoint import execute_checkpoint
    from crgpu.core.plan import load_adapters
    from crgpu.core.plan_checkpoint import checkpoint_dry_run, plan_checkpoint
    from crgpu.options.models import CheckpointOptions

    load_adapters()
    opts = validated(CheckpointOptions, model_values("checkpoint", values))

    def plan(_progress: ProgressOpener) -> Planned:
        planned = plan_checkpoint(opts)
        return Planned(
            f"{planned.adapter.label} checkpoint {planned.container.id}",
            planned.invocation.notes,
            lambda: checkpoint_dry_run(planned),
            lambda sink: execute_checkpoint(planned, sink),
            written_of_expected(planned.options.image_dir, planned.container.pid, planned.cuda_processes),
        )

    return plan


def written_of_expected(
    image: Path, pid: int | None, cuda: tuple[Any, ...]
) -> Callable[[], tuple[int, int | None]]:
    """The image's bytes so far, against what the dump should write: the container's memory (its
    cgroup's counter) and the GPU memory the driver copies into it, read once."""
    from crgpu.host.cgroup_memory import container_memory_bytes
    from crgpu.image.manifest import image_sizes
    from crgpu.nvidia.gpu import process_gpu_use

    expected: list[int] = []  # read at the first measure: a dry run never pays for it

    def measure() -> tuple[int, int | None]:
        if not expected:
            total = container_memory_bytes(pid) if pid else 0
            if cuda:
                total += sum(use.bytes for use in process_gpu_use([p.host_pid for p in cuda]).values())
            expected.append(total)
        try:
            written = image_sizes(image).total_bytes
        except OSError:  # not made yet, or a file CRIU renamed meanwhile
            written = 0
        return written, expected[0] or None

    return measure


checkpoint = table_command(
    "checkpoint",
    "Checkpoint a running container into a new image directory.",
    run_planned("checkpoint", _parse),
)
