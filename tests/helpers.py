from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from crgpu.cli.app import app

# Tests of what crgpu says where there is no GPU: on a node with the NVIDIA driver (a lent device
# machine) the real bindings find one, so they do not apply there.
NVIDIA_DRIVER_HERE = Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()
without_a_gpu = pytest.mark.skipif(NVIDIA_DRIVER_HERE, reason="this machine has the NVIDIA driver")


def crgpu(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def crgpu_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = crgpu(*args, "--json")
    return result.exit_code, json.loads(result.stdout)


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from crgpu.host.locks import container_lock
with container_lock("runc", Path(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(60)
"""


@contextmanager
def lock_held_elsewhere(root: Path, container_id: str) -> Iterator[None]:
    """Another process holds the container's lock (as a crgpu under way would) meanwhile."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(root), container_id], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()
