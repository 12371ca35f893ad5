"""The GPU proof of crgpu's driver-API path, for a machine with an NVIDIA GPU (driver 570+).

    PYTHONPATH=. python3 scripts/gpu-proof.py [--mib 1024] [--children 2]

CHILDREN processes (default 2) each allocate MIB MiB on a GPU of their own where there are enough
(GPU i for child i, else GPU 0) through cuda-bindings and fill it with a pattern. This process then
takes them through crgpu's own driver layer (crgpu.nvidia.cuda.load_driver: the calls made by a
killable helper process under deadlines, through cuda.core.checkpoint where it works) twice, in
NVIDIA's order: lock all, checkpoint all (GPU memory moves into each child's own memory), restore
all, unlock all; the second time each restore carries an identity device map over every GPU the
kernel driver exposes, the call a migration makes. After each round every child reads its GPU
memory back and checks every byte. The children run in a memory cgroup of their own (cgroup v2,
as root), watched during the checkpoint: its peak is reported beside the GPU bytes (the driver's
copy is charged there: what a container's limit must hold). Prints the machine (kernel, driver),
each phase's time, GB/s per child and per GPU, the cgroup's figures and the verdicts as one JSON
line; exits 0 only when everything held.

It never leaves a child locked or checkpointed: on any failure it restores and unlocks from the
driver's own view of each child's state, and every read from a child has a deadline.
Needs the standard library, cuda-bindings and (for the GPU list) nvidia-ml-py or nvidia-smi;
cuda-core when it is there (no pydantic, Typer or Rich).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

PATTERN = 0xA5A5A5A5
READ_TIMEOUT_S = 120.0


def check(result: object) -> object:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA call failed: {err}")
    return rest[0] if rest else None


def child(mib: int, index: int) -> None:
    from cuda.bindings import driver as cu

    size = mib << 20
    check(cu.cuInit(0))
    count = int(check(cu.cuDeviceGetCount()))  # type: ignore[call-overload]
    device = check(cu.cuDeviceGet(index if index < count else 0))
    uuid = bytes(check(cu.cuDeviceGetUuid(device)).bytes).hex()  # type: ignore[attr-defined]
    context = check(cu.cuDevicePrimaryCtxRetain(device))
    check(cu.cuCtxSetCurrent(context))
    pointer = check(cu.cuMemAlloc(size))
    check(cu.cuMemsetD32(pointer, PATTERN, size // 4))
    check(cu.cuCtxSynchronize())
    print(f"ready GPU-{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}", flush=True)
    host = ctypes.create_string_buffer(size)
    while sys.stdin.readline().strip() == "verify":  # the parent says: verify now
        check(cu.cuMemcpyDtoH(ctypes.addressof(host), pointer, size))
        print("ok" if host.raw.count(b"\xa5") == size else "bad", flush=True)


class Cgroup:
    """A cgroup v2 memory cgroup of the proof's own for the children, its usage sampled while
    watched; None-valued figures where the host gives none (not root, no cgroup v2)."""

    def __init__(self) -> None:
        self.path: Path | None = Path(f"/sys/fs/cgroup/crgpu-gpu-proof-{os.getpid()}")
        try:
            self.path.mkdir()
        except OSError:
            self.path = None
        self.peak = 0
        self.pids: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, pid: int) -> None:
        self.pids.append(pid)
        if self.path is not None:
            try:
                (self.path / "cgroup.procs").write_text(str(pid))
            except OSError:
                self.path = None

    @property
    def source(self) -> str:
        return "memory.current" if self._cgroup_current() is not None else "VmRSS of the children"

    def _cgroup_current(self) -> int | None:
        try:
            return int((self.path / "memory.current").read_text()) if self.path else None
        except (OSError, ValueError):
            return None  # no memory controller there: the children's resident memory instead

    def current(self) -> int | None:
        found = self._cgroup_current()
        if found is not None:
            return found
        rss = [vm_field(pid, "VmRSS:") for pid in self.pids]
        return sum(r for r in rss if r is not None) if any(r is not None for r in rss) else None

    def watch(self) -> None:
        self._stop.clear()

        def sample() -> None:
            while not self._stop.is_set():
                self.peak = max(self.peak, self.current() or 0)
                self._stop.wait(0.01)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def unwatch(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def remove(self) -> None:
        if self.path is not None:
            try:
                self.path.rmdir()
            except OSError:
                pass


def vm_field(pid: int, key: str) -> int | None:
    """A memory figure of /proc/PID/status (VmHWM: peak resident, VmRSS: resident), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def read_line(proc: subprocess.Popen[str], timeout: float = READ_TIMEOUT_S) -> str:
    """One line from the child, or '' when it says nothing in time (it may be locked)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def machine() -> dict[str, object]:
    try:
        driver = Path("/sys/module/nvidia/version").read_text().strip()
    except OSError:
        driver = None
    return {"kernel": platform.release(), "machine": platform.machine(), "driver": driver}


def give_back(driver: object, pid: int) -> str:
    """Restore and unlock from the driver's view; what the child's state is afterwards."""
    for _ in range(3):
        try:
            state = driver.state(pid)  # type: ignore[attr-defined]
        except Exception as exc:
            return f"unknown ({exc})"
        try:
            if state == "checkpointed":
                driver.restore(pid)  # type: ignore[attr-defined]
            elif state == "locked":
                driver.unlock(pid)  # type: ignore[attr-defined]
            else:
                return str(state)
        except Exception:
            continue
    return str(driver.state(pid))  # type: ignore[attr-defined]


def start_children(mib: int, count: int) -> tuple[list[subprocess.Popen[str]], list[str], str | None]:
    procs, uuids = [], []
    for index in range(count):
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", "--mib", str(mib), "--gpu", str(index)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        first = read_line(proc)
        if not first.startswith("ready "):
            proc.kill()
            _, err = proc.communicate(timeout=30)
            return procs, uuids, first or (err.strip().splitlines() or ["no output"])[-1]
        uuids.append(first.split()[1])
    return procs, uuids, None


def rounds(
    driver: Any,
    procs: list[subprocess.Popen[str]],
    uuids: list[str],
    mib: int,
    cgroup: Cgroup,
    identity: dict[str, str],
    report: dict[str, Any],
) -> bool:
    ok = True
    gigabytes = (mib << 20) / 1e9
    plans: list[tuple[str, dict[str, str] | None]] = [("plain", None), ("identity_map", identity)]
    if not hasattr(sys.modules.get("cuda.bindings.driver"), "CUcheckpointGpuPair"):
        plans = plans[:1]  # 12.x bindings (drivers 570-579) have no GPU pairs: no map to send
        report["identity_map"] = "skipped: these cuda-bindings have no GPU pairs (12.x)"
    for round_name, mapping in plans:
        seconds: dict[str, list[float]] = {}
        steps = (
            ("lock", lambda pid: driver.lock(pid, 10_000)),
            ("checkpoint", lambda pid: driver.checkpoint(pid)),
            ("restore", lambda pid, m=mapping: driver.restore(pid, m)),
            ("unlock", lambda pid: driver.unlock(pid)),
        )
        before = cgroup.current()
        for phase, step in steps:
            if phase == "checkpoint":
                cgroup.peak = 0
                cgroup.watch()
            try:
                for proc in procs:  # all of one phase before the next (NVIDIA's order)
                    start = time.perf_counter()
                    step(proc.pid)
                    seconds.setdefault(phase, []).append(round(time.perf_counter() - start, 4))
                    report[f"{round_name}_state_after_{phase}_{proc.pid}"] = driver.state(proc.pid)
            finally:
                if phase == "checkpoint":
                    cgroup.unwatch()
                    report[f"{round_name}_cgroup"] = {
                        "path": str(cgroup.path) if cgroup.path else None,
                        "source": cgroup.source,
                        "before_bytes": before,
                        "peak_during_checkpoint_bytes": cgroup.peak or None,
                        "after_checkpoint_bytes": cgroup.current(),
                        "gpu_bytes": len(procs) * (mib << 20),
                    }
        report[round_name] = {
            "seconds": seconds,
            "per_child": [
                {
                    "pid": proc.pid,
                    "gpu": uuids[i],
                    "checkpoint_gbps": round(gigabytes / seconds["checkpoint"][i], 2),
                    "restore_gbps": round(gigabytes / seconds["restore"][i], 2),
                    "vm_hwm_bytes": vm_field(proc.pid, "VmHWM:"),
                }
                for i, proc in enumerate(procs)
            ],
            "per_gpu": {
                uuid: {
                    "bytes": uuids.count(uuid) * (mib << 20),
                    "checkpoint_s": round(
                        sum(s for s, u in zip(seconds["checkpoint"], uuids, strict=True) if u == uuid), 4
                    ),
                    "restore_s": round(
                        sum(s for s, u in zip(seconds["restore"], uuids, strict=True) if u == uuid), 4
                    ),
                }
                for uuid in sorted(set(uuids))
            },
        }
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("verify\n")
            proc.stdin.flush()
            verdict = read_line(proc)
            report[f"{round_name}_pattern_{proc.pid}"] = verdict or "no answer"
            ok = ok and verdict == "ok"
    return ok


def main() -> int:
    mib = int(sys.argv[sys.argv.index("--mib") + 1]) if "--mib" in sys.argv else 1024
    count = int(sys.argv[sys.argv.index("--children") + 1]) if "--children" in sys.argv else 2
    if "--child" in sys.argv:
        index = int(sys.argv[sys.argv.index("--gpu") + 1]) if "--gpu" in sys.argv else 0
        try:
            child(mib, index)
        except Exception as exc:  # one line for the parent, not a traceback
            print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
        return 0
    # The checkpoint API wants every GPU the kernel driver exposes; no user-space masking here.
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    report: dict[str, Any] = {"machine": machine(), "mib": mib, "children": count}
    procs, uuids, failed = start_children(mib, count)
    cgroup = Cgroup()
    ok = failed is None
    driver = None
    try:
        if failed is not None:
            report["error"] = f"the CUDA child did not start: {failed}"
            return 1
        for proc in procs:
            cgroup.add(proc.pid)
        report["pids"] = [proc.pid for proc in procs]
        report["gpus_used"] = uuids
        from cuda.bindings import driver as bindings

        from crgpu.nvidia.cuda import core_process_class, load_driver
        from crgpu.nvidia.gpu import gpus

        report["layer"] = "cuda.core" if core_process_class(bindings) else "cuda-bindings"
        driver = load_driver()
        identity = {gpu.uuid: gpu.uuid for gpu in gpus()}
        if not identity:
            raise RuntimeError("no GPU listed by NVML or nvidia-smi: no device map to build")
        report["device_map"] = identity
        ok = rounds(driver, procs, uuids, mib, cgroup, identity, report)
    except Exception as exc:
        ok = False
        report["error"] = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
        if driver is not None:
            report["child_state_after_give_back"] = {proc.pid: give_back(driver, proc.pid) for proc in procs}
    finally:
        for proc in procs:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        cgroup.remove()
        print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
