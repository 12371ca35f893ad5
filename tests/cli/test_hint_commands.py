"""Every crgpu command line crgpu's own messages name (hints, notes, docstrings in backticks) parses
as the CLI takes it: a hint followed must not end in "No such option"."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import typer

from crgpu.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
# Words that stand for what the operator fills in, and a value of that kind.
PLACEHOLDERS = {
    "PID": "1",
    "IMAGE": "/x",
    "ARCHIVE": "/x.tar",
    "DIR": "/x",
    "FILE": "/x.tar",
    "NEW-ID": "new",
}
GENERIC = ("...", "|", "NAME", "VERB", "__complete", "{verb}")


def _mentioned() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "crgpu").rglob("*.py"):
        found |= set(re.findall(r"`(crgpu [^`]+)`", path.read_text()))
    return {line for line in found if not any(word in line for word in GENERIC)}


def _parse(words: list[str]) -> None:
    """As click parses a command line, without running it: the group, then each subcommand."""
    command: Any = typer.main.get_command(app)
    try:
        ctx = command.make_context("crgpu", words, resilient_parsing=False)
        while hasattr(command, "resolve_command") and (_pending(ctx)):
            _, command, rest = command.resolve_command(ctx, _pending(ctx))
            ctx = command.make_context(command.name, rest, parent=ctx)
    except typer.Exit as done:  # --help, --version: they answer and exit 0
        assert done.exit_code == 0


def _pending(ctx: Any) -> list[str]:
    """The words a group left for its subcommand (click 8.2 keeps the first apart)."""
    first = getattr(ctx, "protected_args", None) or getattr(ctx, "_protected_args", [])
    return [*first, *ctx.args]


def test_every_crgpu_command_line_in_crgpus_messages_parses() -> None:
    lines = _mentioned()
    assert len(lines) >= 10, lines  # the scan finds them
    for line in sorted(lines):
        text = re.sub(r"\{[^}]+\}", "x", line)  # an f-string's values
        words = [PLACEHOLDERS.get(word, word) for word in shlex.split(text)[1:]]
        if len(words) == 1:
            continue  # a command named (`crgpu gc`), not a command line
        try:
            _parse(words)
        except Exception as exc:  # click's UsageError, or anything else: the hint is wrong
            raise AssertionError(f"`{line}` does not parse: {exc}") from exc


def test_the_check_catches_a_wrong_hint() -> None:
    import pytest

    with pytest.raises(Exception, match="No such option"):
        _parse(["restore", "--no-such-flag"])
