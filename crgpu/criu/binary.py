"""Where criu and its plugins are, what the kernel lets it do, and the config files crgpu writes for it."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from crgpu.host.errors import NotFoundError
from crgpu.host.root import host_path


def config_text(entries: list[str], purpose: str) -> str:
    """A CRIU config file: one option per line without the leading `--`."""
    header = f"# written by crgpu for {purpose}; CRIU reads it through CRIU_CONFIG_FILE\n"
    return header + "".join(f"{entry}\n" for entry in entries)


def dirty_tracking(criu: str, capture: Callable[[list[str]], str]) -> tuple[bool, str]:
    """Whether the kernel tracks dirty memory (pre-dumps need it), and CRIU's own words."""
    out = capture([criu, "check", "--feature", "mem_dirty_track"])
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    said = next(
        (line for line in lines if "Dirty" in line or "Error" in line), lines[-1] if lines else "no answer"
    )
    ok = "OFF" not in out and "Error" not in out and "rror" not in said
    return ok, re.sub(r"^(Warn|Error)\s*\([^)]*\):\s*", "", said)


def criu_path() -> str | None:
    """The criu that runc uses: the one on PATH (runc 1.2+ ignore --criu)."""
    return shutil.which("criu")


def require_criu() -> str:
    found = criu_path()
    if not found:
        raise NotFoundError("criu not found on PATH", hint="apt-get install criu")
    return found


CRIU_PLUGIN_DIRS = (
    "/usr/lib/criu",
    "/usr/local/lib/criu",
    "/usr/lib64/criu",
    "/usr/lib/x86_64-linux-gnu/criu",
)


def plugin_dirs() -> list[Path]:
    """CRIU's plugin dirs: $CRIU_LIBS_DIR (as CRIU reads it), then the usual install places."""
    override = [Path(os.environ["CRIU_LIBS_DIR"])] if os.environ.get("CRIU_LIBS_DIR") else []
    return [*override, *(host_path(d) for d in CRIU_PLUGIN_DIRS)]


def cuda_plugin_path() -> Path | None:
    for directory in plugin_dirs():
        if (directory / "cuda_plugin.so").is_file():
            return directory / "cuda_plugin.so"
    return None
