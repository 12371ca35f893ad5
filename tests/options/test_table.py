"""The option table and the options models describe the same options: names, defaults, choices."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from crgpu.cli.app import app
from crgpu.options.models import CheckpointOptions, RestoreOptions
from crgpu.options.table import OPTIONS, options_for

MODELS: dict[str, Any] = {"checkpoint": CheckpointOptions, "restore": RestoreOptions}


@pytest.mark.parametrize("verb", ["checkpoint", "restore"])
def test_every_model_field_has_one_table_entry_and_back(verb: str) -> None:
    model = MODELS[verb]
    assert {o.name for o in options_for(verb)} == set(model.model_fields)


@pytest.mark.parametrize("verb", ["checkpoint", "restore"])
def test_defaults_and_choices_are_the_models(verb: str) -> None:
    fields = MODELS[verb].model_fields
    for option in options_for(verb):
        field = fields[option.name]
        if option.kind == "list":
            assert field.default == ()
        elif option.kind in ("flag", "switch"):
            assert field.default is bool(option.default), option.name
        elif not field.is_required():
            assert field.default == option.default, option.name
        if option.choices:
            literal = [arg for arg in get_args(field.annotation) if arg is not type(None)]
            allowed = (
                set(get_args(literal[0]))
                if literal and get_args(literal[0])
                else set(get_args(field.annotation))
            )
            assert set(option.choices) == allowed, option.name


def test_the_parser_takes_every_flag_of_the_table() -> None:
    import typer.main

    group = typer.main.get_command(app)
    for verb in ("checkpoint", "restore"):
        command = group.commands[verb]  # type: ignore[attr-defined]
        declared = {decl for param in command.params for decl in [*param.opts, *param.secondary_opts]}
        for option in options_for(verb):
            for flag in option.flags:
                for part in flag.split("/"):
                    assert part in declared or not part.startswith("-"), (verb, part)


def test_each_flag_is_declared_once() -> None:
    seen: dict[tuple[str, str], str] = {}
    for option in OPTIONS:
        for verb in option.verbs:
            for flag in option.flags:
                for part in flag.split("/"):
                    assert (verb, part) not in seen, (part, seen.get((verb, part)), option.name)
                    seen[(verb, part)] = option.name
