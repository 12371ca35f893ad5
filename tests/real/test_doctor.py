"""`crgpu doctor --probe` on the real node: a round trip per runtime, nothing left behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests import testbed
from tests.helpers import crgpu


def test_probe_round_trips_runc_and_runsc() -> None:
    testbed.require_root()
    testbed.require_binary(shutil.which("runc"), "runc")
    testbed.require_binary(shutil.which("runsc"), "runsc")
    testbed.busybox()
    before = set(Path(tempfile.gettempdir()).glob("crgpu-probe-*"))

    result = crgpu("doctor", "--probe", "--json")

    doc = json.loads(result.stdout)
    failing = [(c["id"], c["detail"]) for c in doc["checks"] if c["status"] == "fail"]
    assert result.exit_code == 0, (doc["summary"], failing)
    probes = {p["runtime"]: p for p in doc["probe"]}
    assert set(probes) == {"runc", "runsc"}
    for runtime, probe in probes.items():
        assert probe["ok"], probe
        assert probe["counter_restored"] >= probe["counter_saved"] >= 40, runtime
        assert probe["checkpoint_s"] > 0 and probe["restore_s"] > 0
    assert probes["runc"]["frozen_time_us"] > 0
    by_id = {c["id"]: c for c in doc["checks"]}
    assert by_id["probe.runc"]["status"] == by_id["probe.runsc"]["status"] == "ok"
    assert set(Path(tempfile.gettempdir()).glob("crgpu-probe-*")) == before
    leftovers = subprocess.run(["pgrep", "-f", "crgpu-probe-"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
