"""GPU containers as operators make them: each style recognised by `checkpoint --dry-run`, with
the evidence named in every result document (fixtures: tests/fixtures/gpu/README.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from crgpu.nvidia.evidence import GpuVerdict, gpu_verdict
from tests.fakes import HELP, install_fake_runc, write_fake_nvidia_smi
from tests.helpers import crgpu

SPECS = HELP.parent / "gpu"
# style: (GPU by gVisor's rule, the evidence found)
EXPECTED = {
    "hook": (True, {"hook", "env"}),
    "cdi": (True, {"cdi", "device"}),
    "device": (True, {"device"}),
    "env": (False, {"env"}),
    "cuda-image": (False, {"env"}),
    "hook-only": (False, {"hook"}),
    "plain": (False, set()),
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
    gpu, evidence = EXPECTED[style]
    assert doc["gpu"] is gpu
    assert set(doc["gpu_evidence"]) == evidence
    # Evidence that does not make a GPU container is named, with why, in the notes.
    said = [note for note in doc["notes"] if "taken for a CPU container" in note]
    assert len(said) == (1 if evidence and not gpu else 0), doc["notes"]
    if style == "hook-only":
        assert "NVIDIA_VISIBLE_DEVICES names no GPU" in said[0]
    if style == "cuda-image":
        assert "CUDA images set the variable" in said[0]


@pytest.mark.parametrize("style", ["env", "cuda-image", "hook-only"])
def test_a_container_with_only_the_variable_or_only_the_hook_is_checkpointed_as_cpu_on_a_cpu_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, style: str
) -> None:
    """Before: refused with "install NVIDIA driver 570+", the CPU run of any CUDA image included."""
    _container_from(tmp_path, monkeypatch, style)
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(tmp_path / "no-driver"))
    result = crgpu("checkpoint", "--json", "-i", str(tmp_path / "img"), "c1")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "img" / "crgpu.json").read_text())
    assert manifest["container"]["gpu"] is False
    assert manifest["container"]["gpu_evidence"] == sorted(EXPECTED[style][1])


def test_a_gpu_container_the_node_cannot_checkpoint_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _container_from(tmp_path, monkeypatch, "hook")
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(tmp_path / "no-driver"))
    result = crgpu("checkpoint", "--json", "-i", str(tmp_path / "img"), "c1")
    doc = json.loads(result.stdout)
    assert result.exit_code == 4 and "uses a GPU (its spec: hook, env)" in doc["error"]
    assert "--cuda off" in doc["hint"]  # before: only "install NVIDIA driver 570+"
    followed = crgpu("checkpoint", "--json", "--cuda", "off", "-i", str(tmp_path / "img"), "c1")
    assert followed.exit_code == 0, followed.output  # the hint, followed, checkpoints it
    # The refusal's document names the verb, the container and the verdict (before: all null).
    assert doc["verb"] == "checkpoint" and doc["container_id"] == "c1"
    assert doc["gpu"] is True and doc["gpu_evidence"] == ["hook", "env"]
    assert doc["exit_code"] == 4 and doc["ok"] is False


def test_a_refusal_before_the_container_is_found_names_the_verb_and_the_container_as_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    result = crgpu("checkpoint", "--json", "-i", str(tmp_path / "img"), "nosuch")
    doc = json.loads(result.stdout)
    assert result.exit_code == 3, doc
    assert doc["verb"] == "checkpoint" and doc["container_id"] == "nosuch" and doc["gpu"] is None


def _env(*values: str) -> dict[str, object]:
    return {"process": {"env": [f"NVIDIA_VISIBLE_DEVICES={v}" for v in values]}}


LEGACY = {"prestart": [{"path": "/usr/bin/nvidia-container-runtime-hook", "args": ["x", "prestart"]}]}
CDI = {"createContainer": [{"path": "/usr/bin/nvidia-cdi-hook", "args": ["nvidia-cdi-hook", "x"]}]}


def test_gvisors_rule() -> None:
    """runsc/specutils/nvidia.go, GPUFunctionalityRequested: a device node, or the hook together
    with NVIDIA_VISIBLE_DEVICES set and not void ("none": driver access, still a GPU container)."""
    assert gpu_verdict({**_env("none"), "hooks": LEGACY}).gpu
    assert not gpu_verdict({**_env("void"), "hooks": LEGACY}).gpu
    assert not gpu_verdict({**_env(""), "hooks": LEGACY}).gpu
    assert gpu_verdict({**_env("0", "all"), "hooks": LEGACY}).gpu  # the last value wins
    assert not gpu_verdict({**_env("all", "void"), "hooks": LEGACY}).gpu
    # CDI's hook: the toolkit appends its own last `void`, which does not count.
    assert gpu_verdict({**_env("nvidia.com/gpu=all", "void"), "hooks": CDI}).gpu
    assert not gpu_verdict({**_env("void"), "hooks": CDI}).gpu
    ctk = {"createContainer": [{"path": "/usr/bin/nvidia-ctk", "args": ["nvidia-ctk", "hook", "x"]}]}
    assert gpu_verdict({**_env("all"), "hooks": ctk}).evidence == ("cdi", "env")
    for device in ("/dev/nvidiactl", "/dev/nvidia3", "/dev/nvidia-uvm"):
        assert gpu_verdict({"linux": {"devices": [{"path": device}]}}) == GpuVerdict(True, ("device",))
    assert gpu_verdict({"linux": {"devices": [{"path": "/dev/nvidia-caps/x"}]}}) == GpuVerdict(False, ())
    assert gpu_verdict({"hooks": "garbage", "linux": [], "process": None}) == GpuVerdict(False, ())


def test_what_turns_gvisors_gpu_proxy_on_is_evidence_but_gives_no_gpu() -> None:
    internal = gpu_verdict({"annotations": {"dev.gvisor.internal.nvproxy": "true"}})
    assert internal.evidence == ("annotation",) and not internal.gpu and internal.note
    # Not an annotation gVisor reads (before: counted as GPU evidence).
    assert gpu_verdict({"annotations": {"dev.gvisor.spec.nvproxy": "true"}}) == GpuVerdict(False, ())
    assert gpu_verdict({"annotations": {"nvidia.com/gpu.present": "true"}}) == GpuVerdict(False, ())
    flagged = gpu_verdict({}, ["nvproxy-flag"])
    assert flagged.evidence == ("nvproxy-flag",) and not flagged.gpu
    assert "GPU proxy is on" in (flagged.note or "")
    request = gpu_verdict({"annotations": {"cdi.k8s.io/gpu": "nvidia.com/gpu=all"}})
    assert (
        request.evidence == ("cdi",) and not request.gpu and "no NVIDIA device node" in (request.note or "")
    )
    assert gpu_verdict(
        {
            "annotations": {"cdi.k8s.io/gpu": "nvidia.com/gpu=all"},
            "linux": {"devices": [{"path": "/dev/nvidiactl"}]},
        }
    ).gpu


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
