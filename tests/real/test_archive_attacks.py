"""Issue 21's archive attacks that need the real runtimes: an archive made from a real runc
container's checkpoint, its spec.dump then edited as an attacker would, restored by crgpu."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests import testbed
from tests.archives import PODMAN_SPEC
from tests.criu_forge import decode, edit_entries, encode, map_members
from tests.helpers import crgpu, crgpu_json, lock_held_elsewhere

Start = Callable[..., testbed.RuncContainer]


def _archive(
    container: testbed.RuncContainer,
    tmp: Path,
    edit: Callable[[dict[str, Any]], None],
    drop: Callable[[str], bool] = lambda _name: False,
    forge: Callable[[str, bytes], bytes] = lambda _name, data: data,
) -> Path:
    """The container's checkpoint as a plain kubelet-format archive, with its spec.dump edited,
    the members `drop` names left out and every other file's content passed through `forge`."""
    testbed.wait_counter_above(container.bundle, 2)
    image, plain = tmp / "img", tmp / "plain.tar"
    done = crgpu("checkpoint", "-q", "--root", str(container.root), "-i", str(image), container.id)
    assert done.exit_code == 0, done.output
    exported = crgpu(
        "export", "--format", "kubernetes", "--compression", "none", "-i", str(image), "-o", str(plain)
    )
    assert exported.exit_code == 0, exported.output
    forged = tmp / "forged.tar"
    with tarfile.open(plain) as src, tarfile.open(forged, "w", format=tarfile.PAX_FORMAT) as out:
        for member in src:
            if drop(member.name):
                continue
            data = src.extractfile(member).read() if member.isreg() else None  # type: ignore[union-attr]
            if member.name == "spec.dump":
                spec = json.loads(data or b"{}")
                edit(spec)
                data = json.dumps(spec).encode()
            elif data is not None:
                data = forge(member.name, data)
            if data is not None:
                member.size = len(data)
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    return forged


def _forge_images(
    wanted: Callable[[str], bool], edit: Callable[[list[bytes]], list[bytes]]
) -> Callable[[str, bytes], bytes]:
    """A `forge` for _archive: the entries of the CRIU images `wanted` names rewritten by `edit`."""
    return lambda name, data: edit_entries(data, 2, edit) if wanted(name) else data


def _look_default(spec: dict[str, Any]) -> None:
    """What an attacker does to a spec: the engines' default capabilities, own namespaces and
    podman's seccomp profile, so that the spec alone passes every check."""
    podman = json.loads(PODMAN_SPEC.read_text())
    spec["process"]["capabilities"] = podman["process"]["capabilities"]
    spec["linux"]["namespaces"] = podman["linux"]["namespaces"]
    spec["linux"]["seccomp"] = podman["linux"]["seccomp"]


def _restore(archive: Path, container: testbed.RuncContainer, tmp: Path, *extra: str) -> Any:
    return crgpu(
        "restore", "-i", str(archive), "--rootfs", str(container.bundle / "rootfs"),
        "--root", str(tmp / "root2"), f"{container.id}-copy", *extra,
    )  # fmt: skip


@contextmanager
def _trusted_copy(archive: Path, container: testbed.RuncContainer, tmp: Path) -> Iterator[int]:
    """The forged archive restored with --trust-image (what a refusal prevents): its PID."""
    root, copy = tmp / "root2", f"{container.id}-copy"
    try:
        trusted = _restore(archive, container, tmp, "--trust-image")
        assert trusted.exit_code == 0, trusted.output
        yield testbed.restored_pid(container.runc, root, copy)
    finally:
        testbed.drop_restored(container.runc, root, copy, Path(os.environ["CRGPU_WORK_ROOT"]))


def _refused(archive: Path, container: testbed.RuncContainer, tmp: Path, *extra: str) -> str:
    """The forged archive's restore, refused (exit 4): its error, on one line."""
    refused = _restore(archive, container, tmp, *extra)
    assert refused.exit_code == 4, refused.output
    return " ".join(refused.stderr.split())


def _nothing_left(container: testbed.RuncContainer) -> None:
    work = Path(os.environ["CRGPU_WORK_ROOT"]) / f"{container.id}-copy"
    assert not work.exists() or not any(work.iterdir()), list(work.rglob("*"))[:5]


