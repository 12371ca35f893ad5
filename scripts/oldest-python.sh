#!/usr/bin/env bash
# The archive and security tests again on the oldest Python that pyproject's requires-python
# admits: its tarfile and json differ (3.11's stream reader spun on an archive 3.13 refused).
# Uses any interpreter of that version on the machine (Debian 12's python3.11, a pyenv build);
# none found is a failure under CI and a notice elsewhere.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
oldest=$(sed -n 's/^requires-python = ">=\(3\.[0-9]*\)"$/\1/p' pyproject.toml)
[ -n "$oldest" ] || { echo "oldest-python: cannot read requires-python from pyproject.toml" >&2; exit 1; }
python=
for candidate in "/usr/bin/python$oldest" /root/.pyenv/versions/"$oldest".*/bin/python"$oldest" \
  "$(command -v "python$oldest" || true)"; do
  if [ -x "$candidate" ] && "$candidate" -c 'import sys, venv' 2>/dev/null &&
    [ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$oldest" ]; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "oldest-python: no Python $oldest on this machine (requires-python admits it)" >&2
    exit 1
  fi
  echo "oldest-python: no Python $oldest here: the archive and security tests ran on $(.venv/bin/python -V) only"
  exit 0
fi
venv=.venv-oldest
if [ ! -x "$venv/bin/python" ]; then
  # Without pip: Debian's python3.11-minimal has no ensurepip; the main venv's pip installs into it.
  "$python" -m venv --without-pip "$venv"
fi
.venv/bin/python -m pip --python "$venv/bin/python" install -q --disable-pip-version-check '.[test]'
echo "oldest-python: $("$venv/bin/python" -V) from $python"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/image/test_archive_read.py \
  tests/image/test_archive_attacks.py tests/cli/test_security.py tests/criu/test_cgroups.py \
  tests/criu/test_mountpoints.py tests/criu/test_seccomp_bpf.py tests/runtimes/test_runc_leftovers.py \
  tests/real/test_archive_attacks.py tests/real/test_security.py
