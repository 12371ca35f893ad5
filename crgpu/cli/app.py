"""The Typer application: global flags and the command table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from crgpu import __version__
from crgpu.cli import checkpoint as checkpoint_cmd
from crgpu.cli import cuda as cuda_cmd
from crgpu.cli import doctor as doctor_cmd
from crgpu.cli import export as export_cmd
from crgpu.cli import inspect as inspect_cmd
from crgpu.cli import restore as restore_cmd
from crgpu.errors import EXIT_CODE_MEANINGS

EXAMPLES = """Examples:

  crgpu doctor --probe

  crgpu checkpoint --image-path /ckpt/web1 web1

  crgpu restore --image-path /ckpt/web1

  crgpu inspect /ckpt/web1
"""
EXIT_CODES_TEXT = "Exit codes:\n\n" + "\n\n".join(
    f"  {int(code):>3}  {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items()
)

app = typer.Typer(
    name="crgpu",
    help="Checkpoint and restore (GPU) containers on runc + CRIU and gVisor runsc.",
    epilog=EXAMPLES + "\n" + EXIT_CODES_TEXT,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"crgpu {__version__}")
        raise typer.Exit(0)


@app.callback()
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
    from crgpu import config

    config.set_config_file(config_file)


app.command("checkpoint", epilog=checkpoint_cmd.EXAMPLES + "\n" + EXIT_CODES_TEXT)(checkpoint_cmd.checkpoint)
app.command("restore", epilog=restore_cmd.EXAMPLES + "\n" + EXIT_CODES_TEXT)(restore_cmd.restore)
app.command("doctor", epilog=doctor_cmd.EXAMPLES + "\n" + EXIT_CODES_TEXT)(doctor_cmd.doctor)
app.add_typer(cuda_cmd.cuda_app, name="cuda")
app.command("inspect", epilog=inspect_cmd.EXAMPLES + "\n" + EXIT_CODES_TEXT)(inspect_cmd.inspect)
app.command("export", epilog=export_cmd.EXAMPLES + "\n" + EXIT_CODES_TEXT)(export_cmd.export)


def main() -> None:
    app()
