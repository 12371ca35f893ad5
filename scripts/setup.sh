#!/usr/bin/env bash
# Sets up a fresh Debian 12/13 machine as root: the real runtimes (scripts/setup-testbed.sh),
# a virtual environment in .venv with crgpu and its dev tools, and `crgpu` on PATH.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

bash scripts/setup-testbed.sh

# Debian's own Python, not whichever python3 comes first on PATH: a locally built one (pyenv's, on
# some images) can start crgpu 10-25% slower than Debian's optimised build.
python=/usr/bin/python3
if ! "$python" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv python3-pip
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
# Not editable: the installed command's modules are compiled, with no import finder on its path
# (14-17 ms of every call). scripts/test.sh reinstalls crgpu itself before each run.
.venv/bin/python -m pip install -q --disable-pip-version-check '.[dev]'
ln -sf "$here/.venv/bin/crgpu" /usr/local/bin/crgpu
crgpu --version
