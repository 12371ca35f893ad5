"""`crgpu export --format oci`: an OCI image layout whose blobs are what their digests say, one
layer holding the kubelet's archive, and the annotations containerd and CRI-O restore by."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from crgpu.host.errors import ExitCode
from crgpu.image.oci_archive import CHECKPOINT_NAME, CRIO_CHECKPOINT_NAME, _header
from tests.helpers import crgpu
from tests.image.test_archive_export import KUBE, _export, _image


def test_the_layout_is_an_oci_image_of_the_kubelets_archive(tmp_path: Path) -> None:
    out = tmp_path / "ckpt.oci.tar"
    doc = _export(_image(tmp_path, **{"container.engine": KUBE}), out, "--format", "oci")
    assert (doc["format"], doc["compression"]) == ("oci", "none")
    with tarfile.open(out, "r:") as outer:
        files = {m.name: outer.extractfile(m).read() for m in outer.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(files["index.json"])
    manifest = json.loads(files["blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]])
    assert manifest["annotations"][CHECKPOINT_NAME] == "counter"
    assert manifest["annotations"][CRIO_CHECKPOINT_NAME] == "counter"
    assert manifest["annotations"]["org.criu.checkpoint.rootfsImageID"] == KUBE["image_ref"]
    (layer,) = manifest["layers"]
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert config["rootfs"]["diff_ids"] == [layer["digest"]] and config["os"] == "linux"
    inner = files["blobs/sha256/" + layer["digest"].split(":")[1]]
    assert len(inner) == layer["size"]
    with tarfile.open(fileobj=io.BytesIO(inner), mode="r:") as tar:
        status = json.load(tar.extractfile("status.dump"))  # type: ignore[arg-type]
        assert {"config.dump", "spec.dump", "crgpu.json", "checkpoint/inventory.img"} <= set(tar.getnames())
    assert status["annotations"] == KUBE["annotations"]


def test_a_layer_past_8_gib_keeps_a_one_block_header() -> None:
    """GPU checkpoints pass ustar's 8 GiB: the size goes in GNU's base-256 field, still 512 bytes."""
    size = 80 << 30
    block = _header("blobs/sha256/" + "a" * 64, size)
    assert len(block) == 512
    assert tarfile.TarInfo.frombuf(block, "utf-8", "strict").size == size


def test_a_compressed_oci_image_is_a_usage_error(tmp_path: Path) -> None:
    image = _image(tmp_path)
    out = tmp_path / "x.tar"
    result = crgpu("export", "-i", str(image), "-o", str(out), "--format", "oci", "--compression", "zstd")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "uncompressed" in result.stderr and not out.exists()
    assert not list(tmp_path.glob(".x.tar.partial-*"))
