"""Real round trips through runc + CRIU: Debian's runc 1.1 and a runc 1.3+ (CRGPU_RUNC)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import testbed
from tests.helpers import crgpu, crgpu_json

LINK_REMAP_WORKLOAD = (
    "exec </dev/null >/tmp/log 2>&1; echo x > /tmp/a; ln /tmp/a /tmp/b; exec 3</tmp/a; rm /tmp/a; "
    "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done"
)

Start = Callable[..., testbed.RuncContainer]


def test_checkpoint_then_restore_continues_the_counter(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container()
    floor = testbed.wait_counter_above(container.bundle, 10)
    image = short_tmp / "img"

    code, doc = crgpu_json("checkpoint", "--root", str(container.root), "-i", str(image), container.id)

    assert code == 0, doc
    assert doc["ok"] is True and doc["runtime"] == "runc" and doc["image_path"] == str(image)
    assert (image / "crgpu.json").is_file()
    assert doc["stats"]["frozen_time"] > 0 and doc["stats"]["pages_written"] > 0
    assert doc["stats"]["runtime_checkpoint_duration"] > doc["stats"]["frozen_time"]
    # sizes and a rate, as the terminal shows them (before: only pages_written, a page count)
    sizes = doc["sizes"]
    assert sizes["pages_bytes"] >= doc["stats"]["pages_written"] * 4096 > 0
    assert sizes["image_bytes"] > sizes["pages_bytes"] and sizes["image_bytes_per_s"] > 0
    assert container.status() is None  # runc removes a container it checkpointed without --leave-running
    saved = testbed.stopped_counter(container.bundle, floor)
    time.sleep(0.3)
    assert testbed.stopped_counter(container.bundle, floor) == saved  # nothing runs any more

    code, doc = crgpu_json("restore", "--image-path", str(image))  # everything else from crgpu.json

    assert code == 0, doc
    assert doc["container_status"] == "running"
    assert doc["stats"]["restore_time"] > 0 and doc["stats"]["pages_restored"] > 0
    assert doc["sizes"]["image_bytes"] > 0 and doc["sizes"]["image_bytes_per_s"] > 0
    after = testbed.wait_counter_above(container.bundle, saved)
    # Continued from the saved value, not restarted from 1.
    assert saved < after < saved + 40
    manifest = json.loads((image / "crgpu.json").read_text())
    assert manifest["container"]["id"] == container.id
    assert manifest["stats"]["frozen_time"] > 0
    assert manifest["runtime"]["root"] == str(container.root)


def test_inspect_shows_stats_host_and_sizes_without_a_runtime(
    runc_container: Start, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = runc_container()
    testbed.wait_counter_above(container.bundle, 2)
    image = short_tmp / "img"
    code, doc = crgpu_json(
        "checkpoint", "--leave-running", "--root", str(container.root), "-i", str(image), container.id
    )
    assert code == 0, doc
    monkeypatch.setenv("PATH", "/nonexistent")  # as on a machine with no runtime installed
    monkeypatch.delenv("CRGPU_RUNC")
    code, shown = crgpu_json("inspect", str(image))
    assert code == 0
    assert shown["complete"] is True and shown["stats"]["frozen_time"] == doc["stats"]["frozen_time"] > 0
    assert shown["host"]["kernel"] and shown["host"]["arch"] and shown["host"]["criu_version"]
    assert shown["sizes"]["total_bytes"] > shown["sizes"]["memory_pages_bytes"] > 0
    plain = crgpu("inspect", str(image)).stdout
    assert "frozen_time" in plain and f"id {container.id}" in plain


def test_leave_running_keeps_the_container_going(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container()
    before = testbed.wait_counter_above(container.bundle, 3)
    code, doc = crgpu_json(
        "checkpoint",
        "--leave-running",
        "--root",
        str(container.root),
        "-i",
        str(short_tmp / "i"),
        container.id,
    )
    assert code == 0, doc
    assert container.status() == "running"
    testbed.wait_counter_above(container.bundle, before + 5)


def test_a_restore_onto_a_running_id_hints_a_command_that_works_when_followed(
    runc_container: Start, short_tmp: Path
) -> None:
    """The hint once said `runc delete ID`, which runc refuses for a running container."""
    container = runc_container()
    testbed.wait_counter_above(container.bundle, 3)
    image = short_tmp / "img"
    code, doc = crgpu_json(
        "checkpoint", "--leave-running", "--root", str(container.root), "-i", str(image), container.id
    )
    assert code == 0, doc
    saved = testbed.wait_counter_above(container.bundle, 0)
    code, doc = crgpu_json("restore", "-i", str(image))
    assert code == 4 and "already exists" in doc["error"], doc
    command = doc["hint"].split("`")[1].split()
    assert command[0] == "runc"
    done = subprocess.run(
        [os.environ["CRGPU_RUNC"], *command[1:]], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr  # the hint, followed, removes the running container
    code, doc = crgpu_json("restore", "-i", str(image))
    assert code == 0, doc
    assert testbed.wait_counter_above(container.bundle, saved) > saved


def test_link_remap_is_needed_and_works(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container(LINK_REMAP_WORKLOAD)
    testbed.wait_counter_above(container.bundle, 3)

    failed = crgpu("checkpoint", "--root", str(container.root), "-i", str(short_tmp / "no"), container.id)
    assert failed.exit_code == 1
    assert "Can't create link remap for /tmp/a" in failed.stderr
    assert "--link-remap" in failed.stderr.split("hint:")[1]
    assert container.status() == "running"
    testbed.wait_counter_above(container.bundle, testbed.read_counter(container.bundle))

    image = short_tmp / "yes"
    floor = testbed.read_counter(container.bundle)
    code, doc = crgpu_json(
        "checkpoint", "--link-remap", "--root", str(container.root), "-i", str(image), container.id
    )
    assert code == 0, doc
    saved = testbed.stopped_counter(container.bundle, floor)
    code, doc = crgpu_json("restore", "-i", str(image))
    assert code == 0, doc
    assert saved < testbed.wait_counter_above(container.bundle, saved) < saved + 40


# Holds the growing file open read-write (CRIU then records its size and checks it at restore;
# not for O_APPEND|O_WRONLY, which it takes for a log) and writes without pause.
GROWING = (
    "exec </dev/null >/tmp/log 2>&1 3<>/tmp/grows; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; "
    "echo line-$i >&3; done"
)


def test_a_leave_running_checkpoint_takes_the_writable_layer_as_the_dump_saw_it(
    runc_container: Start, short_tmp: Path
) -> None:
    """A container on an overlay root that keeps appending to a file: the layer is read while the
    container is still paused after the dump (before, it was read after the resume, and the
    archive's restore failed: CRIU's `File tmp/grows has bad size`)."""
    container = runc_container(GROWING, overlay=True)
    testbed.wait_counter_above(container.bundle, 5)
    image, archive = short_tmp / "img", short_tmp / "k8s.tar"
    code, doc = crgpu_json(
        "checkpoint", "--leave-running", "--root", str(container.root), "-i", str(image), container.id
    )
    assert code == 0, doc
    assert container.status() == "running"  # resumed: never left paused
    assert doc["stats"]["paused_time"] >= doc["stats"]["frozen_time"] > 0
    print(f"paused {doc['stats']['paused_time']} us, CRIU frozen {doc['stats']['frozen_time']} us")
    assert any("writable layer recorded" in note for note in doc["notes"]), doc["notes"]
    exported = crgpu(
        "export", "--format", "kubernetes", "--compression", "none", "-i", str(image), "-o", str(archive)
    )
    assert exported.exit_code == 0, exported.output
    root, copy = short_tmp / "root2", f"{container.id}-copy"
    work_root = Path(os.environ["CRGPU_WORK_ROOT"])
    try:
        restored = crgpu(
            "restore", "-i", str(archive), "--rootfs", str(container.bundle / "lower"), "--root", str(root),
            "--trust-image", copy,
        )  # fmt: skip
        assert restored.exit_code == 0, restored.output
        assert testbed.restored_count(container.runc, root, copy) > 0
    finally:
        testbed.drop_restored(container.runc, root, copy, work_root)


def test_a_failed_leave_running_dump_of_a_paused_for_layer_container_resumes_it(
    runc_container: Start, short_tmp: Path
) -> None:
    container = runc_container(LINK_REMAP_WORKLOAD, overlay=True)
    testbed.wait_counter_above(container.bundle, 2)
    where = ("--root", str(container.root), "-i", str(short_tmp / "f"))
    code, doc = crgpu_json("checkpoint", "--leave-running", *where, container.id)
    assert code == 1 and "link remap" in doc["error"], doc
    assert container.status() == "running" and doc["container_status"] == "running"
    testbed.wait_counter_above(container.bundle, testbed.read_counter(container.bundle))


def test_failure_json_names_the_criu_error_and_log(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container(LINK_REMAP_WORKLOAD)
    testbed.wait_counter_above(container.bundle, 2)
    code, doc = crgpu_json(
        "checkpoint", "--root", str(container.root), "-i", str(short_tmp / "f"), container.id
    )
    assert code == 1
    assert doc["ok"] is False
    assert "link remap" in doc["error"]
    assert "--link-remap" in doc["hint"]
    assert any("Use link-remap option" in line for line in doc["criu_errors"])
    # The partial image is gone; its logs survive elsewhere and their path is given.
    assert not (short_tmp / "f").exists() and doc["removed_image"] is True
    log = Path(doc["log_path"])
    assert log.name == "dump.log" and "Can't create link remap" in log.read_text()
    assert (log.parent / "crgpu-checkpoint-output.log").is_file()
    assert doc["container_status"] == "running"


def test_keep_failed_keeps_the_partial_image(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container(LINK_REMAP_WORKLOAD)
    testbed.wait_counter_above(container.bundle, 2)
    image = short_tmp / "kept"
    code, doc = crgpu_json(
        "checkpoint", "--keep-failed", "--root", str(container.root), "-i", str(image), container.id
    )
    assert code == 1
    assert doc["log_path"] == str(image / "dump.log") and (image / "dump.log").is_file()
    assert not (image / "crgpu.json").exists()  # never a half image with a manifest


def test_checkpoint_of_a_stopped_container_is_refused(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container("exec </dev/null >/dev/null 2>&1; true")
    for _ in range(100):
        if container.status() == "stopped":
            break
        time.sleep(0.05)
    result = crgpu("checkpoint", "--root", str(container.root), "-i", str(short_tmp / "s"), container.id)
    assert result.exit_code == 4
    assert "stopped, not running" in result.stderr
    assert not (short_tmp / "s").exists()


def test_restore_onto_an_existing_id_is_refused(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container()
    image = short_tmp / "img"
    code, _ = crgpu_json(
        "checkpoint", "--leave-running", "--root", str(container.root), "-i", str(image), container.id
    )
    assert code == 0
    result = crgpu("restore", "-i", str(image))
    assert result.exit_code == 4
    assert "already exists" in result.stderr


def test_tcp_close_round_trip_hands_criu_a_config_file(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container()
    testbed.wait_counter_above(container.bundle, 2)
    image = short_tmp / "img"
    code, doc = crgpu_json(
        "checkpoint", "--tcp-close", "--root", str(container.root), "-i", str(image), container.id
    )
    assert code == 0, doc
    assert "--tcp-close" not in doc["argv"]
    assert doc["env"] == {"CRIU_CONFIG_FILE": str(image / "crgpu-criu-dump.conf")}
    assert "tcp-close" in (image / "crgpu-criu-dump.conf").read_text().splitlines()
    # CRIU records tcp-close in the image: a restore without it fails, proving the dump got it.
    code, doc = crgpu_json("restore", "-i", str(image))
    assert code == 1 and "Need to set the --tcp-close options." in doc["error"]
    assert "--tcp-close" in doc["hint"] and container.status() is None
    code, doc = crgpu_json("restore", "--tcp-close", "-i", str(image))
    assert code == 0, doc
    config = Path(doc["env"]["CRIU_CONFIG_FILE"])
    assert config.parent == Path(doc["work_path"]) and "tcp-close" in config.read_text().splitlines()
    assert container.status() == "running"


def test_a_criu_that_does_not_start_is_named_in_the_headline(
    runc_container: Start, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = runc_container()
    bad = short_tmp / "bad.conf"
    bad.write_text("no-such-criu-option\n")
    monkeypatch.setenv("CRIU_CONFIG_FILE", str(bad))
    code, doc = crgpu_json(
        "checkpoint",
        "--leave-running",
        "--root",
        str(container.root),
        "-i",
        str(short_tmp / "i"),
        container.id,
    )
    assert code == 1
    # runc's words after the cause depend on a race (read: reset by peer, or write: broken pipe).
    assert doc["error"].startswith(
        f"runc {doc['runtime_version']} checkpoint failed (exit 1): CRIU version check failed"
    )
    assert "criu check" in doc["hint"] and "CRIU_CONFIG_FILE" in doc["hint"]
    assert container.status() == "running"


TTY_COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; echo tick $i; sleep 0.05; done"


def test_a_terminal_container_round_trips_with_a_console_socket(
    runc_container: Start, short_tmp: Path
) -> None:
    console = testbed.ConsoleReceiver(short_tmp / "console.sock")
    try:
        container = runc_container(TTY_COUNTER, console_socket=console.path)
        saved = testbed.wait_counter_above(container.bundle, 3)
        assert b"tick" in console.output  # the process writes to its terminal
        image = short_tmp / "img"
        code, doc = crgpu_json("checkpoint", "--root", str(container.root), "-i", str(image), container.id)
        assert code == 0, doc
        refused = crgpu("restore", "-i", str(image))
        assert refused.exit_code == 4 and "--console-socket" in refused.stderr
        assert container.status() is None
        before = len(console.masters)
        code, doc = crgpu_json("restore", "-i", str(image), "--console-socket", str(console.path))
        assert code == 0, doc
        assert doc["argv"][doc["argv"].index("--console-socket") + 1] == str(console.path)
        assert len(console.masters) == before + 1  # runc handed the restored terminal over
        after = testbed.wait_counter_above(container.bundle, saved)
        assert after > saved
        shown = len(console.output)
        deadline = time.monotonic() + 5
        while len(console.output) == shown:  # it writes to its new terminal
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        console.close()


def test_console_socket_must_be_a_socket(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container()
    image = short_tmp / "img"
    code, doc = crgpu_json("checkpoint", "--root", str(container.root), "-i", str(image), container.id)
    assert code == 0, doc
    (short_tmp / "not-a-socket").write_text("")
    result = crgpu("restore", "-i", str(image), "--console-socket", str(short_tmp / "not-a-socket"))
    assert result.exit_code == 4 and "not a unix socket" in result.stderr
    assert container.status() is None


def test_parent_path_as_runc_does_it(runc_container: Start, short_tmp: Path) -> None:
    """A checkpoint on top of an earlier image (runc's checkpoint.bats): where the kernel has no
    soft-dirty tracking, raw runc fails and crgpu fails the same way and says why."""
    container = runc_container()
    saved = testbed.wait_counter_above(container.bundle, 3)
    base = short_tmp / "ck"
    code, doc = crgpu_json(
        "checkpoint",
        "--leave-running",
        "--root",
        str(container.root),
        "-i",
        str(base / "parent"),
        container.id,
    )
    assert code == 0, doc
    raw = subprocess.run(
        container.cmd(
            "checkpoint",
            "--leave-running",
            "--parent-path",
            "../parent",
            "--image-path",
            str(base / "raw"),
            container.id,
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    code, doc = crgpu_json(
        "checkpoint",
        "--parent-path",
        "../parent",
        "--root",
        str(container.root),
        "-i",
        str(base / "child"),
        container.id,
    )
    assert doc["argv"][-4:] == ["--parent-path", "../parent", "--", container.id]
    if raw.returncode != 0:
        raw_log = (base / "raw" / "dump.log").read_text()
        assert "Tracking memory is not available" in raw_log
        assert code == 1
        assert "Tracking memory is not available" in doc["error"]
        assert "soft-dirty" in doc["hint"] and "--parent-path" in doc["hint"]
        assert container.status() == "running"
        return
    assert code == 0, doc
    code, doc = crgpu_json("restore", "-i", str(base / "child"))
    assert code == 0, doc
    assert testbed.wait_counter_above(container.bundle, saved) > saved


def test_runtime_debug_reaches_runc(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container()
    testbed.wait_counter_above(container.bundle, 2)
    image = short_tmp / "img"
    code, doc = crgpu_json(
        "checkpoint",
        "--runtime-debug",
        "--leave-running",
        "--root",
        str(container.root),
        "-i",
        str(image),
        container.id,
    )
    assert code == 0, doc
    assert doc["argv"][1] == "--debug"
    assert "level=debug" in (image / "crgpu-checkpoint-output.log").read_text()
