"""`crgpu doctor --probe`: a real round trip per runtime, on a throwaway busybox container.

Everything lives in one temporary directory (bundle, private state root, image, work dirs)
and is removed afterwards, container included, whatever happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crgpu.doctor.bundle import busybox_bundle, static_busybox
from crgpu.host.errors import CrgpuError
from crgpu.options.models import CheckpointOptions, RestoreOptions, RuntimeName

# Written aside and renamed, so a reader never meets a half-written (empty) counter.
COUNTER = (
    "exec </dev/null >/tmp/log 2>&1; i=0; "
    "while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.02; done"
)
READ_TRIES = 5
RUNTIME_TIMEOUT_S = 120.0  # doctor --probe must never hang on a stuck runtime
RUNSC_GLOBALS = ("--network=none", "--ignore-cgroups")
START_TIMEOUT_S = 60
COUNTER_WAIT_S = 20.0
SAVED_AT_LEAST = 40  # with a 20 ms loop a restarted workload needs 0.8 s to get back here
SETTLE_S = 0.3


@dataclass
class ProbeResult:
    runtime: str
    ok: bool
    checkpoint_s: float | None = None
    restore_s: float | None = None
    frozen_time_us: int | None = None
    counter_saved: int | None = None
    counter_restored: int | None = None
    error: str | None = None
    hint: str | None = None
    stats: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if not self.ok:
            return f"round trip failed: {self.error}"
        frozen = f" (frozen {self.frozen_time_us / 1000:.1f} ms)" if self.frozen_time_us else ""
        return (
            f"checkpoint {self.checkpoint_s:.2f} s{frozen}, restore {self.restore_s:.2f} s; "
            f"counter {self.counter_saved} -> {self.counter_restored}: continued"
        )


class _Sandbox:
    """The throwaway container of one runtime."""

    def __init__(self, runtime: RuntimeName, binary: Path, base: Path) -> None:
        self.runtime = runtime
        self.binary = binary
        self.base = base
        self.bundle = base / "bundle"
        self.root = base / "root"
        self.id = f"crgpu-probe-{os.getpid()}-{runtime}"

    def _cmd(self, *args: str) -> list[str]:
        root = ["--root", str(self.root)] if self.runtime == "runc" else [f"--root={self.root}"]
        return [str(self.binary), *root, *args]

    def _run(self, argv: list[str], timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
        )

    def build(self, busybox: Path) -> None:
        busybox_bundle(self.bundle, busybox, str(self.binary), ["sh", "-c", COUNTER])

    def start(self) -> None:
        globals_ = list(RUNSC_GLOBALS) if self.runtime == "runsc" else []
        detach = "--detach" if self.runtime == "runsc" else "-d"
        done = self._run(self._cmd(*globals_, "run", detach, "--bundle", str(self.bundle), self.id))
        if done.returncode != 0:
            raise CrgpuError(f"{self.runtime} run failed: {(done.stderr or done.stdout).strip()}")

    def counter(self) -> int | None:
        if self.runtime == "runc":
            try:
                text = (self.bundle / "rootfs" / "tmp" / "count").read_text().strip()
            except OSError:
                return None
        else:
            text = self._run(self._cmd("exec", self.id, "cat", "/tmp/count"), timeout=15).stdout.strip()
        return int(text) if text.isdigit() else None

    def wait_counter(self, at_least: int) -> int:
        deadline = time.monotonic() + COUNTER_WAIT_S
        while time.monotonic() < deadline:
            value = self.counter()
            if value is not None and value >= at_least:
                return value
            time.sleep(0.05)
        raise CrgpuError(
            f"the probe container's counter did not reach {at_least} within {COUNTER_WAIT_S:.0f} s"
        )

    def remove(self) -> None:
        try:
            self._run(self._cmd("delete", "--force", self.id), timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass


def probe_runtime(runtime: RuntimeName, binary: Path) -> ProbeResult:
    """Start, checkpoint, restore and verify one throwaway container; always clean up."""
    from crgpu.core.checkpoint import execute_checkpoint
    from crgpu.core.plan_checkpoint import plan_checkpoint
    from crgpu.core.plan_restore import plan_restore
    from crgpu.core.restore import execute_restore

    result = ProbeResult(runtime=runtime, ok=False)
    busybox = static_busybox()
    if busybox is None:
        result.error = "no static busybox for the probe container"
        result.hint = "apt-get install busybox-static"
        return result
    base = Path(tempfile.mkdtemp(prefix="crgpu-probe-"))
    sandbox = _Sandbox(runtime, binary, base)
    try:
        sandbox.build(busybox)
        sandbox.start()
        sandbox.wait_counter(SAVED_AT_LEAST)
        image = base / "image"
        plan = plan_checkpoint(
            CheckpointOptions(container_id=sandbox.id, image_path=image, runtime=runtime, root=sandbox.root)
        )
        saved_before = sandbox.counter() or 0
        done = execute_checkpoint(plan, lambda _line: None, timeout_s=RUNTIME_TIMEOUT_S)
        if not done.ok:
            result.error, result.hint = done.error, done.hint
            return result
        result.checkpoint_s = done.duration_s
        frozen = done.stats.get("frozen_time")
        result.frozen_time_us = int(frozen) if frozen is not None else None
        result.stats = done.stats
        result.counter_saved = saved_before
        restored = execute_restore(
            plan_restore(RestoreOptions(image_path=image, work_path=base / "restore-work")),
            lambda _line: None,
            timeout_s=RUNTIME_TIMEOUT_S,
        )
        if not restored.ok:
            result.error, result.hint = restored.error, restored.hint
            return result
        result.restore_s = restored.duration_s
        time.sleep(SETTLE_S)
        after = None
        for _ in range(READ_TRIES):  # `runsc exec` can fail while the sandbox settles
            after = sandbox.counter()
            if after is not None:
                break
            time.sleep(0.05)
        result.counter_restored = after
        # A workload started afresh would be far below SAVED_AT_LEAST after SETTLE_S.
        if after is None or after < saved_before:
            result.error = (
                f"the restored counter reads {after}, below the saved {saved_before}: it did not continue"
            )
            return result
        result.ok = True
    except CrgpuError as exc:
        result.error, result.hint = exc.message, exc.hint
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        sandbox.remove()
        shutil.rmtree(base, ignore_errors=True)
    return result
