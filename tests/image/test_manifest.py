"""The image directory and its manifest: made private, never reused, read back whole."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from crgpu.host.errors import ImagePathError, PreconditionError
from crgpu.image.manifest import (
    ContainerRecord,
    Manifest,
    RuntimeRecord,
    prepare_image_dir,
    read_image,
    write_manifest,
)


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
