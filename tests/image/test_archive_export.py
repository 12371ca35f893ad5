"""`crgpu export` picks the format a container's own engine restores, and the compression that
format's readers take: podman's (zstd) for a podman container, the kubelet's as a plain tar
(containerd reads no other) for every other one; `inspect` names the layout, not its writer."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.archives import SPEC
from tests.cli.test_security import signed_image
from tests.helpers import crgpu

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PODMAN = {"kind": "podman", "name": "web", "image": "localhost/busybox:latest", "image_id": "a" * 64}


def _image(tmp_path: Path, **changes: Any) -> Path:
    image = signed_image(tmp_path, **changes)
    (image / "inventory.img").write_bytes(b"\0" * 64)
    (image / "spec.dump").write_bytes(SPEC)
    return image


def _export(image: Path, out: Path, *extra: str) -> dict[str, Any]:
    result = crgpu("export", "--json", "-i", str(image), "-o", str(out), *extra)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_a_plain_runc_container_gets_the_kubelets_layout_as_a_plain_tar(tmp_path: Path) -> None:
    out = tmp_path / "k8s.tar"
    doc = _export(_image(tmp_path), out)
    assert (doc["format"], doc["compression"]) == ("kubernetes", "none")
    assert out.read_bytes()[:4] != ZSTD_MAGIC
    with tarfile.open(out, "r:") as tar:  # plain: no decompressor
        names = tar.getnames()
    assert {"status.dump", "config.dump", "checkpoint/inventory.img"} <= set(names)
    inspected = json.loads(crgpu("inspect", "--json", str(out)).stdout)
    assert inspected["format"] == "kubernetes" and inspected["crgpu"] is not None
    assert "(kubernetes archive, with crgpu.json)" in crgpu("inspect", str(out)).stdout


def test_a_podman_container_gets_podmans_format_compressed(tmp_path: Path) -> None:
    out = tmp_path / "web.tar.zst"
    doc = _export(_image(tmp_path, **{"container.engine": PODMAN}), out)
    assert (doc["format"], doc["compression"]) == ("podman", "zstd")
    assert out.read_bytes()[:4] == ZSTD_MAGIC
    assert json.loads(crgpu("inspect", "--json", str(out)).stdout)["format"] == "podman"


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ({"network_mode": "bridge", "networks": ["podman", "web-net"]},
         {"createNetNS": True, "networkMode": "bridge",
          "newNetworks": {"podman": {"interface_name": "eth0"}, "web-net": {"interface_name": "eth1"}}}),
        ({"network_mode": "none"}, {}),
        ({}, {}),
    ],
    ids=["bridge", "none", "unrecorded"],
)  # fmt: skip
def test_a_podman_archive_says_how_podman_makes_a_copy_its_own_network(
    tmp_path: Path, network: dict[str, Any], expected: dict[str, Any]
) -> None:
    """Without createNetNS/networkMode/newNetworks podman's import reuses the netns path spec.dump
    names: the source's. podman's own export of a bridge container writes these keys."""
    out = tmp_path / "web.tar"
    _export(_image(tmp_path, **{"container.engine": {**PODMAN, **network}}), out, "--compression", "none")
    with tarfile.open(out, "r:") as tar:
        handle = tar.extractfile("config.dump")
        assert handle is not None
        config = json.loads(handle.read())
    keys = ("createNetNS", "networkMode", "newNetworks")
    assert {key: config[key] for key in keys if key in config} == expected


@pytest.mark.parametrize("bad", [{"networks": ["--opt=x"]}, {"network_mode": "ns:/proc/1/ns/net"}])
def test_a_manifest_naming_a_network_podman_would_not_is_refused(bad: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from crgpu.image.manifest import EngineRecord

    with pytest.raises(ValidationError):
        EngineRecord.model_validate({**PODMAN, **bad})


@pytest.mark.parametrize(("fmt", "compression"), [("kubernetes", "gzip"), ("kubernetes", "zstd")])
def test_what_is_asked_for_is_written(tmp_path: Path, fmt: str, compression: str) -> None:
    doc = _export(_image(tmp_path), tmp_path / "a", "--format", fmt, "--compression", compression)
    assert (doc["format"], doc["compression"]) == (fmt, compression)


def test_podmans_format_is_still_refused_for_a_container_podman_never_had(tmp_path: Path) -> None:
    result = crgpu("export", "-i", str(_image(tmp_path)), "-o", str(tmp_path / "a"), "--format", "podman")
    assert result.exit_code == 4 and "does not name one" in result.stderr


def test_a_runsc_image_is_refused_saying_what_restores_it(tmp_path: Path) -> None:
    image = _image(tmp_path, **{"runtime.name": "runsc", "runtime.version": "release-20240729.0"})
    result = crgpu("export", "-i", str(image), "-o", str(tmp_path / "a"))
    assert result.exit_code == 4, result.output
    said = " ".join(result.stderr.split())
    assert "this image was made by runsc" in said and "restore it with crgpu restore" in said
    assert not (tmp_path / "a").exists()


KUBE = {
    "kind": "kubernetes",
    "name": "counter",
    "namespace": "default",
    "pod": "web",
    "image": "127.0.0.1:5510/busybox:1",
    "labels": {"io.kubernetes.container.name": "counter"},
    "annotations": {"io.kubernetes.container.hash": "c0ffee42", "io.kubernetes.container.restartCount": "0"},
    "cri_name": "counter_web_default_uid-web_0",
    "created_at": "2026-12-02T22:08:58.573931598Z",
    "image_ref": "127.0.0.1:5510/busybox@sha256:" + "2" * 64,
}


def test_the_kubelets_documents_are_the_ones_containerd_reads(tmp_path: Path) -> None:
    """status.dump in Go's protobuf JSON (the state's enum number: containerd refused the string),
    the kubelet's labels and annotations carried, the base image by digest, both times."""
    out = tmp_path / "k8s.tar"
    doc = _export(_image(tmp_path, **{"container.engine": KUBE}), out)
    assert doc["notes"] == ["the container was not on an overlay: rootfs-diff.tar is empty"]
    with tarfile.open(out, "r:") as tar:
        status = json.load(tar.extractfile("status.dump"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile("config.dump"))  # type: ignore[arg-type]
        manifest = json.load(tar.extractfile("crgpu.json"))  # type: ignore[arg-type]
    assert status == {
        "id": manifest["container"]["id"],
        "metadata": {"name": "counter"},
        "state": 1,
        "created_at": 1796249338573931598,
        "image": {"image": KUBE["image"]},
        "image_ref": KUBE["image_ref"],
        "labels": KUBE["labels"],
        "annotations": KUBE["annotations"],
    }
    assert config["name"] == KUBE["cri_name"] and config["rootfsImageRef"] == KUBE["image_ref"]
    assert config["createdTime"] == KUBE["created_at"]
    assert config["checkpointedTime"] == manifest["created_at"]


def test_an_archive_without_a_digest_image_says_containerd_will_not_restore_it(tmp_path: Path) -> None:
    doc = _export(_image(tmp_path), tmp_path / "k8s.tar")
    assert any("NAME@sha256" in note for note in doc["notes"])


def test_export_progress_moves_within_a_large_file(tmp_path: Path) -> None:
    """Before, the bar moved per file and sat at 0.0/1.1 GB through the one file of pages."""
    from crgpu.image.archive_export import PROGRESS_STEP, export_image

    image = _image(tmp_path)
    (image / "pages-1.img").write_bytes(b"\1" * (4 * PROGRESS_STEP))
    seen: list[tuple[int, int]] = []
    export_image(
        image, tmp_path / "out.tar", "kubernetes", "none", lambda done, total: seen.append((done, total))
    )
    total = seen[-1][1]
    assert seen[-1][0] == total and total > 4 * PROGRESS_STEP
    inside = [done for done, _ in seen if 0 < done < total]
    assert len(inside) >= 4 and inside == sorted(inside)  # steps through the pages file, in order
