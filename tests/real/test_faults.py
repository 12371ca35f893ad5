"""Faults against real runc containers: interrupt, concurrency, a full and a read-only filesystem.

A container holding ~300 MB makes a checkpoint last long enough to interrupt or race.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import testbed
from tests.helpers import crgpu, crgpu_json

BIG = (
    "exec </dev/null >/tmp/log 2>&1; x=$(head -c 300000000 /dev/zero | tr '\\0' a); "
    "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done"
)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testbed.RuncContainer]:
    testbed.require_root()
    runc = testbed.require_binary(shutil.which("runc"), "runc")
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="crgpu-big"))
    bundle = testbed.make_bundle(base / "b", BIG)
    container = testbed.RuncContainer(runc, base / "root", bundle, f"crgpu-big-{os.getpid()}").start()
    testbed.wait_counter_above(container.bundle, 1, timeout=60)  # the 300 MB are in memory by then
    yield container
    container.delete()
    shutil.rmtree(base, ignore_errors=True)


def _env(container: testbed.RuncContainer) -> dict[str, str]:
    return {**os.environ, "CRGPU_RUNC": container.runc}


def test_sigint_during_checkpoint_leaves_no_image_and_a_running_container(
    big: testbed.RuncContainer, short_tmp: Path
) -> None:
    image = short_tmp / "img"
    child = subprocess.Popen(
        [sys.executable, "-m", "crgpu", "checkpoint", "--root", str(big.root), "-i", str(image), big.id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(big),
    )
    testbed.wait_for_path(image / "dump.log")  # CRIU has started dumping
    time.sleep(0.05)  # well inside the ~0.5 s dump of 300 MB
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "interrupted by signal 2" in err and "partial image was removed" in err
    assert not image.exists()
    assert big.status() == "running"
    testbed.wait_counter_above(big.bundle, testbed.read_counter(big.bundle))
    log_line = next(line for line in err.splitlines() if "log:" in line)
    assert Path(log_line.split("log:", 1)[1].strip()).is_file()  # the logs survived, path printed


def test_second_crgpu_on_the_same_container_is_busy(big: testbed.RuncContainer, short_tmp: Path) -> None:
    first_image = short_tmp / "first"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crgpu",
            "checkpoint",
            "--leave-running",
            "--root",
            str(big.root),
            "-i",
            str(first_image),
            big.id,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(big),
    )
    testbed.wait_for_path(first_image / "dump.log")
    os.environ["CRGPU_RUNC"] = big.runc
    try:
        busy = crgpu(
            "checkpoint", "--leave-running", "--root", str(big.root), "-i", str(short_tmp / "second"), big.id
        )
        assert busy.exit_code == 6, busy.output
        assert "is busy" in busy.stderr and not (short_tmp / "second").exists()
        code, doc = crgpu_json(
            "checkpoint",
            "--wait",
            "60",
            "--leave-running",
            "--root",
            str(big.root),
            "-i",
            str(short_tmp / "third"),
            big.id,
        )
        assert code == 0, doc
    finally:
        del os.environ["CRGPU_RUNC"]
    first.communicate(timeout=60)
    assert first.returncode == 0
    assert (first_image / "crgpu.json").is_file() and (short_tmp / "third" / "crgpu.json").is_file()
    assert big.status() == "running"


def test_sigkill_of_crgpu_mid_dump_leaves_no_runtime_and_a_running_container(
    big: testbed.RuncContainer, short_tmp: Path
) -> None:
    image = short_tmp / "img"
    child = subprocess.Popen(
        [sys.executable, "-m", "crgpu", "checkpoint", "--root", str(big.root), "-i", str(image), big.id],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(big),
    )
    testbed.wait_for_path(image / "dump.log")  # CRIU has started dumping
    time.sleep(0.05)
    child.kill()
    child.wait()
    deadline = time.monotonic() + 30
    while testbed.processes_naming(str(image)):  # runc and CRIU, by their image path
        assert time.monotonic() < deadline, testbed.processes_naming(str(image))
        time.sleep(0.1)
    assert not (image / "crgpu.json").exists()
    deadline = time.monotonic() + 10
    while big.status() != "running":
        assert time.monotonic() < deadline, big.status()
        time.sleep(0.1)
    testbed.wait_counter_above(big.bundle, testbed.read_counter(big.bundle))


@pytest.fixture
def small_tmpfs(short_tmp: Path) -> Iterator[Path]:
    mount = short_tmp / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        testbed.missing(f"cannot mount a tmpfs: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_filesystem(runc_container, small_tmpfs: Path) -> None:  # type: ignore[no-untyped-def]
    container = runc_container()
    testbed.wait_counter_above(container.bundle, 2)
    code, doc = crgpu_json(
        "checkpoint", "--root", str(container.root), "-i", str(small_tmpfs / "img"), container.id
    )
    assert code == 1, doc
    assert "full" in (doc["hint"] or ""), doc
    assert not (small_tmpfs / "img").exists()
    assert doc["container_status"] == "running"


def test_read_only_filesystem(runc_container, small_tmpfs: Path) -> None:  # type: ignore[no-untyped-def]
    container = runc_container()
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    result = crgpu("checkpoint", "--root", str(container.root), "-i", str(small_tmpfs / "img"), container.id)
    assert result.exit_code == 5
    assert "read-only" in result.stderr
    assert container.status() == "running"


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.05])
def test_sigint_to_the_group_at_any_point_of_a_dump_leaves_a_whole_image_or_none(
    big: testbed.RuncContainer, short_tmp: Path, delay: float
) -> None:
    """Ctrl-C (SIGINT to the whole process group, CRIU included) at many moments of a
    --leave-running --link-remap checkpoint: a complete image, or none at all."""
    image = short_tmp / "img"
    child = subprocess.Popen(
        [sys.executable, "-m", "crgpu", "checkpoint", "--leave-running", "--link-remap", "--root", str(big.root),
         "-i", str(image), big.id],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(big), start_new_session=True,
    )  # fmt: skip
    testbed.wait_for_path(image / "dump.log")
    time.sleep(delay)
    os.killpg(child.pid, signal.SIGINT)
    _, err = child.communicate(timeout=60)
    if (image / "crgpu.json").is_file():
        # Complete, and crgpu said so (a signal after it finished may still end the process).
        assert "Checkpointed" in err or "the image is complete" in err, err
    else:
        assert child.returncode == 130, err
        assert "partial image was removed" in err and not image.exists(), (err, sorted(os.listdir(image)))
    assert big.status() == "running"
