"""Entry point. `crgpu __complete ids` (shell completion), `crgpu --version` and `crgpu ... --help`
answer without loading the CLI stack (Typer alone is 60 ms here)."""

from __future__ import annotations

import os
import sys


def _terminal_columns() -> int:
    """The width click formats help for, as shutil.get_terminal_size() gives it (shutil would
    import fnmatch and re): $COLUMNS, else stdout's terminal, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def prerendered_help(args: list[str]) -> str | None:
    """The help `args` ask for, as Typer would print it, when it was rendered in advance for this
    width and program name (scripts/gendocs.py); None sends the call through Typer."""
    if not args or args[-1] not in ("--help", "-h") or any(word.startswith("-") for word in args[:-1]):
        return None
    # click names the program after argv[0], or `python -m crgpu` when run as a module.
    run_as_command = not getattr(sys.modules["__main__"], "__package__", None)
    if not run_as_command or os.path.basename(sys.argv[0]) != "crgpu":
        return None
    from crgpu.cli.help_text import COLUMNS, HELP

    page = HELP.get(" ".join(args[:-1]))
    if page is None or _terminal_columns() < COLUMNS:
        return None
    return page


def main() -> None:
    args = sys.argv[1:]
    if args[:2] == ["__complete", "ids"]:
        from crgpu.runtimes.roots import container_ids

        try:
            ids = container_ids()
        except Exception:  # completion must never print a traceback into a shell prompt
            return
        sys.stdout.write("".join(f"{cid}\n" for cid in ids))
        return
    if args == ["--version"]:
        from crgpu import __version__

        sys.stdout.write(f"crgpu {__version__}\n")
        return
    page = prerendered_help(args)
    if page is not None:
        sys.stdout.write(page)
        return
    from crgpu.cli.app import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
