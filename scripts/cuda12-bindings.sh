#!/usr/bin/env bash
# The GPU tests again with NVIDIA's cuda-bindings 12.x, the line crgpu documents for drivers 570-579
# (`crgpu[cuda12]`): no GPU pairs, process states 0-3, no cuda.core. The main venv has 13.x
# (`crgpu[cuda13]`); the real bindings' classes differ between the two, so both are tested.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
venv=.venv-cuda12
if [ ! -x "$venv/bin/python" ]; then
  .venv/bin/python -m venv --without-pip "$venv"
fi
.venv/bin/python -m pip --python "$venv/bin/python" install -q --disable-pip-version-check '.[test,cuda12]'
bindings=$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("cuda-bindings"))')
case "$bindings" in
  12.*) echo "cuda12-bindings: cuda-bindings $bindings" ;;
  *) echo "cuda12-bindings: crgpu[cuda12] installed cuda-bindings $bindings, not 12.x" >&2; exit 1 ;;
esac
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/nvidia tests/doctor/test_checks.py
