"""Real pre-dumps and lazy restores: refused where the kernel cannot, every page arriving where it can."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import testbed
from tests.helpers import crgpu, crgpu_json


def test_pre_dump_is_refused_here_with_the_reason(runc_container, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    criu = shutil.which("criu") or ""
    out = subprocess.run(
        [criu, "check", "--feature", "mem_dirty_track"], capture_output=True, text=True
    ).stderr
    if "OFF" not in out:
        pytest.skip("this kernel tracks dirty memory: pre-dumps would run")
    container = runc_container()
    result = crgpu(
        "checkpoint",
        "--pre-dump",
        "2",
        "--root",
        str(container.root),
        "-i",
        str(short_tmp / "i"),
        container.id,
    )
    assert result.exit_code == 4
    assert "soft-dirty memory tracking" in result.stderr and "Dirty tracking is OFF" in result.stderr
    assert not (short_tmp / "i").exists()
    doctor = {c["id"]: c for c in crgpu_json("doctor")[1]["checks"]}
    assert doctor["criu.dirty_tracking"]["status"] == "warn"


def test_lazy_restore_runs_first_and_every_page_arrives(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    testbed.require_root()
    runc = testbed.require_binary(shutil.which("runc"), "runc")
    bundle = testbed.make_hog_bundle(short_tmp / "hog", 64)
    container = testbed.RuncContainer(runc, short_tmp / "root", bundle, f"crgpu-lazy-{os.getpid()}").start()
    try:
        testbed.wait_counter_above(bundle, 1)
        image = short_tmp / "img"
        code, doc = crgpu_json("checkpoint", "--root", str(container.root), "-i", str(image), container.id)
        assert code == 0, doc
        code, doc = crgpu_json("restore", "--lazy-pages", "-i", str(image))
        assert code == 0, doc
        assert "--lazy-pages" in doc["argv"] and doc["helper_argv"][1] == "lazy-pages"
        assert 0 < doc["stats"]["time_to_running"] <= doc["stats"]["lazy_pages_complete"]
        assert container.status() == "running"
        # The hog reads all 64 MiB back: every lazily served page arrived intact.
        assert testbed.verify_hog_memory(bundle) == f"ok {64 << 20}"
        assert (
            subprocess.run(
                ["pgrep", "-f", f"lazy-pages --images-dir {image}"], capture_output=True
            ).returncode
            == 1
        )
    finally:
        container.delete()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _status_byte(read_end: int, timeout: float) -> bytes:
    import select

    ready, _, _ = select.select([read_end], [], [], timeout)
    return os.read(read_end, 1) if ready else b""


def _raw_lazy_migration(container: testbed.RuncContainer, base: Path) -> tuple[int, str]:
    """runc's own checkpoint.bats lazy test, by hand: the dump's exit code and its dump.log."""
    port = _free_port()
    image = base / "raw"
    image.mkdir()
    read_end, write_end = os.pipe()
    dump = subprocess.Popen(
        container.cmd(
            "checkpoint", "--lazy-pages", "--page-server", f"127.0.0.1:{port}", "--status-fd", str(write_end),
            "--work-path", str(image), "--image-path", str(image), container.id,
        ),
        pass_fds=(write_end,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    os.close(write_end)
    helpers: list[subprocess.Popen[bytes]] = []
    try:
        if _status_byte(read_end, 30) == b"\0":
            helpers.append(
                subprocess.Popen(
                    [
                        "criu",
                        "lazy-pages",
                        "--page-server",
                        "--address",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "-D",
                        str(image),
                        "-o",
                        "lp.log",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            helpers.append(
                subprocess.Popen(
                    container.cmd(
                        "restore",
                        "-d",
                        "--work-path",
                        str(image),
                        "--image-path",
                        str(image),
                        "--bundle",
                        str(container.bundle),
                        "--lazy-pages",
                        f"{container.id}-raw",
                    ),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        code = dump.wait(timeout=60)
    finally:
        os.close(read_end)
        for process in [dump, *helpers]:
            if process.poll() is None:  # the raw restore waits for ever for pages that never come
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        subprocess.run(container.cmd("delete", "--force", f"{container.id}-raw"), capture_output=True)
        # The killed raw restore leaves what crgpu's own restore takes back: CRIU's cgroup yard
        # in the work dir and runc's criu-root mount in its state dir.
        testbed.unmount_below(image, container.root / f"{container.id}-raw")
    return code, (image / "dump.log").read_text(errors="replace")


def test_lazy_migration_through_a_page_server(runc_container, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    """runc's `checkpoint --lazy-pages --page-server` + a restore fetching from it: the image is
    restorable (crgpu.json, --status-fd) while the source still serves; where CRIU here cannot
    move the pages, raw runc fails the same way and crgpu says so."""
    container = runc_container()
    saved = testbed.wait_counter_above(container.bundle, 3)
    port = _free_port()
    image = short_tmp / "img"
    read_end, write_end = os.pipe()
    dump = subprocess.Popen(
        [sys.executable, "-m", "crgpu", "checkpoint", "--json", "--lazy-pages", "--page-server",
         f"127.0.0.1:{port}", "--status-fd", str(write_end), "--root", str(container.root),
         "-i", str(image), container.id],
        pass_fds=(write_end,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=os.environ.copy(),
    )  # fmt: skip
    os.close(write_end)
    new_id = f"{container.id}-moved"
    try:
        assert _status_byte(read_end, 60) == b"\0", dump.communicate(timeout=60)
        # The source is still serving: the image is already complete and signed.
        code, shown = crgpu_json("inspect", str(image))
        assert code == 0 and shown["trust"] == "this-node" and shown["options"]["lazy_pages"] is True
        started = time.monotonic()
        restore = subprocess.run(
            [sys.executable, "-m", "crgpu", "restore", "--json", "--lazy-pages", "--page-server",
             f"127.0.0.1:{port}", "-i", str(image), new_id],
            capture_output=True, text=True, timeout=180, env=os.environ.copy(),
        )  # fmt: skip
        out, _ = dump.communicate(timeout=120)
        print(
            f"lazy restore answered after {time.monotonic() - started:.2f} s: {json.loads(restore.stdout).get('error')}"
        )
        restored = json.loads(restore.stdout)
        dumped = json.loads(out)
        if restore.returncode == 0:
            assert dump.returncode == 0, dumped
            assert testbed.wait_counter_above(container.bundle, saved) > saved
            return
        # CRIU on this machine could not move the pages: both sides say so, nothing hangs.
        assert restore.returncode == 1 and "lazy-pages" in restored["error"], restored
        assert dump.returncode == 1, dumped
        assert any("Lazy pages transfer FAILED" in line for line in dumped["criu_errors"]), dumped
        assert container.status() == "running"  # the source goes on
        # CRIU's cgroup yard in crgpu's work dir is unmounted (a dozen mounts left per try before)
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        left = [line for line in mounts if f"/{new_id}/restore-" in line]
        assert not left, left[:3]
        raw_code, raw_log = _raw_lazy_migration(runc_container(), short_tmp)
        raw_errors = [line for line in raw_log.splitlines() if "Error" in line]
        assert raw_code != 0 and "Lazy pages transfer FAILED" in raw_log, raw_errors
    finally:
        os.close(read_end)
        if dump.poll() is None:
            dump.kill()
            dump.wait()
        subprocess.run(container.cmd("delete", "--force", new_id), capture_output=True)
