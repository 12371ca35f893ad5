"""Options, detection, CRIU log reading, the capability cache: no runtime needed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from crgpu.criu.logs import criu_log_errors, headline, hint_for
from crgpu.host.errors import ImagePathError, NotFoundError, PreconditionError, UsageError
from crgpu.image.manifest import (
    ContainerRecord,
    Manifest,
    RuntimeRecord,
    prepare_image_dir,
    read_image,
    write_manifest,
)
from crgpu.options.models import CheckpointOptions, check_container_id, validation_messages
from crgpu.runtimes import capabilities
from crgpu.runtimes.detect import find_container


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../x", "a b", "x;rm", "é", "a\x00"])
def test_container_ids_outside_runc_rule_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid container ID"):
        check_container_id(bad)


def test_validation_gives_one_line_per_bad_field() -> None:
    with pytest.raises(ValidationError) as info:
        CheckpointOptions.model_validate(
            {"container_id": "a/b", "runtime": "docker", "manage_cgroups_mode": "x", "image_path": "rel"}
        )
    lines = validation_messages(info.value)
    assert len(lines) == 3
    assert any(line.startswith("--container-id: invalid container ID") for line in lines)
    assert any(line.startswith("--runtime:") for line in lines)
    assert any(line.startswith("--manage-cgroups-mode:") for line in lines)


@pytest.mark.parametrize("ref", ["default/web-0/app", "kube-system/coredns-5d78c9869d-abcde/coredns"])
def test_a_kubernetes_namespace_pod_container_is_a_container_reference(ref: str) -> None:
    assert CheckpointOptions(container_id=ref, image_path=Path("/x")).container_id == ref


@pytest.mark.parametrize("ref", ["a/b", "default/web/../x", "-x/y/z", "default/Web/app", "ns/pod/app/extra"])
def test_anything_else_with_a_slash_is_refused(ref: str) -> None:
    with pytest.raises(ValidationError, match="invalid container ID"):
        CheckpointOptions(container_id=ref, image_path=Path("/x"))


def test_tcp_established_and_tcp_close_contradict() -> None:
    with pytest.raises(ValidationError, match="contradict"):
        CheckpointOptions(container_id="a", image_path=Path("/x"), tcp_established=True, tcp_close=True)


def _runc_state(root: Path, cid: str, devices: list[str] | None = None) -> None:
    (root / cid).mkdir(parents=True)
    state = {
        "id": cid,
        "init_process_pid": 1234,
        "config": {"labels": ["bundle=/srv/b", "a=b"], "devices": [{"path": p} for p in devices or []]},
    }
    (root / cid / "state.json").write_text(json.dumps(state))


def _runsc_state(root: Path, cid: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    state = {"id": cid, "bundleDir": "/srv/g", "status": "running", "sandbox": {"pid": 77}, "spec": {}}
    (root / f"{cid}_sandbox:{cid}.state").write_text(json.dumps(state))


def test_detection_tells_runc_from_runsc_by_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRGPU_RUNC_ROOTS", str(tmp_path / "runc"))
    monkeypatch.setenv("CRGPU_RUNSC_ROOTS", str(tmp_path / "ns" / "*"))
    _runc_state(tmp_path / "runc", "web", ["/dev/null", "/dev/nvidiactl"])
    _runsc_state(tmp_path / "ns" / "k8s.io", "gv")
    web = find_container("web")
    assert (web.runtime, web.root, web.pid, web.bundle, web.gpu) == (
        "runc",
        tmp_path / "runc",
        1234,
        Path("/srv/b"),
        True,
    )
    gv = find_container("gv")
    assert (gv.runtime, gv.root, gv.pid, gv.gpu) == ("runsc", tmp_path / "ns" / "k8s.io", 77, False)
    assert find_container("gv", root=tmp_path / "ns" / "k8s.io").runtime == "runsc"
    with pytest.raises(NotFoundError, match="not found"):
        find_container("gv", runtime="runc")


def test_an_id_held_by_two_runtimes_names_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRGPU_RUNC_ROOTS", str(tmp_path / "runc"))
    monkeypatch.setenv("CRGPU_RUNSC_ROOTS", str(tmp_path / "runsc"))
    _runc_state(tmp_path / "runc", "dup")
    _runsc_state(tmp_path / "runsc", "dup")
    with pytest.raises(PreconditionError, match=r"runc under .*runsc under"):
        find_container("dup")
    monkeypatch.setenv("CRGPU_RUNTIME", "runsc")
    assert find_container("dup").runtime == "runsc"
    monkeypatch.setenv("CRGPU_RUNTIME", "podman")
    with pytest.raises(UsageError, match="CRGPU_RUNTIME"):
        find_container("dup")


LOG = """(00.000225) Version: 4.1.1 (gitid 0)
(00.024809) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.135198) Error (criu/files-reg.c:1122): Can't create link remap for /tmp/a. Use link-remap option.
(00.135217) Error (criu/cr-dump.c:1681): Dump files (pid: 8129) failed with -1
(00.192454) Error (criu/cr-dump.c:2111): Dumping FAILED.
"""


def test_criu_log_errors_and_hint(tmp_path: Path) -> None:
    log = tmp_path / "dump.log"
    log.write_text(LOG)
    errors = criu_log_errors(log)
    assert errors == [
        "Can't create link remap for /tmp/a. Use link-remap option.",
        "Dump files (pid: 8129) failed with -1",
        "Dumping FAILED.",
    ]
    assert headline(errors) == errors[0]
    assert "--link-remap" in (hint_for(errors) or "")
    assert criu_log_errors(tmp_path / "missing.log") == []


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("Connected TCP socket, consider using --tcp-established option.", "--tcp-established"),
        ("Can't dump ghost file /tmp/big of 3145728 size, increase limit", "ghost"),
        ('execvp("iptables-restore", ...) failed: No such file or directory', "apt-get install iptables"),
        ("vdso: Unexpected rt vDSO area bounds", "CRIU 4.1"),
        ("Can't lookup mount=27 for fd=1 path=pipe:[1234]", "stdio"),
        ("container is not running", "not running"),
        ("Need to set the --tcp-close options.", "--tcp-close"),
    ],
)
def test_known_failures_have_hints(line: str, needle: str) -> None:
    assert needle in (hint_for([line]) or "")


def test_image_dir_is_created_0700_and_never_reused(tmp_path: Path) -> None:
    image = prepare_image_dir(tmp_path / "a" / "img")
    assert stat.S_IMODE(image.stat().st_mode) == 0o700
    (image / "pages-1.img").write_text("x")
    with pytest.raises(ImagePathError, match="not empty"):
        prepare_image_dir(image)
    assert (image / "pages-1.img").read_text() == "x"
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ImagePathError, match="symlink"):
        prepare_image_dir(tmp_path / "link")
    assert not (tmp_path / "elsewhere").exists()


def test_manifest_round_trip_and_incomplete_image(tmp_path: Path) -> None:
    with pytest.raises(PreconditionError, match="incomplete"):
        read_image(tmp_path)
    manifest = Manifest(
        runtime=RuntimeRecord(name="runc", version="1.1.15", path="/usr/sbin/runc", root="/run/runc"),
        container=ContainerRecord(id="c1", bundle="/srv/b"),
    )
    write_manifest(tmp_path, manifest)
    assert read_image(tmp_path).manifest.container.id == "c1"
    assert not list(tmp_path.glob(".*tmp"))
    (tmp_path / "crgpu.json").write_text("{")
    with pytest.raises(PreconditionError, match="not valid JSON"):
        read_image(tmp_path)


def test_capabilities_are_cached_per_binary_and_mtime(tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    fake = tmp_path / "fake-runc"
    fake.write_text(f"#!/bin/sh\necho x >> {counter}\necho 'runc version 9.9.9'\n")
    fake.chmod(0o755)
    first = capabilities.cached_texts(fake, {"version": [str(fake), "--version"]})
    second = capabilities.cached_texts(fake, {"version": [str(fake), "--version"]})
    assert first == second == {"version": "runc version 9.9.9\n"}
    assert counter.read_text().count("x") == 1
    os.utime(fake, ns=(0, 1))  # a new binary: the cache must not answer
    capabilities.cached_texts(fake, {"version": [str(fake), "--version"]})
    assert counter.read_text().count("x") == 2


def test_runtime_binary_override_must_be_executable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRGPU_RUNC", str(tmp_path / "nope"))
    with pytest.raises(
        NotFoundError, match=r"runc = .*nope from environment \(CRGPU_RUNC\) is not an executable"
    ):
        capabilities.resolve_binary("runc")


def test_runsc_gpu_detection_from_nvproxy_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "runsc"
    _runsc_state(root, "gpu1")
    state_file = root / "gpu1_sandbox:gpu1.state"
    state = json.loads(state_file.read_text())
    state["sandbox"]["pid"] = 4242
    state_file.write_text(json.dumps(state))
    host = tmp_path / "host"
    (host / "proc" / "4242").mkdir(parents=True)
    cmdline = ["runsc-sandbox", "--nvproxy=true", "--network=host", "--root=/x", "boot", "gpu1"]
    (host / "proc" / "4242" / "cmdline").write_bytes(b"\0".join(c.encode() for c in cmdline) + b"\0")
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(host))
    found = find_container("gpu1", root=root)
    assert found.gpu is True
    assert found.global_flags == ["--nvproxy=true", "--network=host"]


def test_stats_decoding_matches_crit(tmp_path: Path) -> None:
    """Real stats files from CRIU 4.1.1; `crit show` printed the same numbers for them."""
    from crgpu.criu.stats import read_stats

    fixtures = Path(__file__).parent / "fixtures" / "criu"
    dump = read_stats(fixtures / "stats-dump")
    assert {k: dump[k] for k in ("freezing_time", "frozen_time", "memdump_time", "memwrite_time")} == {
        "freezing_time": 100737,
        "frozen_time": 52441,
        "memdump_time": 1062,
        "memwrite_time": 161,
    }
    assert (dump["pages_scanned"], dump["pages_written"], dump["page_pipes"]) == (51, 34, 8)
    restore = read_stats(fixtures / "stats-restore")
    assert (restore["forking_time"], restore["restore_time"], restore["pages_restored"]) == (337, 72774, 33)
    assert read_stats(tmp_path / "absent") == {}
    (tmp_path / "bad").write_bytes(b"\x00" * 8 + b"\xff\xff\x00\x00" + b"\x0a\xff")
    assert read_stats(tmp_path / "bad") == {}


def test_the_headline_is_the_cause_not_runcs_generic_wrapper() -> None:
    from crgpu.criu.logs import runtime_error_lines

    # Captured from runc 1.1.15 and 1.3.6 with a CRIU config file CRIU rejects.
    real = (
        'time="2026-11-29T18:20:29Z" level=error msg="CRIU version check failed: read criu-xprt-cln: '
        'connection reset by peer\\ncriu swrk failed: exit status 1"'
    )
    lines = runtime_error_lines([real])
    assert lines == [
        "CRIU version check failed: read criu-xprt-cln: connection reset by peer",
        "criu swrk failed: exit status 1",
    ]
    assert headline(lines) == lines[0]
    assert "criu check" in (hint_for(lines) or "")
    wrapped = 'time="x" level=error msg="container still running\\nconfig file: unknown option \\"bogus\\""'
    assert headline(runtime_error_lines([wrapped])) == 'config file: unknown option "bogus"'


def test_go_runtimes_lower_case_errors_get_their_hints() -> None:
    # runc (Go) prints syscall errors in lower case.
    assert "full" in (hint_for(["write /ckpt/x/dump.log: no space left on device"]) or "")
    assert "read-only" in (hint_for(["open /ckpt/x: read-only file system"]) or "")
