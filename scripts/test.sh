#!/usr/bin/env bash
# The whole test suite, real runtimes included: sets the machine up when needed, then lints and tests.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
if [ ! -x .venv/bin/pytest ] || ! command -v criu >/dev/null || ! command -v runsc >/dev/null; then
  bash scripts/setup.sh
fi
# The installed command (not editable, see setup.sh) made current with this tree.
.venv/bin/python -m pip install -q --no-deps --disable-pip-version-check .
.venv/bin/ruff check crgpu tests
.venv/bin/ruff format --check crgpu tests
.venv/bin/mypy crgpu
.venv/bin/python -m pytest -q "$@"
# With no arguments (the whole suite): the archive and security tests on the oldest Python too,
# and the GPU tests with the 12.x bindings of drivers 570-579 (the main venv has 13.x).
if [ "$#" -eq 0 ]; then
  bash scripts/oldest-python.sh
  bash scripts/cuda12-bindings.sh
fi
