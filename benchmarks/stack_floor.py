"""The least a CLI on crgpu's stack costs: Typer parses one option into a one-field pydantic model.

benchmarks/run.py times it beside `python -c pass` and crgpu's start-up: crgpu's own share of its
start-up is the difference. It imports crgpu for the same pydantic plugin loader crgpu uses
(the package alone: its version and that stand-in, in place before the first model is made).
"""

from __future__ import annotations

import typer
from pydantic import BaseModel

import crgpu  # noqa: F401


class Options(BaseModel):
    image_path: str


app = typer.Typer(add_completion=False, rich_markup_mode=None)


@app.command()
def checkpoint(image_path: str = typer.Option(..., "--image-path")) -> None:
    Options.model_validate({"image_path": image_path})


if __name__ == "__main__":
    app(["--image-path", "/ckpt/x"])
