"""`crgpu inspect` of CRIU's images without crgpu.json (Docker's checkpoint folders, a plain
runc checkpoint): shown as foreign and unsigned, with CRIU's statistics; nothing followed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from crgpu.host.errors import ExitCode
from tests.helpers import crgpu

STATS = Path(__file__).parent.parent / "fixtures" / "criu" / "stats-dump"


def _docker_checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "containers" / ("ab" * 32) / "checkpoints" / "cp1"
    folder.mkdir(parents=True)
    (folder / "inventory.img").write_bytes(b"\0" * 100)
    shutil.copy(STATS, folder / "stats-dump")
    return folder


def test_a_docker_checkpoint_folder_is_shown_foreign_and_unsigned(tmp_path: Path) -> None:
    folder = _docker_checkpoint(tmp_path)
    doc = json.loads(crgpu("inspect", "--json", str(folder)).stdout)
    assert (doc["format"], doc["trust"], doc["crgpu"], doc["archive"]) == ("criu", "unsigned", None, False)
    assert doc["members"] == 2 and doc["checkpoint_bytes"] == 100 + STATS.stat().st_size
    assert doc["stats"]["frozen_time"] > 0
    text = crgpu("inspect", str(folder))
    assert text.exit_code == 0 and "foreign and unsigned" in text.stdout and "frozen_time" in text.stdout


def test_a_linked_stats_file_is_not_followed(tmp_path: Path) -> None:
    folder = _docker_checkpoint(tmp_path)
    (folder / "stats-dump").unlink()
    (folder / "stats-dump").symlink_to(STATS)
    doc = json.loads(crgpu("inspect", "--json", str(folder)).stdout)
    assert doc["stats"] == {} and doc["members"] == 1


def test_a_directory_without_criu_images_is_still_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = crgpu("inspect", str(tmp_path / "empty"))
    assert result.exit_code == ExitCode.PRECONDITION and "has no crgpu.json" in result.stderr
