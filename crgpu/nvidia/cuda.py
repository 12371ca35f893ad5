"""The CUDA driver's checkpoint API (driver 570+).

`BindingsDriver` reaches cuCheckpointProcess* through NVIDIA's cuda-bindings, imported only when
used. Every failure becomes a CudaError with one line naming the call and the CUresult.
No setting chooses another implementation: a root tool must not import code an environment
variable names. Tests replace `DRIVER_FACTORY`."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from crgpu.host.errors import ExitCode
from crgpu.nvidia.bindings_line import install_hint
from crgpu.nvidia.cuda_api import STATES, CudaDriver, CudaError


class BindingsDriver:
    """cuCheckpointProcess* through NVIDIA's layers: `cuda.core.checkpoint.Process` (cuda-core 1.2+)
    for lock, checkpoint, restore and unlock where it works (it needs the 13.x bindings, which
    have GPU pairs), the bindings themselves (`cuda.bindings.driver`) for the rest: cuInit (a
    restore needs it or persistence mode), the process state (cuda.core names only 0-3; the 13.x
    bindings have 4 and 5) and the 12.x bindings of drivers 570-579."""

    def __init__(self) -> None:
        # The checkpoint API works on every GPU the kernel driver exposes (NVIDIA: user-space
        # masking does not reduce what a restore must map): crgpu's own view must not be masked.
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        try:
            from cuda.bindings import driver  # type: ignore[import-untyped, import-not-found, unused-ignore]
        except ImportError as exc:
            from crgpu.nvidia.gpu import driver_version

            driver = driver_version()
            raise CudaError(
                "cannot reach the CUDA driver API: the cuda-bindings package is not installed",
                hint=install_hint(driver.version if driver else None),
                exit_code=ExitCode.PRECONDITION,
            ) from exc
        self.cu: Any = driver
        try:
            self._check("cuInit", self.cu.cuInit(0))
        except CudaError:
            raise
        except Exception as exc:  # the library loader raises its own types when libcuda is absent
            raise CudaError(
                f"cannot reach the CUDA driver: {str(exc).splitlines()[0]}",
                hint="this needs a node with the NVIDIA driver (570 or newer) installed",
                exit_code=ExitCode.PRECONDITION,  # the node lacks it: not a driver call that failed
            ) from exc
        self.core: Any = core_process_class(self.cu)

    def _check(self, call: str, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            # Named from the bindings' enum: that needs no driver (the error may be that there is none).
            try:
                label = self.cu.CUresult(int(err)).name
            except ValueError:
                label = f"CUresult {int(err)}"
            try:
                text = self.cu.cuGetErrorString(err)
                words = text[1].decode() if int(text[0]) == 0 else ""
            except Exception:
                words = ""
            raise CudaError(f"{call} failed: {label}" + (f" ({words})" if words else ""), hint=_hint(label))
        return rest[0] if rest else None

    def _core(self, call: str, step: Callable[[Any], None], pid: int) -> None:
        """One cuda.core call, its failures named as crgpu names the bindings' ones."""
        try:
            step(self.core(pid))
        except Exception as exc:
            raise _core_error(call, exc) from exc

    def state(self, pid: int) -> str:
        value = self._check("cuCheckpointProcessGetState", self.cu.cuCheckpointProcessGetState(pid))
        return STATES[int(value)] if 0 <= int(value) < len(STATES) else f"unknown ({int(value)})"

    def lock(self, pid: int, timeout_ms: int) -> None:
        if self.core is not None:
            return self._core("cuCheckpointProcessLock", lambda proc: proc.lock(timeout_ms), pid)
        args = self.cu.CUcheckpointLockArgs()
        args.timeoutMs = timeout_ms
        self._check("cuCheckpointProcessLock", self.cu.cuCheckpointProcessLock(pid, args))
        return None

    def checkpoint(self, pid: int) -> None:
        if self.core is not None:
            return self._core("cuCheckpointProcessCheckpoint", lambda proc: proc.checkpoint(), pid)
        self._check(
            "cuCheckpointProcessCheckpoint",
            self.cu.cuCheckpointProcessCheckpoint(pid, self.cu.CUcheckpointCheckpointArgs()),
        )
        return None

    def restore(self, pid: int, device_map: dict[str, str] | None = None) -> None:
        for uuid in [*(device_map or {}), *(device_map or {}).values()]:
            _uuid_bytes(uuid)  # a malformed UUID is crgpu's one-line error, whichever layer calls
        if self.core is not None:
            # cuda.core takes UUIDs as CUDA's Device.uuid prints them: without "GPU-".
            mapping = {o[4:]: n[4:] for o, n in device_map.items()} if device_map else None
            try:
                return self._core("cuCheckpointProcessRestore", lambda proc: proc.restore(mapping), pid)
            except CudaError as exc:
                raise _mapped(exc, device_map) from None
        args = self.cu.CUcheckpointRestoreArgs()
        if device_map:
            if not hasattr(self.cu, "CUcheckpointGpuPair"):
                raise CudaError(
                    "restoring onto other GPUs needs driver 580 and a cuda-bindings that knows it (13.x)"
                )
            pairs = []  # alive until the call returns
            for old, new in device_map.items():
                pair = self.cu.CUcheckpointGpuPair()
                _set_uuid(self.cu, pair, "oldUuid", old)
                _set_uuid(self.cu, pair, "newUuid", new)
                pairs.append(pair)
            args.gpuPairs = pairs
            args.gpuPairsCount = len(pairs)
        try:
            self._check("cuCheckpointProcessRestore", self.cu.cuCheckpointProcessRestore(pid, args))
        except CudaError as exc:
            raise _mapped(exc, device_map) from None
        return None

    def unlock(self, pid: int) -> None:
        if self.core is not None:
            return self._core("cuCheckpointProcessUnlock", lambda proc: proc.unlock(), pid)
        self._check(
            "cuCheckpointProcessUnlock",
            self.cu.cuCheckpointProcessUnlock(pid, self.cu.CUcheckpointUnlockArgs()),
        )
        return None


