"""Real round trips through Debian's runsc: the sandbox's global flags carried over by crgpu."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests import testbed
from tests.helpers import crgpu_json

Start = Callable[..., testbed.RunscContainer]


def test_runsc_round_trip_without_retyping_the_globals(runsc_container: Start, short_tmp: Path) -> None:
    container = runsc_container()
    saved = container.wait_counter(40)
    image = short_tmp / "img"

    # Only --root: --network=none and --ignore-cgroups come from the sandbox's command line.
    code, doc = crgpu_json("checkpoint", "--root", str(container.root), "-i", str(image), container.id)

    assert code == 0, doc
    assert doc["runtime"] == "runsc"
    # The sandbox's delete after the checkpoint said apart (before: runtime_s held it unexplained).
    assert 0 < doc["timings"]["runtime_delete_s"] < doc["timings"]["runtime_s"]
    # runsc writes the sandbox's flags in no fixed order (a Go map): compare them as a set.
    assert doc["argv"][1] == f"--root={container.root}"
    assert set(doc["argv"][2:4]) == {"--network=none", "--ignore-cgroups=true"}
    manifest = json.loads((image / "crgpu.json").read_text())
    assert sorted(manifest["runtime"]["global_flags"]) == ["--ignore-cgroups=true", "--network=none"]
    assert doc["stats"]["runtime_checkpoint_duration"] > 0
    assert manifest["stats"]["runtime_checkpoint_duration"] == doc["stats"]["runtime_checkpoint_duration"]
    assert manifest["sizes"]["total_bytes"] > 0 and manifest["host"]["criu_version"] is None
    assert container.status() is None  # the stopped sandbox's state is gone: the ID is free again

    code, doc = crgpu_json("restore", "-i", str(image))

    assert code == 0, doc
    assert doc["container_status"] == "running"
    assert "--network=none" in doc["argv"] and "--detach" in doc["argv"]
    after = container.counter()
    # A restarted workload would be back near 1; the restored one goes on from at least `saved`.
    assert after >= saved
    assert container.wait_counter(after + 5) > after


def test_runsc_leave_running_with_runsc_options(runsc_container: Start, short_tmp: Path) -> None:
    container = runsc_container()
    before = container.wait_counter(5)
    code, doc = crgpu_json(
        "checkpoint",
        "--leave-running",
        "--compression",
        "none",
        "--link-remap",
        "--root",
        str(container.root),
        "-i",
        str(short_tmp / "img"),
        container.id,
    )
    assert code == 0, doc
    assert "--compression=none" in doc["argv"] and "--link-remap" not in doc["argv"]
    assert any("--link-remap: no runsc flag" in note for note in doc["notes"])
    assert (short_tmp / "img" / "pages.img").exists()  # uncompressed images keep pages apart
    assert container.status() == "running"
    assert container.wait_counter(before + 5) > before
