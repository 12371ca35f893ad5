"""The GPU proof of crgpu's driver-API path, for a machine with an NVIDIA GPU (driver 570+).

    PYTHONPATH=. python3 scripts/gpu-proof.py [--mib 1024]

A child process allocates MIB MiB on GPU 0 through cuda-bindings and fills it with a pattern. This
process then takes the child through crgpu's own driver layer (crgpu.nvidia.cuda.load_driver: the calls
made by a killable helper process under deadlines, through cuda.core.checkpoint where it works)
twice: lock, checkpoint (GPU memory moves to host memory), restore, unlock; the second time the
restore carries an identity device map over every GPU the kernel driver exposes, the call a
migration makes. After each round the
child reads its GPU memory back and checks every byte. Prints the machine (kernel, driver), each
phase's time, GB/s and the verdicts as one JSON line; exits 0 only when everything held.

It never leaves the child locked or checkpointed: on any failure it restores and unlocks from the
driver's own view of the child's state, and every read from the child has a deadline.
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
import time
from pathlib import Path

PATTERN = 0xA5A5A5A5
READ_TIMEOUT_S = 120.0


def check(result: object) -> object:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA call failed: {err}")
    return rest[0] if rest else None


def child(mib: int) -> None:
    from cuda.bindings import driver as cu

    size = mib << 20
    check(cu.cuInit(0))
    device = check(cu.cuDeviceGet(0))
    context = check(cu.cuDevicePrimaryCtxRetain(device))
    check(cu.cuCtxSetCurrent(context))
    pointer = check(cu.cuMemAlloc(size))
    check(cu.cuMemsetD32(pointer, PATTERN, size // 4))
    check(cu.cuCtxSynchronize())
    print("ready", flush=True)
    host = ctypes.create_string_buffer(size)
    while sys.stdin.readline().strip() == "verify":  # the parent says: verify now
        check(cu.cuMemcpyDtoH(ctypes.addressof(host), pointer, size))
        print("ok" if host.raw.count(b"\xa5") == size else "bad", flush=True)


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


def main() -> int:
    mib = int(sys.argv[sys.argv.index("--mib") + 1]) if "--mib" in sys.argv else 1024
    if "--child" in sys.argv:
        try:
            child(mib)
        except Exception as exc:  # one line for the parent, not a traceback
            print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
        return 0
    # The checkpoint API wants every GPU the kernel driver exposes; no user-space masking here.
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    report: dict[str, object] = {"machine": machine(), "mib": mib}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", "--mib", str(mib)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    first = read_line(proc)
    if first != "ready":
        proc.kill()
        _, err = proc.communicate(timeout=30)
        report["error"] = (
            f"the CUDA child did not start: {first or (err.strip().splitlines() or ['no output'])[-1]}"
        )
        print(json.dumps(report))
        return 1
    report["pid"] = proc.pid
    ok = True
    driver = None
    try:
        from cuda.bindings import driver as bindings

        from crgpu.nvidia.cuda import core_process_class, load_driver
        from crgpu.nvidia.gpu import gpus

        report["layer"] = "cuda.core" if core_process_class(bindings) else "cuda-bindings"
        driver = load_driver()
        identity = {gpu.uuid: gpu.uuid for gpu in gpus()}
        if not identity:
            raise RuntimeError("no GPU listed by NVML or nvidia-smi: no device map to build")
        report["device_map"] = identity
        for round_name, mapping in (("plain", None), ("identity_map", identity)):
            phases: dict[str, float] = {}
            for phase, step in (
                ("lock", lambda: driver.lock(proc.pid, 10_000)),
                ("checkpoint", lambda: driver.checkpoint(proc.pid)),
                ("restore", lambda m=mapping: driver.restore(proc.pid, m)),
                ("unlock", lambda: driver.unlock(proc.pid)),
            ):
                start = time.perf_counter()
                step()
                phases[phase] = round(time.perf_counter() - start, 4)
                report[f"{round_name}_state_after_{phase}"] = driver.state(proc.pid)
            gigabytes = (mib << 20) / 1e9
            report[round_name] = {
                "seconds": phases,
                "checkpoint_gbps": round(gigabytes / phases["checkpoint"], 2),
                "restore_gbps": round(gigabytes / phases["restore"], 2),
            }
            proc.stdin.write("verify\n")
            proc.stdin.flush()
            verdict = read_line(proc)
            report[f"{round_name}_pattern"] = verdict or "no answer"
            ok = ok and verdict == "ok"
    except Exception as exc:
        ok = False
        report["error"] = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
        if driver is not None:
            report["child_state_after_give_back"] = give_back(driver, proc.pid)
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
