"""Formatting follows the stream it is written to: doctor's table and inspect's tree go to stdout,
so stdout decides (before: stderr did, and box tables went into files and pipes)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _doctor(stdout_tty: bool, stderr_tty: bool, columns: int) -> str:
    """`crgpu doctor`'s stdout, with each stream a terminal or a pipe as asked."""
    out_master, out_slave = pty.openpty() if stdout_tty else os.pipe()
    err_master, err_slave = pty.openpty() if stderr_tty else os.pipe()
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm", "PYTHONPATH": str(ROOT)}
    env.pop("NO_COLOR", None)
    child = subprocess.Popen(
        [sys.executable, "-m", "crgpu", "doctor"],
        stdout=out_slave,
        stderr=err_slave,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    os.close(out_slave)
    os.close(err_slave)
    chunks = []
    while True:
        try:
            chunk = os.read(out_master, 65536)
        except OSError:  # a pty's master reads EIO once the child is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    child.wait(timeout=120)
    os.close(out_master)
    os.close(err_master)
    return b"".join(chunks).decode(errors="replace")


def test_a_pipe_gets_the_list_even_when_stderr_is_a_terminal() -> None:
    text = _doctor(stdout_tty=False, stderr_tty=True, columns=120)
    assert "┃" not in text and "│" not in text and "runc and CRIU:" in text


def test_a_wide_terminal_gets_the_table_with_each_group_once() -> None:
    text = _doctor(stdout_tty=True, stderr_tty=False, columns=140)
    assert "│" in text or "┃" in text
    assert text.count("runc and CRIU") == 1


def test_a_narrow_terminal_gets_the_list() -> None:
    """At 60 columns the table was unreadable: a 14-character detail column, 109 lines."""
    text = _doctor(stdout_tty=True, stderr_tty=False, columns=60)
    assert "│" not in text and "runc and CRIU:" in text


def _help(*args: str, columns: int) -> str:
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "crgpu", *args, "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_crgpu_help_shows_each_summary_whole() -> None:
    """Before, click cut them: "Restore a container from a checkpoint directory or archive..."."""
    text = _help(columns=80)
    assert "..." not in text.split("Commands:")[1].split("Examples:")[0]
    assert "GPUs, sizes, stats\n" in text


def test_help_examples_are_never_broken_inside_a_command() -> None:
    """Before, at 60 columns: `/usr/bin/cuda-` / `checkpoint`."""
    from crgpu.cli import checkpoint

    text = _help("checkpoint", columns=60)
    for example in (line.strip() for line in checkpoint.EXAMPLES.splitlines()):
        if example.startswith("crgpu"):
            assert example in text, example
