"""The restore guard: each case from a manifest edited to differ from this host; GPU cases with a
fake nvidia-smi and a fixture /sys tree. Every refusal is exit 4 with one line; --force proceeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crgpu.image.manifest import (
    ContainerRecord,
    GpuRecord,
    HostRecord,
    Manifest,
    RuntimeRecord,
    write_manifest,
)
from tests.fakes import write_fake_nvidia_smi, write_fake_runc
from tests.helpers import crgpu

H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake node: runc 1.1 (fixture help texts), criu 4.1.1, an empty runc root, a bundle."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cat").symlink_to("/bin/cat")
    write_fake_runc(bin_dir / "runc")
    criu(bin_dir, "4.1.1")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(tmp_path / "hostroot"))
    (tmp_path / "hostroot").mkdir()
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "config.json").write_text("{}")
    (tmp_path / "root").mkdir()
    return tmp_path


def criu(bin_dir: Path, version: str) -> None:
    path = bin_dir / "criu"
    path.write_text(f'#!/bin/sh\necho "Version: {version}"\n')
    path.chmod(0o755)


def gpus_here(tmp_path: Path, driver: str, names: list[str]) -> None:
    module = tmp_path / "hostroot" / "sys/module/nvidia"
    module.mkdir(parents=True)
    (module / "version").write_text(driver + "\n")
    gpus = [(name, f"GPU-{i:08d}-0000-0000-0000-000000000000") for i, name in enumerate(names)]
    write_fake_nvidia_smi(tmp_path / "bin" / "nvidia-smi", driver, gpus)


def image(tmp_path: Path, *, runtime: str = "runc", gpu: bool = False, **host: Any) -> Path:
    path = tmp_path / f"img-{len(list(tmp_path.glob('img-*')))}"
    path.mkdir()
    record = {"kernel": "6.18.44", "arch": "x86_64", "criu_version": "4.1.1"} | host
    manifest = Manifest(
        runtime=RuntimeRecord(
            name=runtime, version="1.1.15", path=f"/usr/sbin/{runtime}", root=str(tmp_path / "root")
        ),
        container=ContainerRecord(id="c1", bundle=str(tmp_path / "bundle"), gpu=gpu),
        host=HostRecord.model_validate(record),
    )
    write_manifest(path, manifest)
    return path


def restore(path: Path, *extra: str) -> tuple[int, str, str]:
    result = crgpu("restore", "--dry-run", "-i", str(path), *extra)
    return result.exit_code, result.stdout, result.stderr


def test_matching_image_passes(host: Path) -> None:
    code, out, err = restore(image(host))
    assert code == 0, err
    assert "argv: " in out


def test_incomplete_image_is_refused(host: Path) -> None:
    (host / "partial").mkdir()
    (host / "partial" / "pages-1.img").write_bytes(b"x")
    code, _, err = restore(host / "partial")
    assert code == 4 and "incomplete" in err


def test_runtime_mismatch(host: Path) -> None:
    code, _, err = restore(image(host), "--runtime", "runsc")
    assert code == 4 and "made by runc; it cannot be restored with runsc" in err


def test_runtime_absent(host: Path) -> None:
    code, _, err = restore(image(host, runtime="runsc"))
    assert code == 4 and "the image needs runsc, which is not usable here" in err


def test_older_criu_than_the_dump(host: Path) -> None:
    criu(host / "bin", "4.0")
    code, _, err = restore(image(host, criu_version="4.1.1"))
    assert code == 4 and "dumped by CRIU 4.1.1; this host has the older CRIU 4.0" in err


def gpu_image(host: Path, driver: str = "570.124.06", names: tuple[str, ...] = (H100,)) -> Path:
    gpus = [GpuRecord(name=n, uuid=f"GPU-{i}", memory_mib=81559).model_dump() for i, n in enumerate(names)]
    return image(host, gpu=True, driver_version=driver, gpus=gpus)


def test_gpu_image_on_another_driver_names_both(host: Path) -> None:
    gpus_here(host, "580.65.06", [H100])
    code, _, err = restore(gpu_image(host, driver="570.124.06"))
    assert code == 4
    assert "made with NVIDIA driver 570.124.06; this host has 580.65.06" in err


def test_gpu_image_on_fewer_gpus(host: Path) -> None:
    gpus_here(host, "570.124.06", [H100])
    code, _, err = restore(gpu_image(host, names=(H100, H100)))
    assert code == 4 and "used 2 GPU(s); this host has 1" in err


def test_gpu_image_on_another_model(host: Path) -> None:
    gpus_here(host, "570.124.06", ["NVIDIA A100-SXM4-80GB"])
    code, _, err = restore(gpu_image(host))
    assert code == 4 and f"ran on {H100}; this host has NVIDIA A100-SXM4-80GB" in err


def test_gpu_image_on_a_host_without_driver(host: Path) -> None:
    code, _, err = restore(gpu_image(host))
    assert code == 4 and "this host has no NVIDIA driver" in err


def test_force_proceeds_with_a_warning_naming_each_override(host: Path) -> None:
    gpus_here(host, "580.65.06", ["NVIDIA A100-SXM4-80GB"])
    code, out, err = restore(gpu_image(host, names=(H100, H100)), "--force")
    assert code == 0, err
    notes = [line for line in out.splitlines() if line.startswith("note: --force overrides")]
    assert len(notes) == 3
    assert any("570.124.06" in n and "580.65.06" in n for n in notes)


def test_refusal_lists_every_finding_in_detail(host: Path) -> None:
    gpus_here(host, "580.65.06", ["NVIDIA A100-SXM4-80GB"])
    result = crgpu("restore", "--json", "--dry-run", "-i", str(gpu_image(host, names=(H100, H100))))
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == 4 and "(and 2 more)" in doc["error"]
