"""A fake CUDA driver for the orchestration tests: process states kept in a JSON file (so separate
crgpu calls share them), every call logged, failures injected per verb and PID."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from crgpu.nvidia.cuda_api import CudaError
from crgpu.nvidia.gpu import GpuUse

MOVES = {
    "lock": ("running", "locked"),
    "checkpoint": ("locked", "checkpointed"),
    "restore": ("checkpointed", "locked"),
    "unlock": ("locked", "running"),
}


class FakeDriver:
    def __init__(self) -> None:
        self.path = Path(os.environ["CRGPU_FAKE_CUDA"])

    def _load(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.path.read_text())
        return data

    def _save(self, data: dict[str, Any]) -> None:
        self.path.write_text(json.dumps(data))

    def _step(self, verb: str, pid: int, extra: Any = None) -> None:
        data = self._load()
        data.setdefault("calls", []).append([verb, pid] + ([extra] if extra else []))
        fails = data.get("fail", {}).get(verb, {})
        # per PID: a count of failures, or {"count": N, "error": "CUDA_ERROR_..."}
        spec = fails.get(str(pid), 0)
        count, error = (
            (spec["count"], spec["error"]) if isinstance(spec, dict) else (spec, "CUDA_ERROR_ILLEGAL_STATE")
        )
        if count > 0:
            if isinstance(spec, dict):
                spec["count"] -= 1
            else:
                fails[str(pid)] -= 1
            self._save(data)
            raise CudaError(f"cuCheckpointProcess{verb.title()} failed: {error}")
        before, after = MOVES[verb]
        state = data["procs"].get(str(pid))
        if state != before:
            self._save(data)
            raise CudaError(
                f"cuCheckpointProcess{verb.title()} failed: CUDA_ERROR_ILLEGAL_STATE (pid {pid} is {state})"
            )
        data["procs"][str(pid)] = after
        self._save(data)

    def state(self, pid: int) -> str:
        state = self._load()["procs"].get(str(pid))
        if state is None:
            raise CudaError("cuCheckpointProcessGetState failed: CUDA_ERROR_INVALID_VALUE")
        return str(state)

    def lock(self, pid: int, timeout_ms: int) -> None:
        self._step("lock", pid)

    def checkpoint(self, pid: int) -> None:
        self._step("checkpoint", pid)

    def restore(self, pid: int, device_map: dict[str, str] | None = None) -> None:
        self._step("restore", pid, device_map)

    def unlock(self, pid: int) -> None:
        self._step("unlock", pid)


FAKE_GPU = "GPU-00000000-1111-2222-3333-444444444444"


def fake_gpu_use(pids: list[int]) -> dict[int, GpuUse]:
    """NVML's per-process view, from the same file: 1 GiB on FAKE_GPU unless it says otherwise."""
    data = json.loads(Path(os.environ["CRGPU_FAKE_CUDA"]).read_text())
    return {
        pid: GpuUse(
            tuple(data.get("gpus", {}).get(str(pid), [FAKE_GPU])),
            int(data.get("memory", {}).get(str(pid), 1 << 30)),
        )
        for pid in pids
        if str(pid) in data["procs"]
    }
