"""Text that came from outside (images, runtimes, paths) made safe to show, and strict JSON.

A checkpoint image or a runtime's output may carry terminal escape sequences (clear screen,
window titles, OSC 52 clipboard writes, OSC 8 links); crgpu shows them as visible escapes.
Standard library only: the core uses it without Rich.
"""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Any

# Unicode categories a terminal acts on instead of printing: controls (C0, DEL, C1) and format
# characters (bidirectional overrides that reorder what the reader sees, zero-width characters).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def _escape_char(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object) -> str:
    """`text` as one line a terminal prints literally: every control, format or unassigned
    character (newline and tab included) becomes a visible escape such as `\\x1b`."""
    value = str(text)
    if value.isascii() and value.isprintable():
        return value
    return "".join(
        _escape_char(char) if unicodedata.category(char) in _UNSAFE_CATEGORIES else char for char in value
    )


def finite(value: Any) -> Any:
    """A JSON-ready copy of `value` in which NaN and infinities are null (strict JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def strict_json(document: Any, *, indent: int | None = 2) -> str:
    """One JSON document that every strict parser reads: no NaN/Infinity, ASCII only."""
    return json.dumps(finite(document), indent=indent, allow_nan=False, ensure_ascii=True)


def unencodable(value: Any, depth: int = 0) -> str | None:
    """The first string (key or value) in a parsed JSON document that is not valid Unicode (a
    lone surrogate, which JSON's escapes allow), shown escaped; None when there is none."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return printable(value[:80])
        return None
    if depth > 200:
        return None  # deeper than json.loads builds
    if isinstance(value, dict):
        for key, item in value.items():
            found = unencodable(key, depth + 1) or unencodable(item, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            found = unencodable(item, depth + 1)
            if found is not None:
                return found
    return None