def core_process_class(cu: Any) -> Any:
    """cuda.core's checkpoint.Process, when cuda-core is installed and can work with these
    bindings (cuda-core 1.2 requires CUcheckpointGpuPair, which only the 13.x bindings have)."""
    if not hasattr(cu, "CUcheckpointGpuPair"):
        return None
    try:
        from cuda.core.checkpoint import Process  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return None
    return Process


_CU_RESULT = re.compile(r"\bCUDA_ERROR_[A-Z_]+\b")


def _core_error(call: str, exc: Exception) -> CudaError:
    """cuda.core raises CUDAError('CUDA_ERROR_NAME: explanation'), and RuntimeError for a driver
    without the API (it folds NOT_FOUND and NOT_SUPPORTED into that)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    found = _CU_RESULT.search(text)
    if found:
        label = found.group(0)
    elif "not supported by the installed NVIDIA driver" in text:
        # cuda.core 1.2.2 folds every NOT_SUPPORTED and NOT_FOUND into "driver too old", also where
        # the driver is new enough and the process is what it cannot take (UVM, IPC, MIG, MPS).
        return CudaError(
            f"{call} failed: CUDA_ERROR_NOT_SUPPORTED or CUDA_ERROR_NOT_FOUND (cuda.core reports both as "
            "an unsupported driver)",
            hint=_hint("CUDA_ERROR_NOT_SUPPORTED"),
        )
    else:
        return CudaError(f"{call} failed: {type(exc).__name__}: {text}")
    return CudaError(f"{call} failed: {text}", hint=_hint(label))


def _mapped(exc: CudaError, device_map: dict[str, str] | None) -> CudaError:
    """INVALID_VALUE on a restore with a map is the driver refusing the migration (cuda-checkpoint
    #35), not a wrong PID."""
    if (
        device_map
        and any(o != n for o, n in device_map.items())
        and "CUDA_ERROR_INVALID_VALUE" in exc.message
    ):
        exc.hint = (
            "the driver refused the GPU map: every GPU the process checkpointed must be in it, each onto a "
            "GPU of the same chip (cuda-checkpoint #35); `crgpu restore --dry-run` shows the map"
        )
    return exc


def _uuid_bytes(text: str) -> bytes:
    hexdigits = text.removeprefix("GPU-").replace("-", "")
    if not text.startswith("GPU-") or len(hexdigits) != 32:
        raise CudaError(f"{text!r} is not a GPU UUID (GPU- and 32 hex digits)")
    try:
        return bytes.fromhex(hexdigits)
    except ValueError:
        raise CudaError(f"{text!r} is not a GPU UUID (GPU- and 32 hex digits)") from None


def _set_uuid(cu: Any, target: Any, field: str, text: str) -> None:
    """Set a CUuuid field from 'GPU-...' text. CUuuid.bytes is read-only in every cuda-bindings
    version; a CUuuid over a 16-byte ctypes buffer is the way in (as NVIDIA's cuda.core does), and
    assigning it copies the bytes, so the buffer only has to outlive the assignment."""
    import ctypes  # only on a GPU path: 2 ms of every checkpoint otherwise

    buffer = (ctypes.c_char * 16).from_buffer_copy(_uuid_bytes(text))
    setattr(target, field, cu.CUuuid(_ptr=ctypes.addressof(buffer)))
    del buffer


def _hint(label: str) -> str:
    hints = {
        "CUDA_ERROR_NOT_INITIALIZED": "the process has no active CUDA context (an NVML-only or forked "
        "process, or one that never initialised CUDA): the driver cannot checkpoint it",
        "CUDA_ERROR_ILLEGAL_STATE": "the process is not in the state this step needs: check `crgpu cuda state --pid PID`",
        "CUDA_ERROR_NOT_SUPPORTED": "the driver lacks the checkpoint API (570+), or the process uses UVM, IPC, MIG or MPS",
        "CUDA_ERROR_TIMEOUT": "the process did not reach a lockable point in time: raise the lock timeout",
        "CUDA_ERROR_INVALID_VALUE": "no such CUDA process (check the PID)",
        "CUDA_ERROR_NOT_READY": "the process did not reach a lockable point before the lock timeout: "
        "raise --cuda-lock-timeout, or let its running kernels finish",
        "CUDA_ERROR_OPERATING_SYSTEM": "the driver failed to put the GPU state back (after an out-of-memory "
        "NVIDIA reports this for good): the process's GPU state is lost, restart it",
        "CUDA_ERROR_OUT_OF_MEMORY": "not enough GPU memory (restore) or host memory (checkpoint) for the "
        "process's GPU state: free memory; retrying does not help (on a MIG GPU: MIG is not supported)",
        "CUDA_ERROR_NOT_PERMITTED": "the driver refused: crgpu must run as root against the host PID, and "
        "persistence mode must be on (`nvidia-smi -pm 1`; cuda-checkpoint #25)",
    }
    return hints.get(label, "see the NVIDIA driver's checkpoint documentation for this CUresult")


DRIVER_FACTORY: Callable[[], CudaDriver] = BindingsDriver


def load_driver() -> CudaDriver:
    """The driver, reached through a killable helper process (crgpu.cuda_helper)."""
    from crgpu.nvidia.cuda_helper import HelperDriver

    return HelperDriver(DRIVER_FACTORY)