def test_capabilities_criu_restores_are_checked_not_only_the_specs(
    runc_container: Start, short_tmp: Path
) -> None:
    """A container with CAP_SYS_ADMIN, its spec edited down to the defaults: CRIU would restore
    the process with CAP_SYS_ADMIN and without its (absent) seccomp filter."""

    def admin(spec: dict[str, Any]) -> None:
        for kind in ("bounding", "effective", "permitted"):
            spec["process"]["capabilities"][kind].append("CAP_SYS_ADMIN")

    container = runc_container(spec_change=admin)
    forged = _archive(container, short_tmp, _look_default)
    refused = _restore(forged, container, short_tmp)
    assert refused.exit_code == 4, refused.output
    assert "CRIU's images restore privileges beyond the engines' defaults: CAP_SYS_ADMIN" in refused.stderr
    assert "without a seccomp filter" in refused.stderr
    _nothing_left(container)


def test_a_seccomp_filter_that_lets_the_refused_calls_through_is_found(
    runc_container: Start, short_tmp: Path
) -> None:
    """A container under a filter that refuses only `kexec_load`, its spec claiming podman's
    profile: CRIU restores the filter of its images, not the spec's, so the filter's presence is
    not enough; it is run on the calls the engines refuse."""

    def weak(spec: dict[str, Any]) -> None:
        spec["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
            "syscalls": [{"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}],
        }

    container = runc_container(spec_change=weak)
    forged = _archive(container, short_tmp, _look_default)
    said = _refused(forged, container, short_tmp)
    assert "CRIU's images restore a seccomp filter that lets through" in said, said
    assert "bpf" in said and "without a seccomp filter" not in said
    _nothing_left(container)


def test_criu_images_that_leave_proc_sys_writable_are_refused(runc_container: Start, short_tmp: Path) -> None:
    """The read-only /proc/sys mount dropped from CRIU's mountpoints image of a container whose
    spec (runc's default) has it: runc does not apply readonlyPaths at restore, CRIU mounts what
    its images list, so the copy would write this host's sysctls (kernel.core_pattern: a program
    the host runs as root)."""

    drop_proc_sys = _forge_images(
        lambda name: name.startswith("checkpoint/mountpoints-"),
        lambda entries: [e for e in entries if b"/proc/sys" not in e],
    )
    container = runc_container()
    forged = _archive(container, short_tmp, _look_default, forge=drop_proc_sys)
    said = _refused(forged, container, short_tmp)
    assert "CRIU's images leave '/proc/sys' writable (the engines make it read-only)" in said, said
    _nothing_left(container)
    # What the refusal prevents: trusted, the copy runs without the read-only /proc/sys.
    with _trusted_copy(forged, container, short_tmp) as pid:
        table = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        assert not any(line.split()[4] == "/proc/sys" for line in table)
        assert any(line.split()[4] == "/proc/irq" for line in table)  # the rest as the image says


def test_a_host_network_namespace_in_criu_images_is_found(runc_container: Start, short_tmp: Path) -> None:
    """A container in the host's network namespace, its spec edited to claim one of its own:
    CRIU creates only the namespaces its images differ in, so the copy would join the host's."""

    def host_network(spec: dict[str, Any]) -> None:
        spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network"]

    container = runc_container(spec_change=host_network)
    forged = _archive(container, short_tmp, _look_default)
    refused = _restore(forged, container, short_tmp)
    assert refused.exit_code == 4, refused.output
    assert "CRIU's images put the container into this host's network namespace" in refused.stderr
    _nothing_left(container)


def test_a_task_criu_would_put_in_the_hosts_root_cgroup_is_refused(
    runc_container: Start, short_tmp: Path
) -> None:
    """cgroup.img's task paths moved to "/": CRIU renames only paths inside the image's top cgroup
    into the copy's own, so the restored process would run in the host's root cgroup, outside
    every memory, pids and device limit of its spec."""

    to_root = _forge_images(
        lambda name: name == "checkpoint/cgroup.img",
        lambda entries: [map_members(entries[0], lambda _c, _p: "/")],
    )
    container = runc_container()
    forged = _archive(container, short_tmp, _look_default, forge=to_root)
    said = _refused(forged, container, short_tmp)
    assert "CRIU's images put processes or cgroups outside the container's cgroup:" in said, said
    assert "cgroup '/'" in said, said
    assert "--manage-cgroups-mode full" not in said  # soft: CRIU leaves the copy's own cgroup as runc made it
    full = _restore(forged, container, short_tmp, "--manage-cgroups-mode", "full")
    assert full.exit_code == 4, full.output
    assert "--manage-cgroups-mode full sets the container's cgroup limits and device rules" in full.stderr
    assert "devices.list" in full.stderr
    _nothing_left(container)
    # What the refusal prevents: trusted, CRIU restores the copy into the host's root cgroups.
    with _trusted_copy(forged, container, short_tmp) as pid:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        assert any(line.split(":", 2)[1:] == ["pids", "/"] for line in lines), lines


def test_a_child_task_in_the_hosts_network_namespace_is_found(runc_container: Start, short_tmp: Path) -> None:
    """A child's ids-PID.img given the dumping CRIU's network namespace ID (inventory.img), the
    root task's left alone: CRIU puts that child into the restoring CRIU's namespace, the host's."""
    forged_ids: list[str] = []

    def host_net_for_child(name: str, data: bytes) -> bytes:
        if not name.startswith("checkpoint/ids-") or name == "checkpoint/ids-1.img":
            return data
        inventory = (short_tmp / "img" / "inventory.img").read_bytes()  # _archive's checkpoint
        root_ids = dict(decode(inventory[8:]))[3]
        assert isinstance(root_ids, bytes)
        host_net = dict(decode(root_ids))[6]
        forged_ids.append(name)
        return edit_entries(
            data, 2, lambda entries: [encode([*(f for f in decode(entries[0]) if f[0] != 6), (6, host_net)])]
        )

    container = runc_container(testbed.COUNTER.replace("2>&1; ", "2>&1; sleep 1000 & ", 1))
    forged = _archive(container, short_tmp, _look_default, forge=host_net_for_child)
    assert forged_ids  # the sleeping child's
    said = _refused(forged, container, short_tmp)
    assert "CRIU's images put the container into this host's network namespace" in said, said
    _nothing_left(container)


def test_a_criu_config_named_by_an_annotation_never_runs(runc_container: Start, short_tmp: Path) -> None:
    """org.criu.config in spec.dump names a CRIU config that runs an action script as root at
    every restore stage. Even with --trust-image the annotation never reaches runc."""
    marker = short_tmp / "pwned"
    script = short_tmp / "x.sh"
    script.write_text(f'#!/bin/sh\necho "$CRTOOLS_SCRIPT_ACTION" >> {marker}\n')
    script.chmod(0o755)
    conf = short_tmp / "zz.conf"
    conf.write_text(f"action-script {script}\n")

    def annotate(spec: dict[str, Any]) -> None:
        spec.setdefault("annotations", {})["org.criu.config"] = str(conf)

    container = runc_container()
    forged = _archive(container, short_tmp, annotate)
    root, copy = short_tmp / "root2", f"{container.id}-copy"
    work_root = Path(os.environ["CRGPU_WORK_ROOT"])
    result = _restore(forged, container, short_tmp, "--trust-image", "--json")
    try:
        assert result.exit_code == 0, result.output
        assert not marker.exists(), marker.read_text()  # CRIU ran no action script
        doc = json.loads(result.stdout)
        assert any("'org.criu.config'" in note for note in doc["notes"]), doc["notes"]
        (config,) = work_root.glob(f"{copy}/import-*/bundle/config.json")
        assert "org.criu.config" not in json.loads(config.read_text()).get("annotations", {})
        # It restored and counts on (the stopped original's file may be caught mid-write: not read).
        assert testbed.restored_count(container.runc, root, copy) > 0
    finally:
        testbed.drop_restored(container.runc, root, copy, work_root)


def test_a_copy_never_runs_in_the_bundle_of_a_live_container(runc_container: Start, short_tmp: Path) -> None:
    """restore -i IMAGE --root R NEW-ID of a container that still runs: the image names the live
    container's bundle, and the copy would share its root filesystem, cgroup and network."""
    container = runc_container()
    testbed.wait_counter_above(container.bundle, 2)
    image = short_tmp / "img"
    done = crgpu(
        "checkpoint", "-q", "--leave-running", "--root", str(container.root), "-i", str(image), container.id
    )
    assert done.exit_code == 0, done.output
    copy_root, copy_id = short_tmp / "root2", f"{container.id}-copy"
    refused = crgpu("restore", "-i", str(image), "--root", str(copy_root), copy_id)
    assert refused.exit_code == 4, refused.output
    assert f"that of container {container.id!r}" in refused.stderr and "crgpu export" in refused.stderr
    assert testbed.RuncContainer(container.runc, copy_root, container.bundle, copy_id).status() is None
    before = testbed.read_counter(container.bundle)
    assert testbed.wait_counter_above(container.bundle, before) > before  # the original counts on alone


def test_a_failed_archive_restore_leaves_nothing_behind_and_the_id_free(
    runc_container: Start, short_tmp: Path
) -> None:
    """CRIU fails (the pages are missing): no overlay stays mounted, nothing unpacked stays on
    disk, runc keeps no state dir for the ID, and the next restore under that ID works."""
    container = runc_container()
    damaged = _archive(container, short_tmp, lambda _spec: None, drop=lambda name: "/pages-" in name)
    intact = short_tmp / "plain.tar"
    root, copy = short_tmp / "root2", f"{container.id}-copy"
    work_root = Path(os.environ["CRGPU_WORK_ROOT"])
    try:
        failed = _restore(damaged, container, short_tmp, "--trust-image")
        assert failed.exit_code == 1, failed.output
        assert not list(work_root.glob(f"{copy}/import-*")), list(work_root.rglob("*"))[:5]
        mounts = Path("/proc/self/mountinfo").read_text()
        assert str(work_root / copy) not in mounts and str(root / copy) not in mounts
        assert not (root / copy).exists()
        again = _restore(intact, container, short_tmp, "--trust-image")
        assert again.exit_code == 0, again.output
        assert "crgpu gc" in again.output  # where the unpacked files stay is said
    finally:
        testbed.drop_restored(container.runc, root, copy, work_root)


def test_the_lock_is_taken_before_anything_is_unpacked(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container()
    archive = _archive(container, short_tmp, lambda _spec: None)
    root, copy = short_tmp / "root2", f"{container.id}-copy"
    with lock_held_elsewhere(root, copy):
        busy = _restore(archive, container, short_tmp, "--trust-image")
        assert busy.exit_code == 6, busy.output
        assert not (Path(os.environ["CRGPU_WORK_ROOT"]) / copy).exists()  # the loser unpacked nothing


def test_gc_takes_back_an_import_once_its_container_is_gone(runc_container: Start, short_tmp: Path) -> None:
    container = runc_container()
    archive = _archive(container, short_tmp, lambda _spec: None)
    root, copy = short_tmp / "root2", f"{container.id}-copy"
    work_root = Path(os.environ["CRGPU_WORK_ROOT"])
    try:
        restored = _restore(archive, container, short_tmp, "--trust-image")
        assert restored.exit_code == 0, restored.output
        (imported,) = work_root.glob(f"{copy}/import-*")
        code, kept = crgpu_json("gc")
        assert code == 0 and [i["path"] for i in kept["kept"]] == [str(imported)] and kept["removed"] == []
        assert testbed.restored_count(container.runc, root, copy) > 0  # the live copy was left alone
        subprocess.run([container.runc, "--root", str(root), "delete", "--force", copy], check=True)
        code, planned = crgpu_json("gc", "--dry-run")
        assert code == 0 and [i["path"] for i in planned["removed"]] == [str(imported)] and imported.exists()
        code, done = crgpu_json("gc")
        assert code == 0 and done["freed_bytes"] > 0, done
        assert not imported.exists() and str(imported) not in Path("/proc/self/mountinfo").read_text()
    finally:
        testbed.drop_restored(container.runc, root, copy, work_root)


def test_an_archive_of_a_container_holding_a_zombie_restores(runc_container: Start, short_tmp: Path) -> None:
    """CRIU writes a zombie's thread list uninitialised (a thread 109393408 was seen): the image
    check reads a zombie's core alone, as CRIU's restore does (CI once failed on such a podman
    container's archive)."""
    from crgpu.criu.images import read_grants

    container = runc_container(script="exec </dev/null >/tmp/log 2>&1; (sleep 0.01) & exec sleep 1000")
    time.sleep(0.5)  # the child has exited: a zombie no one reaps
    image, archive = short_tmp / "img", short_tmp / "z.tar"
    done = crgpu("checkpoint", "-q", "--root", str(container.root), "-i", str(image), container.id)
    assert done.exit_code == 0, done.output
    assert read_grants(image).tasks == 2
    exported = crgpu("export", "--format", "kubernetes", "-i", str(image), "-o", str(archive))
    assert exported.exit_code == 0, exported.output
    root, copy = short_tmp / "root2", f"{container.id}-copy"
    work_root = Path(os.environ["CRGPU_WORK_ROOT"])
    try:
        # CRIU restores it (the image check let it through); that the copy then stops is CRIU's
        # and runc's with a zombie: the image dir itself, restored without an archive, stops the same way.
        restored = _restore(archive, container, short_tmp, "--trust-image")
        assert restored.exit_code == 0, restored.output
    finally:
        testbed.drop_restored(container.runc, root, copy, work_root)
