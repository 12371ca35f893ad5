"""Typer commands made from the option table: one parameter per table entry, then the flags every
command shares. The command body receives the values by field name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from crgpu.cli.common import DebugOpt, DryRunOpt, JsonOpt, QuietOpt
from crgpu.options.table import Option, options_for

COMMON: tuple[tuple[str, Any, bool], ...] = (
    ("as_json", JsonOpt, False),
    ("dry_run", DryRunOpt, False),
    ("debug", DebugOpt, False),
    ("quiet", QuietOpt, False),
)
# Paths reach the options model as text: it checks them (NUL, lengths, absolute). Typer's own Path
# type would stat each one while parsing (and raise on a NUL byte).
_TYPES: dict[str, Any] = {
    "dir": str,
    "file": str,
    "id": str,
    "int": int,
    "float": float,
    "choice": str,
    "text": str,
    "list": list[str],
}


# What help shows for a value, by the option table's kind (Typer's default for a str is `<str>`).
_METAVARS = {"dir": "DIR", "file": "FILE", "text": "TEXT", "int": "N", "list": "FLAG"}


def _metavar(option: Option, verb: str) -> str | None:
    if option.metavar:
        return option.metavar
    if option.name == "image_path" and verb == "restore":
        return "PATH"  # a directory or an archive
    if option.kind == "choice":
        return "|".join(option.choices)
    return _METAVARS.get(option.kind)


def _parameter(option: Option, verb: str) -> inspect.Parameter:
    help_text = option.help_for(verb)
    default: Any = option.default
    if option.kind == "id":
        required = verb in option.required
        info: Any = typer.Argument(help=help_text, show_default=False, metavar="CONTAINER_ID")
        annotation: Any = Annotated[str, info] if required else Annotated[Optional[str], info]
        default = inspect.Parameter.empty if required else None
    elif option.kind in ("flag", "switch"):
        annotation = Annotated[bool, typer.Option(*option.flags, help=help_text)]
        default = bool(default)
    else:
        kind = _TYPES[option.kind]
        info = typer.Option(*option.flags, help=help_text, metavar=_metavar(option, verb))
        annotation = Annotated[kind, info] if default is not None else Annotated[Optional[kind], info]
    return inspect.Parameter(
        option.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def table_command(verb: str, doc: str, body: Callable[[dict[str, Any]], None]) -> Callable[..., None]:
    """A function Typer reads as `crgpu VERB`: the table's options for the verb, then --json,
    --dry-run, --debug and -q."""
    params = [_parameter(option, verb) for option in options_for(verb)]
    params += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, annotation, default in COMMON
    ]

    def command(**values: Any) -> None:
        body(values)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {param.name: param.annotation for param in params}
    command.__doc__ = doc
    command.__name__ = verb
    return command


def model_values(verb: str, values: dict[str, Any]) -> dict[str, Any]:
    """The options model's input: the table's fields as given (lists as tuples)."""
    out: dict[str, Any] = {}
    for option in options_for(verb):
        value = values.get(option.name)
        out[option.name] = tuple(value or ()) if option.kind == "list" else value
    return out
