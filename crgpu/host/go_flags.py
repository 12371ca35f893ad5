"""Reading a Go program's command line as its flag package does: the daemons crgpu asks about
(dockerd, containerd's shims) say where their data and sockets are only there."""

from __future__ import annotations


def go_flag(argv: list[str], name: str) -> str | None:
    """A flag's value as Go's flag package takes it (`--name=VALUE` or `--name VALUE`): an
    absolute path only."""
    for index, arg in enumerate(argv):
        value = None
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        elif arg == name and index + 1 < len(argv):
            value = argv[index + 1]
        if value is not None:
            return value if value.startswith("/") else None
    return None
