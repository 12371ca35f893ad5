"""Real pre-dumps and lazy restores: refused where the kernel cannot, every page arriving where it can."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import testbed
from tests.helpers import crgpu, crgpu_json


def test_pre_dump_is_refused_here_with_the_reason(runc_container, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    criu = shutil.which("criu") or ""
    out = subprocess.run(
        [criu, "check", "--feature", "mem_dirty_track"], capture_output=True, text=True
    ).stderr
    if "OFF" not in out:
        pytest.skip("this kernel tracks dirty memory: pre-dumps would run")
    container = runc_container()
    result = crgpu(
        "checkpoint",
        "--pre-dump",
        "2",
        "--root",
        str(container.root),
        "-i",
        str(short_tmp / "i"),
        container.id,
    )
    assert result.exit_code == 4
    assert "soft-dirty memory tracking" in result.stderr and "Dirty tracking is OFF" in result.stderr
    assert not (short_tmp / "i").exists()
    doctor = {c["id"]: c for c in crgpu_json("doctor")[1]["checks"]}
    assert doctor["criu.dirty_tracking"]["status"] == "warn"


def test_lazy_restore_runs_first_and_every_page_arrives(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    testbed.require_root()
    runc = testbed.require_binary(shutil.which("runc"), "runc")
    bundle = testbed.make_hog_bundle(short_tmp / "hog", 64)
    container = testbed.RuncContainer(runc, short_tmp / "root", bundle, f"crgpu-lazy-{os.getpid()}").start()
    try:
        testbed.wait_counter_above(bundle, 1)
        image = short_tmp / "img"
        code, doc = crgpu_json("checkpoint", "--root", str(container.root), "-i", str(image), container.id)
        assert code == 0, doc
        code, doc = crgpu_json("restore", "--lazy-pages", "-i", str(image))
        assert code == 0, doc
        assert "--lazy-pages" in doc["argv"] and doc["helper_argv"][1] == "lazy-pages"
        assert 0 < doc["stats"]["time_to_running"] <= doc["stats"]["lazy_pages_complete"]
        assert container.status() == "running"
        # The hog reads all 64 MiB back: every lazily served page arrived intact.
        assert testbed.verify_hog_memory(bundle) == f"ok {64 << 20}"
        assert (
            subprocess.run(
                ["pgrep", "-f", f"lazy-pages --images-dir {image}"], capture_output=True
            ).returncode
            == 1
        )
    finally:
        container.delete()
