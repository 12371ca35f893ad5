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
