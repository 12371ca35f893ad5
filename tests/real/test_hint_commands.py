"""Every runtime or engine command line crgpu's messages name (hints, notes) is one the installed
tool takes: its subcommand exists and has each flag named (checked against the tool's own help)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import testbed

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("runc", "runsc", "podman", "docker")
GLOBAL_VALUED = {"runc": {"--root"}, "runsc": {"--root"}}


def _named() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "crgpu").rglob("*.py"):
        if path.name == "help_text.py":
            continue  # generated from the sources scanned here, wrapped
        text = path.read_text()
        found |= set(re.findall(r"`((?:runc|runsc|podman|docker) [^`]+)`", text))
        # the adapters' own name in an f-string: runc (runsc's state and resume are the same verbs)
        found |= {"runc " + m for m in re.findall(r"`\{[a-z_.]*(?:adapter\.name|runtime)\} ([^`]+)`", text)}
    return {line for line in found if "\n" not in line and "\\" not in line}


def _split(line: str) -> tuple[str, list[str], list[str]]:
    """(tool, subcommand words, flags) of a command line with placeholders in it."""
    tool, *rest = line.split()
    words, flags, skip = [], [], False
    for word in rest:
        if skip:
            skip = False
        elif word.startswith("-"):
            if word in GLOBAL_VALUED.get(tool, ()):
                skip = True  # a global flag and its value, before the verb
            else:
                flags.append(word)
        elif not flags and not re.search(r"[{A-Z]", word) and word.islower():
            words.append(word)
    return tool, words, flags


@pytest.mark.parametrize("line", sorted(_named()))
def test_a_named_command_is_one_the_tool_takes(line: str) -> None:
    tool, words, flags = _split(line)
    binary = testbed.require_binary(shutil.which(tool), tool)
    if not words:
        pytest.skip("names the tool only")
    # runsc's Go subcommands answer `runsc help VERB` (their -help exits non-zero)
    argv = [binary, "help", *words] if tool == "runsc" else [binary, *words, "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    text = done.stdout + done.stderr
    assert words[-1] in text, f"`{line}`: {tool} has no {' '.join(words)}"
    assert done.returncode == 0, f"`{line}`: {tool} {' '.join(words)} --help failed: {text[-300:]}"
    for flag in flags:
        name = flag.split("=")[0]
        if tool in ("runc", "runsc") and len(name) == 2:
            continue  # a short flag: runc's help lists it beside the long one (-f, --force)
        assert re.search(rf"(?<![\w-]){re.escape(name)}\b", text), (
            f"`{line}`: {name} not in {tool} {' '.join(words)} --help"
        )
