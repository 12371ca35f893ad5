"""The Typer application: global flags and the command table.

A call builds only the command it names (`crgpu checkpoint ...` never imports restore's or doctor's
module, nor has Typer turn their signatures into click parameters); `app`, every command, is built
for the top-level help, an unknown command, the docs and the tests.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from crgpu import __version__
from crgpu.cli.common import summary, unwrapped
from crgpu.host.errors import EXIT_CODE_MEANINGS

EXAMPLES = """Examples:

  crgpu doctor --probe

  crgpu checkpoint --image-path /ckpt/web1 web1

  crgpu restore --image-path /ckpt/web1

  crgpu inspect /ckpt/web1
"""
EXIT_CODES_TEXT = "Exit codes:\n\n" + "\n\n".join(
    f"  {int(code):>3}  {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items()
)


def _version(value: bool) -> None:
    if value:
        print(f"crgpu {__version__}")
        raise typer.Exit(0)


def main_callback(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    config_file: Annotated[
        Optional[Path],
        typer.Option(
            "--config",
            metavar="PATH",
            help="Node config file (default: $CRGPU_CONFIG, /etc/crgpu/config.toml).",
        ),
    ] = None,
) -> None:
    """Checkpoint and restore (GPU) containers on runc + CRIU and gVisor runsc."""
    from crgpu.host import config

    config.set_config_file(config_file)


def _command(name: str) -> Callable[[typer.Typer], None]:
    """Adds `crgpu NAME`, whose function and EXAMPLES live in crgpu.cli.NAME under the same name."""

    def add(app: typer.Typer) -> None:
        module = importlib.import_module(f"crgpu.cli.{name}")
        function = getattr(module, name)
        app.command(
            name,
            epilog=unwrapped(module.EXAMPLES) + "\n\n" + EXIT_CODES_TEXT,
            # the whole summary in `crgpu --help` (click would cut it with "...")
            short_help=summary(function.__doc__ or ""),
        )(function)

    return add


def _add_cuda(app: typer.Typer) -> None:
    from crgpu.cli.cuda import cuda_app

    app.add_typer(cuda_app, name="cuda", short_help=summary(str(cuda_app.info.help or "")))


# In the order the top-level help lists them.
COMMANDS: dict[str, Callable[[typer.Typer], None]] = {
    "checkpoint": _command("checkpoint"),
    "restore": _command("restore"),
    "doctor": _command("doctor"),
    "cuda": _add_cuda,
    "inspect": _command("inspect"),
    "export": _command("export"),
    "gc": _command("gc"),
}
# Global options that take a value: the command name is the first word that is neither.
_VALUED_GLOBALS = ("--config",)


class JsonAwareGroup(TyperGroup):
    """With --json, even a command line click rejects (a typo, a missing argument) ends in one JSON
    document on stdout, as every other outcome does; click's own message still goes to stderr."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if "--json" not in argv or not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except typer.TyperException as exc:  # click's exceptions, usage errors (exit 2) among them
            if exc.exit_code == 2:
                _usage_document(exc, argv)
            show = getattr(exc, "show", None)
            if show is not None:
                show()
            else:
                print(f"Error: {exc.format_message()}", file=sys.stderr)
            sys.exit(exc.exit_code)
        except typer.Abort:
            print("Aborted!", file=sys.stderr)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _usage_document(exc: typer.TyperException, argv: list[str]) -> None:
    from crgpu.core.result import error_document
    from crgpu.host.errors import ExitCode
    from crgpu.host.textsafe import strict_json

    verb = command_named(argv)
    if verb == "cuda":
        words = [word for word in argv if not word.startswith("-")]
        verb = " ".join(words[words.index("cuda") : words.index("cuda") + 2])
    doc = error_document(
        exc.format_message(),
        f"see `crgpu {verb} --help`" if verb else "see `crgpu --help`",
        int(ExitCode.USAGE),
        [],
        {"verb": verb},
    )
    print(strict_json(doc))


def build_app(only: str | None = None) -> typer.Typer:
    """The application with every command, or with the one named `only`."""
    app = typer.Typer(
        name="crgpu",
        help="Checkpoint and restore (GPU) containers on runc + CRIU and gVisor runsc.",
        epilog=unwrapped(EXAMPLES) + "\n\n" + EXIT_CODES_TEXT,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        cls=JsonAwareGroup,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(main_callback)
    for name, add in COMMANDS.items():
        if only in (None, name):
            add(app)
    return app


def command_named(args: list[str]) -> str | None:
    """The command these arguments name, if it is one of COMMANDS; None for anything else."""
    words = iter(args)
    for word in words:
        if word == "--":
            return None
        if word in _VALUED_GLOBALS:
            next(words, None)
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def __getattr__(name: str) -> typer.Typer:
    if name == "app":
        app = globals()["app"] = build_app()
        return app
    raise AttributeError(name)


def main() -> None:
    build_app(command_named(sys.argv[1:]))()
