"""Driver calls run in a helper process crgpu can kill: a call that hangs (NVIDIA: a CUDA call can
hang while another process of the job is locked) costs its deadline, never crgpu itself."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from crgpu.nvidia import cuda_helper
from crgpu.nvidia.cuda_api import CudaError
from crgpu.nvidia.cuda_flow import DriverApiSession
from crgpu.nvidia.cuda_helper import HelperDriver
from crgpu.nvidia.cuda_processes import CudaProcess
from tests.fake_cuda import FakeDriver


class HangingCheckpoint(FakeDriver):
    """The second process's checkpoint never returns, as a driver call stuck behind a lock."""

    def checkpoint(self, pid: int) -> None:
        if pid == 102:
            time.sleep(3600)
        super().checkpoint(pid)


@pytest.fixture
def driver_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "cuda.json"
    state.write_text(json.dumps({"procs": {"101": "running", "102": "running"}}))
    monkeypatch.setenv("CRGPU_FAKE_CUDA", str(state))
    monkeypatch.setattr("crgpu.nvidia.gpu.process_gpu_use", lambda pids: {})
    return state


def test_a_hung_driver_call_is_killed_at_its_deadline_and_every_process_is_given_back(
    driver_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cuda_helper, "TRANSFER_DEADLINE_S", 1.0)
    driver = HelperDriver(HangingCheckpoint)
    stuck = driver._child.pid if driver._child else None
    procs = [CudaProcess(101, 7, "train"), CudaProcess(102, 8, "serve")]
    session = DriverApiSession(driver, procs, 1000)
    started = time.monotonic()
    with pytest.raises(CudaError, match=r"checkpoint call did not return within 1 s"):
        session.suspend()
    assert time.monotonic() - started < 30
    assert json.loads(driver_state.read_text())["procs"] == {"101": "running", "102": "running"}
    assert stuck is not None
    with pytest.raises(ProcessLookupError):
        os.kill(stuck, 0)  # the stuck helper is gone (killed and reaped)


def test_a_driver_that_cannot_start_is_one_error_at_once(driver_state: Path) -> None:
    def no_driver() -> FakeDriver:
        raise CudaError("cannot reach the CUDA driver: libcuda.so.1 not found", hint="install it")

    with pytest.raises(CudaError, match="cannot reach the CUDA driver") as caught:
        HelperDriver(no_driver)
    assert caught.value.hint == "install it"


def test_the_helper_keeps_none_of_crgpus_descriptors(driver_state: Path, tmp_path: Path) -> None:
    """A container lock crgpu holds must not live on in the helper."""
    held = os.open(tmp_path / "lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        driver = HelperDriver(FakeDriver)
        assert driver._child is not None and driver._child.pid is not None
        fds = os.listdir(f"/proc/{driver._child.pid}/fd")
        targets = {os.readlink(f"/proc/{driver._child.pid}/fd/{fd}") for fd in fds}
        assert str(tmp_path / "lock") not in targets
        assert len([fd for fd in fds if int(fd) > 2]) == 2  # its two pipes
        assert driver.state(101) == "running"
        driver.close()
    finally:
        os.close(held)


def test_an_unexpected_exception_in_the_driver_is_a_cuda_error(driver_state: Path) -> None:
    class Crashing(FakeDriver):
        def unlock(self, pid: int) -> None:
            raise RuntimeError("driver call crashed")

    with pytest.raises(CudaError, match="RuntimeError: driver call crashed"):
        HelperDriver(Crashing).unlock(101)


def test_transfer_deadlines_follow_each_processs_gpu_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, every checkpoint and restore waited 600 s, for 1 GB or for an H200's 141 GB."""
    seen: list[tuple[str, float | None]] = []
    monkeypatch.setattr(
        HelperDriver, "_call", lambda self, call, deadline, *args: seen.append((call, deadline))
    )
    driver = HelperDriver.__new__(HelperDriver)
    driver._bytes = {}
    driver.expect_bytes(7, 141 * 10**9)
    driver.expect_bytes(8, 10**9)
    driver.checkpoint(7)
    driver.checkpoint(8)
    driver.restore(7)
    driver.checkpoint(9)  # unknown: the whole of an H200
    assert seen == [("checkpoint", 684.0), ("checkpoint", 124.0), ("restore", 684.0), ("checkpoint", 600.0)]


class SlowLock(FakeDriver):
    """The first lock answers late: after its caller gave up (Ctrl-C)."""

    def lock(self, pid: int, timeout_ms: int) -> None:
        if pid == 101:
            time.sleep(0.5)
        super().lock(pid, timeout_ms)


def test_after_an_interrupted_call_no_answer_is_one_call_behind(
    driver_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, Ctrl-C during a driver call left its reply in the pipe: the next call read it as
    its own, and every later answer was one call behind."""
    driver = HelperDriver(SlowLock)
    first = driver._child
    assert first is not None

    def interrupted(call: str, deadline: float | None, request: int = 0) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(first, "answer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        driver.lock(101, 1000)
    assert driver._child is None and first.pid is None  # the helper that held the late reply is gone
    assert driver.state(102) == "running"  # a new helper, answering this call


def test_a_late_reply_is_dropped_by_its_id(driver_state: Path) -> None:
    driver = HelperDriver(SlowLock)
    child = driver._child
    assert child is not None
    late = child.send("lock", (101, 1000))  # its caller gone: nobody reads this reply first
    assert driver.state(102) == "running"  # the lock's late reply, read first, is not this answer
    assert late == 1


class LateLock(FakeDriver):
    """A lock crgpu gave up on lands after 102 was unlocked (cuda-checkpoint #30)."""

    landed = False

    def unlock(self, pid: int) -> None:
        super().unlock(pid)
        if pid == 102 and not LateLock.landed:
            LateLock.landed = True
            data = self._load()
            data["procs"]["102"] = "locked"
            self._save(data)


def test_a_lock_that_lands_after_the_give_back_is_given_back_too(
    driver_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the give-back ended with 102 locked and reported nothing left behind."""
    monkeypatch.setattr(LateLock, "landed", False)
    driver_state.write_text(json.dumps({"procs": {"101": "locked", "102": "locked"}}))
    session = DriverApiSession(LateLock(), [CudaProcess(101, 7, "train"), CudaProcess(102, 8, "serve")], 1000)
    session.state = {101: "locked", 102: "locked"}
    assert session.resume() == []
    assert json.loads(driver_state.read_text())["procs"] == {"101": "running", "102": "running"}
