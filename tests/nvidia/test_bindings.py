"""BindingsDriver against the real cuda-bindings: its real classes and structs, only the cu*
calls replaced, so a call the real bindings would reject fails here too."""

from __future__ import annotations

from typing import Any

import pytest

from crgpu.nvidia.cuda import BindingsDriver, core_process_class
from crgpu.nvidia.cuda_api import CudaError
from tests.helpers import without_a_gpu

cu = pytest.importorskip("cuda.bindings.driver")
# 12.x (drivers 570-579): no GPU pairs (restore in place only), process states 0-3, and cuda.core 1.2
# does not work with it. 13.x (580+): pairs, states 4 and 5, cuda.core's checkpoint.Process. CI runs
# this file under both (scripts/test.sh).
GENERATION = 13 if hasattr(cu, "CUcheckpointGpuPair") else 12
OLD = "GPU-00112233-4455-6677-8899-aabbccddeeff"
NEW = "GPU-ffeeddcc-bbaa-9988-7766-554433221100"


class _Cu:
    """The real module, with some cu* functions replaced."""

    def __init__(self, **calls: Any) -> None:
        self.calls = calls
        self.seen: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        if name in self.calls:

            def call(*args: Any) -> Any:
                self.seen.append((name, args))
                return self.calls[name](*args)

            return call
        return getattr(cu, name)


LAYER = "bindings"  # which of crgpu's two paths a test drives; see the `layer` fixture


