"""GPU containers as operators make them: each style recognised by `checkpoint --dry-run`, with
the evidence named in every result document (fixtures: tests/fixtures/gpu/README.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from crgpu.nvidia.evidence import spec_evidence
from tests.fakes import HELP, install_fake_runc, write_fake_nvidia_smi
from tests.helpers import crgpu

SPECS = HELP.parent / "gpu"
EXPECTED = {
    "hook": {"hook", "env"},
    "cdi": {"cdi", "device"},
    "env": {"env"},
    "device": {"device"},
    "plain": set(),
}


def _container_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, style: str) -> Path:
    """The fake runc's c1, run from a bundle whose config.json is the style's spec."""
    install_fake_runc(tmp_path, monkeypatch)
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    shutil.copy(SPECS / f"{style}.json", bundle / "config.json")
    spec = json.loads((bundle / "config.json").read_text())
    # runc's state keeps the spec's devices and a bundle label; hooks and env stay in config.json.
    state = {
        "init_process_pid": 5,
        "config": {"labels": [f"bundle={bundle}"], "devices": spec["linux"]["devices"]},
    }
    (tmp_path / "root" / "c1" / "state.json").write_text(json.dumps(state))
    return bundle


@pytest.mark.parametrize("style", sorted(EXPECTED))
def test_each_style_is_recognised_by_a_dry_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, style: str
) -> None:
    _container_from(tmp_path, monkeypatch, style)
    result = crgpu("checkpoint", "--dry-run", "--json", "--cuda", "off", "-i", str(tmp_path / "img"), "c1")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["gpu"] is bool(EXPECTED[style])
    assert set(doc["gpu_evidence"]) == EXPECTED[style]


def test_a_gpu_container_the_node_cannot_checkpoint_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _container_from(tmp_path, monkeypatch, "hook")
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(tmp_path / "no-driver"))
    result = crgpu("checkpoint", "--json", "-i", str(tmp_path / "img"), "c1")
    doc = json.loads(result.stdout)
    assert result.exit_code == 4 and "uses a GPU" in doc["error"]
    assert "gpu" in doc and "gpu_evidence" in doc  # errors carry the same keys


def test_evidence_rules() -> None:
    assert spec_evidence({"process": {"env": ["NVIDIA_VISIBLE_DEVICES=none"]}}) == {"env"}  # driver only
    assert spec_evidence({"process": {"env": ["NVIDIA_VISIBLE_DEVICES="]}}) == set()
    assert spec_evidence({"annotations": {"dev.gvisor.spec.nvproxy": "true"}}) == {"annotation"}
    assert spec_evidence({"annotations": {"dev.gvisor.spec.nvproxy": "false"}}) == set()
    assert spec_evidence(
        {"hooks": {"createContainer": [{"path": "/usr/bin/nvidia-ctk", "args": ["nvidia-ctk", "hook", "x"]}]}}
    ) == {"cdi"}
    assert spec_evidence({"linux": {"devices": [{"path": "/dev/nvidia-caps/x"}]}}) == set()
    assert spec_evidence({"hooks": "garbage", "linux": [], "process": None}) == set()


def test_a_cpu_container_on_a_gpu_node_takes_no_gpu_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    _container_from(tmp_path, monkeypatch, "plain")
    host = tmp_path / "host"
    (host / "sys/module/nvidia").mkdir(parents=True)
    (host / "sys/module/nvidia/version").write_text("580.65.06\n")
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(host))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi_calls = tmp_path / "smi-calls"
    write_fake_nvidia_smi(bin_dir / "nvidia-smi", "580.65.06", [("NVIDIA H200", "GPU-1")], log=smi_calls)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    result = crgpu("checkpoint", "-i", str(tmp_path / "img"), "c1")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "img" / "crgpu.json").read_text())
    assert manifest["host"]["driver_version"] == "580.65.06"  # from sysfs
    assert manifest["host"]["gpus"] == [] and not smi_calls.exists()  # nvidia-smi never ran
