from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner, Result

from crgpu.cli.app import app


def crgpu(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def crgpu_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = crgpu(*args, "--json")
    return result.exit_code, json.loads(result.stdout)
