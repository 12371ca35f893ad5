"""Containers an engine owns, and checkpoints that travel: real podman and checkpointctl."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from crgpu.host.errors import ExitCode
from crgpu.host.mounts import unmount
from crgpu.host.netns import new_network_namespace
from tests import testbed
from tests.helpers import crgpu

_names = itertools.count()


def _name() -> str:
    return f"crgpu-p{os.getpid()}-{next(_names)}"


def test_a_stop_checkpoint_of_a_podman_container_is_refused_with_podmans_command(
    podman: testbed.Podman, tmp_path: Path
) -> None:
    name = _name()
    podman.run(name)
    result = crgpu("checkpoint", "-i", str(tmp_path / "img"), name)  # found by its podman name
    assert result.exit_code == ExitCode.PRECONDITION, result.output
    assert f"belongs to podman ({name})" in result.stderr
    assert f"podman container checkpoint {name}" in result.stderr
    assert podman("inspect", "--format", "{{.State.Status}}", name) == "running"
    assert not (tmp_path / "img").exists()


@pytest.mark.parametrize("tty", [False, True], ids=["plain", "terminal"])
def test_a_hand_off_is_restored_by_podman_with_exec_working(podman: testbed.Podman, tty: bool) -> None:
    name = _name()
    # `podman run -t`: the terminal is conmon's to hand back. The counter keeps it open: podman itself
    # cannot restore a -t container whose processes all closed their terminal (seen with 5.4.2).
    podman.run(name, testbed.TTY_COUNTER if tty else testbed.COUNTER, tty=tty)
    saved = podman.wait_count_above(name, 5)
    result = crgpu("checkpoint", "--hand-off", "--json", name)
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, doc
    assert any(f"podman container restore {name}" in note for note in doc["notes"])
    assert podman.wait_status(name, "exited") == "exited"
    # What podman's view hides is said: podman records "checkpointed" only in its own checkpoint.
    shown = podman("inspect", "--format", "{{.State.ExitCode}} {{.State.Checkpointed}}", name)
    assert shown == "137 false"
    assert any("Exited (137), not checkpointed" in note and "podman rm" in note for note in doc["notes"])
    podman("container", "restore", name)
    assert podman("inspect", "--format", "{{.State.Status}}", name) == "running"
    after = podman.wait_count_above(name, saved)  # `podman exec` works: conmon is podman's again
    assert after < saved + 200  # it continued from the saved count; a fresh start counts from 1


def test_a_hand_off_over_podmans_own_checkpoint_gives_a_hint_that_works_when_followed(
    podman: testbed.Podman,
) -> None:
    """Before, the hint said "choose a new --image-path", which --hand-off refuses."""
    name = _name()
    podman.run(name)
    saved_before = podman.wait_count_above(name, 3)
    podman("container", "checkpoint", "--leave-running", name)  # podman's own, left in userdata
    refused = crgpu("checkpoint", "--hand-off", "--json", name)
    doc = json.loads(refused.stdout)
    assert refused.exit_code == 5, doc
    command = doc["hint"].split("`")[1]
    assert command.startswith("rm -r ") and command.endswith("/checkpoint"), command
    subprocess.run(command.split(), check=True, timeout=30)  # follow it
    done = crgpu("checkpoint", "--hand-off", "--json", name)
    assert done.exit_code == 0, done.output
    podman.wait_status(name, "exited")
    podman("container", "restore", name)
    assert podman.wait_count_above(name, saved_before) > saved_before


def test_an_export_is_restored_by_podman_import_and_read_by_checkpointctl(
    podman: testbed.Podman, tmp_path: Path
) -> None:
    checkpointctl = testbed.require_binary(shutil.which("checkpointctl"), "checkpointctl")
    name = _name()
    podman.run(name)
    podman.wait_count_above(name, 5)
    result = crgpu("checkpoint", "--leave-running", "--json", "-i", str(tmp_path / "img"), name)
    assert result.exit_code == 0, result.output
    saved = podman.count(name)
    stats = json.loads(result.stdout)["stats"]
    archive = tmp_path / "web.tar.zst"
    exported = crgpu("export", "--json", "-i", str(tmp_path / "img"), "-o", str(archive))
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["compression"] == "zstd"
    assert archive.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"

    shown = subprocess.run([checkpointctl, "show", str(archive)], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and name in shown.stdout and "Podman" in shown.stdout, shown.stderr
    inspected = subprocess.run(
        [checkpointctl, "inspect", "--stats", "--format", "json", str(archive)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert inspected.returncode == 0, inspected.stderr
    theirs = json.loads(inspected.stdout)[0]["statistics"]
    assert theirs and all(stats[key] == value for key, value in theirs.items()), (theirs, stats)

    podman("rm", "-f", "-t", "0", name)
    podman("container", "restore", "--import", str(archive))
    assert podman("inspect", "--format", "{{.State.Status}}", name) == "running"
    after = podman.wait_count_above(name, saved - 1)
    assert after < saved + 200  # from the checkpoint's count on, not from 1


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_every_compression_is_read_by_checkpointctl(
    podman: testbed.Podman, tmp_path: Path, compression: str
) -> None:
    checkpointctl = testbed.require_binary(shutil.which("checkpointctl"), "checkpointctl")
    name = _name()
    podman.run(name)
    assert crgpu("checkpoint", "-q", "--leave-running", "-i", str(tmp_path / "img"), name).exit_code == 0
    archive = tmp_path / f"web.tar.{compression}"
    assert (
        crgpu(
            "export", "--compression", compression, "-i", str(tmp_path / "img"), "-o", str(archive)
        ).exit_code
        == 0
    )
    shown = subprocess.run([checkpointctl, "show", str(archive)], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and name in shown.stdout, shown.stderr


def test_a_podman_export_is_restored_and_inspected_by_crgpu(podman: testbed.Podman, short_tmp: Path) -> None:
    runc = testbed.require_binary(shutil.which("runc"), "runc")
    name = _name()
    podman.run(name)
    podman.wait_count_above(name, 5)
    archive = short_tmp / "podman.tar.zst"
    podman("container", "checkpoint", "--export", str(archive), name)  # podman's own archive; it stops
    podman("rm", "-f", "-t", "0", name)

    inspected = crgpu("inspect", "--json", str(archive))
    assert inspected.exit_code == 0, inspected.output
    doc = json.loads(inspected.stdout)
    assert (
        doc["format"] == "podman" and doc["container"]["name"] == name and doc["stats"]["pages_written"] > 0
    )

    lower = podman("image", "mount", testbed.PODMAN_IMAGE)
    root, new_id = short_tmp / "root", f"{name}-crgpu"
    work_root = Path(os.environ["CRGPU_WORK_ROOT"])
    try:
        result = crgpu(
            "restore", "--json", "-i", str(archive), "--rootfs", lower, "--root", str(root), new_id
        )
        assert result.exit_code == 0, result.output
        first = testbed.restored_count(runc, root, new_id)
        assert first > 5  # it came back with the count it had, not from 1
        time.sleep(0.3)
        assert testbed.restored_count(runc, root, new_id) > first  # and it runs on
        # Its network namespace was its own (podman's `none`): CRIU restores it, no --netns.
        other = crgpu(
            "restore", "-i", str(archive), "--rootfs", lower, "--root", str(root), "--netns", "/proc/self/ns/net",
            f"{new_id}-2",
        )  # fmt: skip
        assert other.exit_code == ExitCode.PRECONDITION and "drop --netns" in other.stderr, other.output
    finally:
        testbed.drop_restored(runc, root, new_id, work_root)


def test_a_kubernetes_export_of_a_runc_container_is_restored_by_crgpu(
    runc_container: Callable[..., testbed.RuncContainer], short_tmp: Path, tmp_path: Path
) -> None:
    container = runc_container()
    floor = testbed.wait_counter_above(container.bundle, 5)
    image, archive = tmp_path / "img", tmp_path / "k8s.tar.gz"
    done = crgpu("checkpoint", "-q", "--root", str(container.root), "-i", str(image), container.id)
    assert done.exit_code == 0, done.output
    saved = testbed.stopped_counter(container.bundle, floor)
    exported = crgpu(
        "export", "--format", "kubernetes", "--compression", "gzip", "-i", str(image), "-o", str(archive)
    )
    assert exported.exit_code == 0, exported.output
    doc = json.loads(crgpu("inspect", "--json", str(archive)).stdout)
    assert doc["format"] == "kubernetes" and doc["container"]["runtime"] == "io.containerd.runc.v2"
    assert doc["crgpu"]["trust"] == "this-node"
    rootfs = container.bundle / "rootfs"
    root, new_id = short_tmp / "root2", f"{container.id}-k8s"
    work_root = Path(os.environ["CRGPU_WORK_ROOT"])
    try:
        restore = ("restore", "-i", str(archive), "--rootfs", str(rootfs), "--root", str(root), new_id)
        # A bare runc container has no seccomp profile: weaker than an engine's, so it needs trust,
        # refused before anything is unpacked.
        refused = crgpu(*restore)
        assert refused.exit_code == 4 and "without a seccomp profile" in refused.stderr, refused.output
        assert not (work_root / new_id).exists()
        result = crgpu(*restore, "--trust-image")
        assert result.exit_code == 0, result.output
        count = testbed.restored_count(container.runc, root, new_id)
        assert saved <= count < saved + 200
    finally:
        testbed.drop_restored(container.runc, root, new_id, work_root)


def test_a_containerd_container_is_found_kept_running_and_never_stopped_behind_its_back(
    containerd: testbed.Containerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRGPU_RUNC_ROOTS", "/run/containerd/runc/*")
    name = _name()
    bundle = containerd.run(name)
    testbed.wait_counter_above(bundle, 3)
    refused = crgpu("checkpoint", "-i", str(tmp_path / "stop"), name)
    assert refused.exit_code == ExitCode.PRECONDITION, refused.output
    assert (
        "belongs to containerd" in refused.stderr
        and f"ctr -n default task checkpoint {name}" in refused.stderr
    )
    assert not (tmp_path / "stop").exists()
    kept = crgpu("checkpoint", "--json", "--leave-running", "-i", str(tmp_path / "img"), name)
    assert kept.exit_code == 0, kept.output
    manifest = json.loads((tmp_path / "img" / "crgpu.json").read_text())
    engine = manifest["container"]["engine"]
    assert (engine["kind"], engine["name"], engine["namespace"]) == ("containerd", name, "default")
    assert containerd.task_status(name) == "RUNNING"
    before = testbed.read_counter(bundle)
    testbed.wait_counter_above(bundle, before)  # still counting


def test_a_podman_bridge_export_is_restored_by_crgpu_with_a_network_and_files_of_its_own(
    podman: testbed.Podman, short_tmp: Path
) -> None:
    """podman's own export of a container on its bridge: CRIU recorded the namespace as external.
    crgpu restores it beside the live original (a new namespace, private hosts files and /dev/shm,
    no --trust-image), and again once the original is gone."""
    runc = testbed.require_binary(shutil.which("runc"), "runc")
    name = _name()
    podman.run(name, network="bridge")
    podman.wait_count_above(name, 5)
    archive = short_tmp / "bridge.tar"
    podman("container", "checkpoint", "--leave-running", "--export", str(archive), name)
    saved = podman.count(name)
    lower = podman("image", "mount", testbed.PODMAN_IMAGE)
    root, work_root = short_tmp / "root", Path(os.environ["CRGPU_WORK_ROOT"])
    first, second, given = f"{name}-a", f"{name}-b", short_tmp / "netns"
    try:
        done = crgpu("restore", "--json", "-i", str(archive), "--rootfs", lower, "--root", str(root), first)
        assert done.exit_code == 0, done.output
        assert any("a new network namespace of its own" in note for note in json.loads(done.stdout)["notes"])
        copy, original = testbed.restored_pid(runc, root, first), podman.pid(name)
        for shared in testbed.PRIVATE:
            assert not testbed.same_file(shared, copy, original), shared
        count = testbed.restored_count(runc, root, first)
        assert saved - 40 <= count  # the saved state, give or take the checkpoint's own time
        time.sleep(0.3)
        assert testbed.restored_count(runc, root, first) > count
        testbed.drop_restored(runc, root, first, work_root)

        podman("rm", "-f", "-t", "0", name)  # the original, its namespace and its files are gone
        new_network_namespace(given)  # as `ip netns add` or a CNI plugin would make one
        again = crgpu(
            "restore",
            "-i",
            str(archive),
            "--rootfs",
            lower,
            "--root",
            str(root),
            "--netns",
            str(given),
            second,
        )
        assert again.exit_code == 0, again.output
        assert testbed.restored_count(runc, root, second) > 3
        assert (
            os.stat(f"/proc/{testbed.restored_pid(runc, root, second)}/ns/net").st_ino == given.stat().st_ino
        )
    finally:
        testbed.drop_restored(runc, root, first, work_root)
        testbed.drop_restored(runc, root, second, work_root)
        unmount(given, detach=True)


def test_podman_copies_of_a_bridge_container_export_each_get_a_network_of_their_own(
    podman: testbed.Podman, tmp_path: Path
) -> None:
    """`podman container restore --import --name COPY` of crgpu's export, twice: each copy in a new
    namespace with its own IP (before, podman put every copy into the source's namespace)."""
    name = _name()
    podman.run(name, network="bridge")
    podman.wait_count_above(name, 5)
    image, archive = tmp_path / "img", tmp_path / "bridge.tar.zst"
    assert crgpu("checkpoint", "-q", "--leave-running", "-i", str(image), name).exit_code == 0
    exported = crgpu("export", "-i", str(image), "-o", str(archive))
    assert exported.exit_code == 0, exported.output
    copies = [f"{name}-copy{i}" for i in (1, 2)]
    for copy in copies:
        podman.names.append(copy)
        podman("container", "restore", "--import", str(archive), "--name", copy)
    pids = [podman.pid(item) for item in (name, *copies)]
    for one, other in itertools.combinations(pids, 2):
        assert not testbed.same_file("ns/net", one, other)
    addresses = [
        podman("inspect", "--format", "{{.NetworkSettings.IPAddress}}", item) for item in (name, *copies)
    ]
    assert all(addresses) and len(set(addresses)) == 3, addresses
    for copy in copies:
        podman.wait_count_above(copy, podman.count(copy))