@pytest.fixture(params=["bindings", "cuda.core"], autouse=True)
def layer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs on both paths: cuda.core's checkpoint.Process (13.x bindings) and the
    bindings by hand (12.x). For cuda.core, the cu* functions are replaced on the real module it
    calls, and so is its error formatter, the one piece of it that needs libcuda itself
    (cuGetErrorName); it raises what the real one raises, CUDAError("CUDA_ERROR_NAME: ...")."""
    global LAYER
    LAYER = request.param
    if LAYER == "cuda.core":
        if GENERATION == 12:
            pytest.skip("cuda.core 1.2 needs the 13.x bindings; crgpu uses the bindings alone with 12.x")
        checkpoint = pytest.importorskip("cuda.core.checkpoint")
        from cuda.core._utils.cuda_utils import CUDAError

        real = checkpoint._handle_cuda_return

        def handle_return(result: Any) -> Any:
            if int(result[0]) != 0:
                raise CUDAError(f"{cu.CUresult(int(result[0])).name}: the driver's explanation")
            return real(result)

        monkeypatch.setattr(checkpoint, "_handle_cuda_return", handle_return)
        monkeypatch.setattr(checkpoint, "_driver_capability_checked", False)
        monkeypatch.setattr(cu, "cuDriverGetVersion", lambda: (cu.CUresult.CUDA_SUCCESS, 13000))
    return str(LAYER)


def _driver(**calls: Any) -> tuple[BindingsDriver, _Cu]:
    fake = _Cu(**calls)
    driver = BindingsDriver.__new__(BindingsDriver)  # no cuInit: there is no driver here
    driver.cu = fake
    driver.core = None
    if LAYER == "cuda.core":
        for name in calls:
            setattr(cu, name, getattr(fake, name))  # undone by the monkeypatch below
        driver.core = core_process_class(cu)
        assert driver.core is not None
    return driver, fake


@pytest.fixture(autouse=True)
def _restore_module(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in dir(cu):
        if name.startswith("cuCheckpoint"):
            monkeypatch.setattr(cu, name, getattr(cu, name))  # so setattr in _driver is undone


def _ok(*_args: Any) -> Any:
    return (cu.CUresult.CUDA_SUCCESS,)


@pytest.mark.skipif(GENERATION == 12, reason="12.x bindings have no GPU pairs")
def test_restore_onto_other_gpus_builds_the_pairs_the_real_bindings_take() -> None:
    driver, fake = _driver(cuCheckpointProcessRestore=_ok)
    driver.restore(4242, {OLD: NEW, NEW: OLD})
    name, (pid, args) = fake.seen[-1]
    assert name == "cuCheckpointProcessRestore" and pid == 4242
    assert isinstance(args, cu.CUcheckpointRestoreArgs) and args.gpuPairsCount == 2
    pairs = [(bytes(p.oldUuid.bytes), bytes(p.newUuid.bytes)) for p in args.gpuPairs]
    old, new = bytes.fromhex(OLD[4:].replace("-", "")), bytes.fromhex(NEW[4:].replace("-", ""))
    assert pairs == [(old, new), (new, old)]


@pytest.mark.skipif(GENERATION == 13, reason="13.x bindings have GPU pairs")
def test_a_map_with_the_12x_bindings_is_one_line_before_any_call() -> None:
    driver, fake = _driver(cuCheckpointProcessRestore=_ok)
    with pytest.raises(CudaError, match="needs driver 580 and a cuda-bindings that knows it"):
        driver.restore(7, {OLD: NEW})
    assert fake.seen == []


def test_an_identity_map_and_no_map_work() -> None:
    driver, fake = _driver(cuCheckpointProcessRestore=_ok)
    if GENERATION == 13:
        driver.restore(7, {OLD: OLD})
        assert fake.seen[-1][1][1].gpuPairsCount == 1
    driver.restore(7, None)
    args = fake.seen[-1][1][1]
    # cuda.core passes NULL, crgpu empty arguments (12.x's have no pair fields at all)
    assert args is None or (
        isinstance(args, cu.CUcheckpointRestoreArgs) and getattr(args, "gpuPairsCount", 0) == 0
    )


@pytest.mark.parametrize("bad", ["GPU-xyz", "0011", "GPU-00112233-4455-6677-8899-aabbccddee"])
def test_a_malformed_uuid_is_one_line_not_a_crash(bad: str) -> None:
    driver, _ = _driver(cuCheckpointProcessRestore=_ok)
    with pytest.raises(CudaError, match="not a GPU UUID"):
        driver.restore(7, {bad: NEW})


@pytest.mark.parametrize(
    ("value", "state"),
    [(0, "running"), (3, "failed"), (4, "checkpointing"), (5, "restoring"), (9, "unknown (9)")],
)
def test_every_process_state_of_the_bindings_has_a_name(value: int, state: str) -> None:
    def get_state(_pid: int) -> Any:
        return (cu.CUresult.CUDA_SUCCESS, value)

    driver, _ = _driver(cuCheckpointProcessGetState=get_state)
    assert driver.state(7) == state
    if value < (6 if GENERATION == 13 else 4):  # the states these bindings know
        assert cu.CUprocessState(value).name.lower().endswith(state)


@pytest.mark.parametrize(
    ("result", "words"),
    [
        ("CUDA_ERROR_NOT_READY", "lock timeout"),
        ("CUDA_ERROR_OPERATING_SYSTEM", "lost"),
        ("CUDA_ERROR_OUT_OF_MEMORY", "retrying does not help"),
        # the driver API's name for what cuda-checkpoint calls an initialization error
        ("CUDA_ERROR_NOT_INITIALIZED", "no active CUDA context"),
        ("CUDA_ERROR_NOT_PERMITTED", "persistence mode"),  # before: the generic hint
    ],
)
def test_the_documented_failures_get_their_hint(result: str, words: str) -> None:
    def fail(*_args: Any) -> Any:
        return (getattr(cu.CUresult, result),)

    driver, _ = _driver(cuCheckpointProcessLock=fail)
    with pytest.raises(CudaError) as caught:
        driver.lock(7, 1000)
    assert result in caught.value.message and words in (caught.value.hint or "")


@without_a_gpu
def test_crgpu_unmasks_the_gpus_before_it_reaches_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.raises(CudaError):  # no driver here; what matters is the environment it saw
        BindingsDriver()
    import os

    assert "CUDA_VISIBLE_DEVICES" not in os.environ


@without_a_gpu
def test_the_gpu_proof_ends_with_a_reason_and_a_failing_exit_where_there_is_no_gpu() -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(root / "scripts" / "gpu-proof.py"), "--mib", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 1
    assert report["error"].startswith("the CUDA child did not start: error: ")
    assert report["machine"]["kernel"]


def test_cuda_core_is_used_only_with_the_bindings_it_works_with() -> None:
    class Bindings12:
        """cuda-bindings 12.x: the checkpoint calls, no CUcheckpointGpuPair (cuda.core 1.2 needs it)."""

        cuCheckpointProcessLock = cu.cuCheckpointProcessLock

    assert core_process_class(Bindings12()) is None
    assert (core_process_class(cu) is not None) is (GENERATION == 13)


def test_a_driver_without_the_api_through_cuda_core_gets_the_not_supported_hint() -> None:
    from crgpu.nvidia.cuda import _core_error

    error = _core_error(
        "cuCheckpointProcessLock",
        RuntimeError("CUDA checkpointing is not supported by the installed NVIDIA driver. Upgrade ..."),
    )
    assert "570+" in (error.hint or "")
    # Before: "not supported by the installed NVIDIA driver", though cuda.core says so of NOT_FOUND
    # and of processes a new driver cannot take too.
    assert "CUDA_ERROR_NOT_SUPPORTED or CUDA_ERROR_NOT_FOUND" in error.message
    assert "UVM, IPC, MIG or MPS" in (error.hint or "")


@pytest.mark.skipif(GENERATION == 12, reason="12.x bindings have no GPU pairs")
def test_invalid_value_on_a_mapped_restore_blames_the_map_not_the_pid() -> None:
    """cuda-checkpoint #35: the driver refusing a migration answers INVALID_VALUE. Before, the
    hint said "no such CUDA process (check the PID)"."""

    def refuse(*_args: Any) -> Any:
        return (cu.CUresult.CUDA_ERROR_INVALID_VALUE,)

    driver, _ = _driver(cuCheckpointProcessRestore=refuse)
    with pytest.raises(CudaError) as caught:
        driver.restore(7, {OLD: NEW})
    assert "refused the GPU map" in (caught.value.hint or "")
    with pytest.raises(CudaError) as caught:
        driver.restore(7, None)
    assert "check the PID" in (caught.value.hint or "")
