"""Container detection from the runtimes' state roots (runc's and runsc's layouts), no runtime needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crgpu.host.errors import NotFoundError, PreconditionError, UsageError
from crgpu.runtimes.detect import find_container


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


@pytest.mark.parametrize("given_a_gpu", [True, False], ids=["device", "flag-alone"])
def test_runsc_gpu_detection_with_the_nvproxy_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given_a_gpu: bool
) -> None:
    """--nvproxy turns gVisor's GPU proxy on; the spec says whether the container has a GPU (GKE's
    device plugin injects /dev/nvidiactl). Before, the flag alone made every sandbox a GPU one."""
    root = tmp_path / "runsc"
    _runsc_state(root, "gpu1")
    state_file = root / "gpu1_sandbox:gpu1.state"
    state = json.loads(state_file.read_text())
    state["sandbox"]["pid"] = 4242
    if given_a_gpu:
        state["spec"] = {"linux": {"devices": [{"path": "/dev/nvidiactl"}, {"path": "/dev/nvidia0"}]}}
    state_file.write_text(json.dumps(state))
    host = tmp_path / "host"
    (host / "proc" / "4242").mkdir(parents=True)
    cmdline = ["runsc-sandbox", "--nvproxy=true", "--network=host", "--root=/x", "boot", "gpu1"]
    (host / "proc" / "4242" / "cmdline").write_bytes(b"\0".join(c.encode() for c in cmdline) + b"\0")
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(host))
    found = find_container("gpu1", root=root)
    assert found.gpu is given_a_gpu
    assert found.gpu_evidence == (("device", "nvproxy-flag") if given_a_gpu else ("nvproxy-flag",))
    assert (found.gpu_note is None) is given_a_gpu
    assert found.global_flags == ["--nvproxy=true", "--network=host"]
