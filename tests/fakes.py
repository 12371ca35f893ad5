"""A fake runc for CLI contract tests: answers help/version from the captured 1.1 texts, reports its
container running, and does on `checkpoint` whatever the test asks (CRGPU_FAKE_CHECKPOINT)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

HELP = Path(__file__).parent / "fixtures" / "help"


def install_fake_runc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_checkpoint: str = "exit 0") -> Path:
    calls = tmp_path / "calls"
    script = tmp_path / "fake-runc"
    script.write_text(
        f"""#!/bin/sh
echo "$@" >> {calls}
case "$*" in
  --version) cat {HELP}/runc-1.1.15-version.txt ;;
  "checkpoint --help") cat {HELP}/runc-1.1.15-checkpoint.txt ;;
  "restore --help") cat {HELP}/runc-1.1.15-restore.txt ;;
  *" state "*) echo '{{"id": "c1", "status": "running"}}' ;;
  *" checkpoint "*) {on_checkpoint} ;;
  *) echo "unexpected: $*" >&2; exit 99 ;;
esac
"""
    )
    script.chmod(0o755)
    monkeypatch.setenv("CRGPU_RUNC", str(script))
    root = tmp_path / "root"
    (root / "c1").mkdir(parents=True, exist_ok=True)
    (root / "c1" / "state.json").write_text(
        json.dumps({"init_process_pid": 5, "config": {"labels": ["bundle=/b"]}})
    )
    monkeypatch.setenv("CRGPU_RUNC_ROOTS", str(root))
    monkeypatch.setenv("CRGPU_RUNSC_ROOTS", str(tmp_path / "none"))
    return calls
