"""The GPU proof of crgpu's driver-API path (issue 9), for a machine with an NVIDIA GPU (driver 570+).

    PYTHONPATH=. python3 scripts/gpu-proof.py [--mib 1024]

A child process allocates MIB MiB on GPU 0 through cuda-bindings and fills it with a pattern. This
process then takes the child through crgpu's own driver layer (crgpu.cuda.BindingsDriver): lock,
checkpoint (GPU memory moves to host memory), restore, unlock; the child reads its GPU memory back
and checks every byte. Prints each phase's time, GB/s and the verdict as one JSON line.
Needs only the standard library and cuda-bindings (no pydantic, Typer or Rich).
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import time

PATTERN = 0xA5A5A5A5


def check(result: object) -> object:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise SystemExit(f"CUDA call failed: {err}")
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
    sys.stdin.readline()  # the parent says: verify now
    host = ctypes.create_string_buffer(size)
    check(cu.cuMemcpyDtoH(ctypes.addressof(host), pointer, size))
    good = host.raw.count(b"\xa5") == size
    print("ok" if good else "bad", flush=True)


def main() -> None:
    mib = int(sys.argv[sys.argv.index("--mib") + 1]) if "--mib" in sys.argv else 1024
    if "--child" in sys.argv:
        try:
            child(mib)
        except Exception as exc:  # one line for the parent, not a traceback
            print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
        return
    from crgpu.cuda import BindingsDriver, CudaError

    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", "--mib", str(mib)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    first = proc.stdout.readline().strip()
    if first != "ready":
        raise SystemExit(f"the CUDA child did not start: {first}")
    report: dict[str, object] = {"pid": proc.pid, "mib": mib}
    try:
        driver = BindingsDriver()
        report["state_before"] = driver.state(proc.pid)
        phases = {}
        for phase, step in (
            ("lock", lambda: driver.lock(proc.pid, 10_000)),
            ("checkpoint", lambda: driver.checkpoint(proc.pid)),
            ("restore", lambda: driver.restore(proc.pid)),
            ("unlock", lambda: driver.unlock(proc.pid)),
        ):
            start = time.perf_counter()
            step()
            phases[phase] = round(time.perf_counter() - start, 4)
            report[f"state_after_{phase}"] = driver.state(proc.pid)
        report["seconds"] = phases
        gigabytes = (mib << 20) / 1e9
        report["checkpoint_gbps"] = round(gigabytes / phases["checkpoint"], 2)
        report["restore_gbps"] = round(gigabytes / phases["restore"], 2)
    except CudaError as exc:
        report["error"] = exc.message
    proc.stdin.write("verify\n")
    proc.stdin.flush()
    report["pattern"] = proc.stdout.readline().strip()
    proc.wait(timeout=120)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
