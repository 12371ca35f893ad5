"""Issue 12's attacks and faults that involve a real runtime: runc + CRIU and runsc."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import testbed
from tests.helpers import crgpu, crgpu_json

Start = Callable[..., testbed.RuncContainer]
BIG = (
    "exec </dev/null >/tmp/log 2>&1; x=$(head -c 300000000 /dev/zero | tr '\\0' a); "
    "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done"
)


def _processes_naming(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


def test_images_hold_criu_files_0600_in_a_0700_dir(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container()
    testbed.wait_counter_above(container.bundle, 2)
    old = os.umask(0o022)  # the usual umask: CRIU would leave its images 0644
    try:
        code, doc = crgpu_json(
            "checkpoint",
            "--leave-running",
            "--root",
            str(container.root),
            "-i",
            str(short_tmp / "img"),
            container.id,
        )
    finally:
        os.umask(old)
    assert code == 0, doc
    image = short_tmp / "img"
    assert stat.S_IMODE(image.stat().st_mode) == 0o700
    files = [p for p in image.iterdir() if p.is_file()]
    assert any(p.name.startswith("pages-") for p in files)
    loose = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files if p.stat().st_mode & 0o077}
    assert loose == {}


def test_a_foreign_image_restores_only_where_the_operator_says(
    runc_container: Start, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = runc_container()
    saved = testbed.wait_counter_above(container.bundle, 2)
    image = short_tmp / "img"
    code, doc = crgpu_json("checkpoint", "--root", str(container.root), "-i", str(image), container.id)
    assert code == 0, doc
    # The image travels to a node with another key: its crgpu.json is foreign there.
    monkeypatch.setenv("CRGPU_NODE_KEY", str(short_tmp / "other-node.key"))
    refused = crgpu("restore", "-i", str(image))
    assert refused.exit_code == 4 and "another node" in refused.stderr
    assert container.status() is None  # nothing was restored
    code, doc = crgpu_json(
        "restore", "-i", str(image), "--root", str(container.root), "--bundle", str(container.bundle)
    )
    assert code == 0, doc
    assert doc["container_status"] == "running"
    assert doc["argv"][-2:] == ["--", container.id]
    assert testbed.wait_counter_above(container.bundle, saved) > saved


def test_a_planted_dump_log_link_is_never_written_through(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container()
    secret = short_tmp / "root-only"
    secret.write_text("precious\n")
    secret.chmod(0o600)
    planted = short_tmp / "planted"
    planted.mkdir()
    (planted / "dump.log").symlink_to(secret)
    os.chown(planted, 65534, 65534)
    os.chmod(planted, 0o777)
    for args in (["-i", str(planted)], ["-i", str(short_tmp / "img"), "--work-path", str(planted)]):
        result = crgpu("checkpoint", "--leave-running", "--root", str(container.root), *args, container.id)
        assert result.exit_code == 5, result.output
    assert secret.read_text() == "precious\n"
    assert container.status() == "running"


@pytest.fixture
def big(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[testbed.RuncContainer]:
    testbed.require_root()
    runc = testbed.require_binary(shutil.which("runc"), "runc")
    bundle = testbed.make_bundle(short_tmp / "big", BIG)
    (bundle / "rootfs" / "bin" / "tr").symlink_to("busybox")
    container = testbed.RuncContainer(runc, short_tmp / "root", bundle, f"crgpu-kill-{os.getpid()}").start()
    monkeypatch.setenv("CRGPU_RUNC", runc)
    testbed.wait_counter_above(container.bundle, 1, timeout=60)
    yield container
    container.delete()


def test_sigkill_of_crgpu_mid_dump_leaves_no_runtime_and_a_running_container(
    big: testbed.RuncContainer, short_tmp: Path
) -> None:
    image = short_tmp / "img"
    child = subprocess.Popen(
        [sys.executable, "-m", "crgpu", "checkpoint", "--root", str(big.root), "-i", str(image), big.id],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 30
    while not (image / "dump.log").exists():
        assert time.monotonic() < deadline, "CRIU never started"
        time.sleep(0.01)
    time.sleep(0.05)
    child.kill()
    child.wait()
    deadline = time.monotonic() + 30
    while _processes_naming(str(image)):  # runc and CRIU, by their image path
        assert time.monotonic() < deadline, _processes_naming(str(image))
        time.sleep(0.1)
    assert not (image / "crgpu.json").exists()
    deadline = time.monotonic() + 10
    while big.status() != "running":
        assert time.monotonic() < deadline, big.status()
        time.sleep(0.1)
    testbed.wait_counter_above(big.bundle, testbed.read_counter(big.bundle))


def test_a_restore_of_a_truncated_image_is_stopped_and_its_log_capped(
    runc_container: Start, short_tmp: Path
) -> None:
    container = runc_container()
    testbed.wait_counter_above(container.bundle, 2)
    image = short_tmp / "img"
    code, doc = crgpu_json("checkpoint", "--root", str(container.root), "-i", str(image), container.id)
    assert code == 0, doc
    pages = sorted(image.glob("pages-*.img"), key=lambda p: p.stat().st_size)[-1]
    with pages.open("r+b") as handle:
        handle.truncate(pages.stat().st_size // 2)
    work = short_tmp / "work"
    started = time.monotonic()
    code, doc = crgpu_json("restore", "--work-path", str(work), "-i", str(image))
    took = time.monotonic() - started
    assert code != 0, doc
    assert took < 30, took
    log = work / "restore.log"
    from crgpu.operations import RESTORE_LOG_CAP_BYTES

    assert log.stat().st_size <= RESTORE_LOG_CAP_BYTES
    assert container.status() is None  # nothing half-restored is left behind
    assert not _processes_naming(str(image))


def test_a_restore_whose_work_path_fills_up_says_so(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container()
    testbed.wait_counter_above(container.bundle, 2)
    image = short_tmp / "img"
    code, doc = crgpu_json("checkpoint", "--root", str(container.root), "-i", str(image), container.id)
    assert code == 0, doc
    tiny = short_tmp / "tiny"
    tiny.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tiny)], capture_output=True, text=True
    )
    if done.returncode != 0:
        testbed.missing(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        (tiny / "filler").write_bytes(b"x" * 60 * 1024)
        code, doc = crgpu_json("restore", "--work-path", str(tiny / "work"), "-i", str(image))
        # The restore itself works (CRIU's log write fails silently); what was lost is said.
        assert code == 0, doc
        assert doc["container_status"] == "running"
        assert len(doc["warnings"]) == 1 and "statistics could not be read" in doc["warnings"][0]
    finally:
        subprocess.run(["umount", "-l", str(tiny)], capture_output=True)


def test_runsc_sandbox_with_debug_logs_round_trips(short_tmp: Path) -> None:
    testbed.require_root()
    runsc = testbed.require_binary(shutil.which("runsc"), "runsc")
    bundle = testbed.make_bundle(short_tmp / "g", testbed.FAST_COUNTER)
    logs = short_tmp / "logs"
    logs.mkdir()
    container = testbed.RunscContainer(runsc, short_tmp / "gvroot", bundle, f"crgpu-dbg-{os.getpid()}")
    container.GLOBALS = (*container.GLOBALS, "--debug", f"--debug-log={logs}/")  # type: ignore[misc]
    try:
        container.start()
        saved = container.wait_counter(20)
        code, doc = crgpu_json(
            "checkpoint", "--root", str(container.root), "-i", str(short_tmp / "img"), container.id
        )
        assert code == 0, doc
        assert not any(arg.endswith("-fd") or "-fd=" in arg for arg in doc["argv"])
        assert any("--debug-log=" in note for note in doc["notes"])
        code, doc = crgpu_json("restore", "-i", str(short_tmp / "img"), f"--runtime-flag=--debug-log={logs}/")
        assert code == 0, doc
        assert f"--debug-log={logs}/" in doc["argv"]
        assert container.wait_counter(saved + 5) > saved
    finally:
        container.delete()
