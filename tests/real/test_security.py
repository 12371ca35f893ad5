"""Issue 12's attacks and faults that involve a real runtime: runc + CRIU and runsc."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import testbed
from tests.helpers import crgpu, crgpu_json

Start = Callable[..., testbed.RuncContainer]


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


def test_a_restore_of_a_truncated_image_is_stopped_and_its_log_capped(
    runc_container: Start, short_tmp: Path
) -> None:
    container = runc_container()
    testbed.wait_counter_above(container.bundle, 2)
    assert testbed.cgroups_named(container.id)  # runc made them: what the end of the test checks
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
    print(f"truncated-image restore stopped after {took:.2f} s: {doc['error']}")
    assert code == 1, doc
    # Where the cut lands decides whether CRIU loops (crgpu stops it) or fails at once by itself.
    assert "CRIU is looping" in doc["error"] or "Can't read" in doc["error"], doc["error"]
    assert took < 10, took  # the issue: stopped within 10 s of the loop starting
    log = work / "restore.log"
    from crgpu.core.restore import RESTORE_LOG_CAP_BYTES

    assert log.stat().st_size <= RESTORE_LOG_CAP_BYTES
    assert container.status() is None  # nothing half-restored is left behind
    assert not testbed.processes_naming(str(image))
    # runc's criu-root mount and its state dir are taken back: the ID is free, and a
    # `runc delete -f` can no longer reach the bundle's rootfs through the mount.
    assert not (container.root / container.id).exists()
    assert (container.bundle / "rootfs" / "bin" / "busybox").exists()
    assert testbed.cgroups_named(container.id) == []  # and the cgroups runc made for the restore


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
        assert doc["warnings"] and "statistics could not be read" in doc["warnings"][0]
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
