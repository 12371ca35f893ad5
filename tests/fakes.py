"""The one fake runc of the tests: answers help and version from the captured 1.1 texts, logs
every call, and does on each verb whatever the test asks (shell snippets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

HELP = Path(__file__).parent / "fixtures" / "help"
RUNNING = """echo '{"id": "c1", "status": "running"}'"""


def write_fake_runc(
    script: Path,
    *,
    calls: Path | None = None,
    state: str = RUNNING,
    on_checkpoint: str = "exit 0",
    on_restore: str = 'echo "unexpected: $*" >&2; exit 99',
    on_delete: str = 'echo "unexpected: $*" >&2; exit 99',
    on_resume: str = 'echo "unexpected: $*" >&2; exit 99',
) -> Path:
    """A runc 1.1.15 look-alike at `script`; each `on_*` is the shell run for that verb."""
    log = f'echo "$@" >> {calls}\n' if calls else ""
    script.write_text(
        f"""#!/bin/sh
{log}case "$*" in
  --version) cat {HELP}/runc-1.1.15-version.txt ;;
  "checkpoint --help") cat {HELP}/runc-1.1.15-checkpoint.txt ;;
  "restore --help") cat {HELP}/runc-1.1.15-restore.txt ;;
  *" state "*) {state} ;;
  *" checkpoint "*) {on_checkpoint} ;;
  *" restore "*) {on_restore} ;;
  *" delete "*) {on_delete} ;;
  *" resume "*) {on_resume} ;;
  *) echo "unexpected: $*" >&2; exit 99 ;;
esac
"""
    )
    script.chmod(0o755)
    return script


def install_fake_runc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_checkpoint: str = "exit 0", **verbs: str
) -> Path:
    """The fake runc as CRGPU_RUNC, its container c1 (bundle /b) under tmp_path/root as the only
    state root; returns the file its calls are logged to."""
    calls = tmp_path / "calls"
    script = write_fake_runc(tmp_path / "fake-runc", calls=calls, on_checkpoint=on_checkpoint, **verbs)
    monkeypatch.setenv("CRGPU_RUNC", str(script))
    root = tmp_path / "root"
    (root / "c1").mkdir(parents=True, exist_ok=True)
    (root / "c1" / "state.json").write_text(
        json.dumps({"init_process_pid": 5, "config": {"labels": ["bundle=/b"]}})
    )
    monkeypatch.setenv("CRGPU_RUNC_ROOTS", str(root))
    monkeypatch.setenv("CRGPU_RUNSC_ROOTS", str(tmp_path / "none"))
    return calls


def write_fake_nvidia_smi(
    path: Path,
    driver: str,
    gpus: list[tuple[str, str]],
    log: Path | None = None,
    free_mib: int = 80000,
    mig: tuple[str, ...] = (),
    persistence: str = "Enabled",
) -> Path:
    """nvidia-smi as crgpu queries it: `--query-gpu=driver_version`, `--query-gpu=uuid,memory.free`,
    `--query-gpu=uuid,mig.mode.current` (MIG on for `mig`), `--query-gpu=persistence_mode` and
    `--query-gpu=name,uuid,memory.total --format=csv,noheader,nounits`, rows as the real one
    prints them ("NVIDIA H100 80GB HBM3, GPU-..., 81559"); no compute apps. `log` collects its
    arguments."""
    rows = "".join(f'echo "{name}, {uuid}, 81559"; ' for name, uuid in gpus)
    free = "".join(f'echo "{uuid}, {free_mib}"; ' for _, uuid in gpus)
    modes = "".join(f'echo "{uuid}, {"Enabled" if uuid in mig else "Disabled"}"; ' for _, uuid in gpus)
    persistence_rows = "".join(f"echo {persistence}; " for _ in gpus)
    record = f'echo "$@" >> {log}\n' if log else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'#!/bin/sh\n{record}case "$*" in *driver_version*) echo "{driver}";; *memory.free*) {free};; '
        f"*mig.mode.current*) {modes};; *persistence_mode*) {persistence_rows};; "
        f"*query-compute-apps*) ;; *) {rows};; esac\n"
    )
    path.chmod(0o755)
    return path
