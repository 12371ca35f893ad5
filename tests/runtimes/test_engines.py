"""Engine awareness below the real engines: Kubernetes names from the CRI's annotations (as
containerd's CRI writes them into the spec, and runc into its state), Docker's config.v2.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crgpu.host.errors import ExitCode
from tests.fakes import install_fake_runc
from tests.helpers import crgpu

POD_ID = "5d1f" + "0" * 60
CRI = {
    "io.kubernetes.cri.container-type": "container",
    "io.kubernetes.cri.container-name": "trainer",
    "io.kubernetes.cri.sandbox-name": "train-7f9c",
    "io.kubernetes.cri.sandbox-namespace": "ml",
    "io.kubernetes.cri.image-name": "registry.local/train:1",
}


def _container(root: Path, container_id: str, annotations: dict[str, str]) -> None:
    (root / container_id).mkdir(parents=True)
    labels = [f"{k}={v}" for k, v in annotations.items()] + ["bundle=/b"]
    (root / container_id / "state.json").write_text(
        json.dumps({"init_process_pid": 5, "config": {"labels": labels}})
    )


def test_a_kubernetes_container_is_found_by_namespace_pod_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    _container(tmp_path / "root", POD_ID, {**CRI, "io.kubernetes.cri.container-type": "sandbox"})
    _container(tmp_path / "root", "ab" * 32, CRI)
    refused = crgpu("checkpoint", "-i", str(tmp_path / "img"), "ml/train-7f9c/trainer")
    assert refused.exit_code == ExitCode.PRECONDITION, refused.output
    assert "belongs to Kubernetes (trainer)" in refused.stderr
    assert "POST /checkpoint/ml/train-7f9c/trainer" in refused.stderr
    kept = json.loads(
        crgpu(
            "checkpoint",
            "--dry-run",
            "--json",
            "--leave-running",
            "-i",
            str(tmp_path / "i"),
            "ml/train-7f9c/trainer",
        ).stdout
    )
    assert kept["container_id"] == "ab" * 32  # the container, never its pod's sandbox


def test_a_pods_sandbox_is_refused_with_a_hint_that_names_no_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    sandbox = {k: v for k, v in CRI.items() if k != "io.kubernetes.cri.container-name"}
    _container(tmp_path / "root", POD_ID, {**sandbox, "io.kubernetes.cri.container-type": "sandbox"})
    refused = crgpu("checkpoint", "-i", str(tmp_path / "img"), POD_ID)
    assert refused.exit_code == ExitCode.PRECONDITION, refused.output
    assert "None" not in refused.stderr
    assert "sandbox of pod ml/train-7f9c, which Kubernetes does not checkpoint" in " ".join(
        refused.stderr.split()
    )


def test_an_unknown_kubernetes_name_is_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    result = crgpu("checkpoint", "-i", str(tmp_path / "img"), "ml/nope/trainer")
    assert result.exit_code == ExitCode.NOT_FOUND and "podman ps" in result.stderr


def _docker_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_id: str, name: str) -> Path:
    """A container of Docker's (the moby runc root, its config.v2.json); returns the data root."""
    install_fake_runc(tmp_path, monkeypatch)
    root = tmp_path / "run" / "docker" / "runtime-runc" / "moby"
    _container(root, docker_id, {})
    monkeypatch.setenv("CRGPU_RUNC_ROOTS", str(root))
    data_root = tmp_path / "docker"
    (data_root / "containers" / docker_id).mkdir(parents=True)
    config = {"Name": name, "Image": "sha256:" + "9" * 64, "Config": {"Image": "busybox:1.36"}}
    (data_root / "containers" / docker_id / "config.v2.json").write_text(json.dumps(config))
    monkeypatch.setenv("CRGPU_DOCKER_DATA_ROOT", str(data_root))
    return data_root


def test_a_docker_container_is_found_by_its_name_and_handed_off_where_docker_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker_id = "cd" * 32
    data_root = _docker_container(tmp_path, monkeypatch, docker_id, "/web")
    refused = crgpu("checkpoint", "-i", str(tmp_path / "img"), "web")
    assert refused.exit_code == ExitCode.PRECONDITION and "docker checkpoint create web" in refused.stderr
    planned = json.loads(crgpu("checkpoint", "--dry-run", "--json", "--hand-off", "web").stdout)
    assert planned["image_path"].startswith(
        str(data_root / "containers" / docker_id / "checkpoints" / "crgpu-")
    )
    assert any("docker start --checkpoint crgpu-" in note for note in planned["notes"])


def test_a_hand_off_of_a_container_no_engine_owns_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    result = crgpu("checkpoint", "--hand-off", "c1")
    assert result.exit_code == ExitCode.PRECONDITION and "belongs to no engine" in result.stderr


def test_a_restore_onto_an_empty_rootfs_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine unmounts a stopped container's rootfs: restoring there left stubs behind."""
    install_fake_runc(tmp_path, monkeypatch)
    image = tmp_path / "img"
    image.mkdir(mode=0o700)
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"root": {"path": "rootfs"}}))
    result = crgpu("restore", "--force", "--runtime", "runc", "--bundle", str(bundle), "-i", str(image), "c7")
    assert result.exit_code == ExitCode.PRECONDITION and "missing or empty (not mounted?)" in result.stderr


def test_an_engine_name_the_manifest_cannot_hold_is_left_out_not_a_lost_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engine names are the engine's data (here Docker's config.v2.json): a 10 KB one must not turn
    a checkpoint that ran into an internal error."""
    docker_id = "ef" * 32
    _docker_container(tmp_path, monkeypatch, docker_id, "/" + "w" * 10_000)
    result = crgpu("checkpoint", "--leave-running", "-i", str(tmp_path / "img"), docker_id)
    assert result.exit_code == 0, result.output
    engine = json.loads((tmp_path / "img" / "crgpu.json").read_text())["container"]["engine"]
    assert engine["kind"] == "docker" and engine["name"] is None
    # Docker's record of the image the container was run from travels in the manifest.
    assert (engine["image"], engine["image_id"]) == ("busybox:1.36", "sha256:" + "9" * 64)


def test_podmans_answer_gives_the_network_a_copy_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    """`podman container inspect` of a container on podman's bridge (podman 5.4.2, this host)."""
    from crgpu.runtimes import engines

    answer = (
        Path(__file__).parent.parent / "fixtures" / "engines" / "podman-5.4-inspect-bridge.json"
    ).read_text()
    monkeypatch.setattr(engines, "_podman", lambda *args: answer)
    details = engines.podman_details("39b5e9bf4f5c")
    assert (details["network_mode"], details["networks"]) == ("bridge", "podman")
    assert details["image"] == "localhost/crgpu-busybox:latest"


def test_a_container_named_by_its_engine_name_is_shown_as_typed_with_its_id_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the 64-hex ID was printed where the operator typed `web`."""
    docker_id = "ef" * 32
    _docker_container(tmp_path, monkeypatch, docker_id, "/web")
    result = crgpu("checkpoint", "--leave-running", "-i", str(tmp_path / "img"), "web")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "web"
    assert f"web (ID {docker_id})" in result.stderr
    doc = json.loads(
        crgpu("checkpoint", "--leave-running", "--json", "-i", str(tmp_path / "img2"), "web").stdout
    )
    assert (doc["container"], doc["container_id"]) == ("web", docker_id)
