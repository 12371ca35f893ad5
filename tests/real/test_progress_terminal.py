"""A checkpoint on a terminal: the live progress line is drawn (bytes, time, rate) and the call
still ends as it does in a pipe (the renderable is redrawn by Rich's own thread)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests import testbed

ROOT = Path(__file__).resolve().parents[2]


def test_a_checkpoint_on_a_terminal_shows_bytes_and_rate_and_succeeds(
    runc_container: Callable[..., testbed.RuncContainer], short_tmp: Path
) -> None:
    container = runc_container(testbed.COUNTER)
    testbed.wait_counter_above(container.bundle, 3)
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120", "PYTHONPATH": str(ROOT)}
    env.pop("NO_COLOR", None)
    child = subprocess.Popen(
        [sys.executable, "-m", "crgpu", "checkpoint", "--root", str(container.root), "-i", str(short_tmp / "img"), container.id],
        stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    out, _ = child.communicate(timeout=120)
    os.close(master)
    shown = b"".join(chunks).decode(errors="replace")
    assert child.returncode == 0, shown[-2000:]
    assert out.decode().strip() == container.id
    assert " s" in shown and ("MiB" in shown or "KiB" in shown), shown[-2000:]
    assert "Checkpointed" in shown and "/s)" in shown  # the summary's size and rate
