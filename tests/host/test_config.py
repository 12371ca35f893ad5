"""Node config precedence: flag, then environment, then config file, then built-in default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crgpu.host import config
from tests.fakes import install_fake_runc
from tests.helpers import crgpu


@pytest.fixture
def node_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    monkeypatch.setenv("CRGPU_CONFIG", str(path))
    monkeypatch.delenv("CRGPU_WORK_ROOT")
    return path


def test_default_then_config_then_environment(node_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node_config.write_text("")
    assert config.get("work_root") == config.Resolved("work_root", "/var/lib/crgpu/work", "default")
    node_config.write_text('work_root = "/srv/crgpu"\nrunc_roots = ["/a", "/b/*"]\n')
    assert config.get("work_root").value == "/srv/crgpu"
    assert config.get("work_root").source == f"config ({node_config})"
    assert config.get("runc_roots").value == ["/a", "/b/*"]
    monkeypatch.setenv("CRGPU_WORK_ROOT", "/env/work")
    assert config.get("work_root") == config.Resolved(
        "work_root", "/env/work", "environment (CRGPU_WORK_ROOT)"
    )


def test_flag_beats_environment_beats_config_for_the_runtime(
    node_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    node_config.write_text('runtime = "runsc"\n')
    # config says runsc: the runc container c1 is not found there
    assert crgpu("checkpoint", "--dry-run", "-i", str(tmp_path / "i"), "c1").exit_code == 3
    monkeypatch.setenv("CRGPU_RUNTIME", "runc")  # environment beats config
    assert crgpu("checkpoint", "--dry-run", "-i", str(tmp_path / "i"), "c1").exit_code == 0
    monkeypatch.setenv("CRGPU_RUNTIME", "runsc")
    assert (
        crgpu("checkpoint", "--dry-run", "--runtime", "runc", "-i", str(tmp_path / "i"), "c1").exit_code == 0
    )


def test_config_names_the_runtime_binary(
    node_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    fake = tmp_path / "fake-runc"
    monkeypatch.delenv("CRGPU_RUNC")
    node_config.write_text(f'runc = "{fake}"\n')
    result = crgpu("checkpoint", "--dry-run", "-i", str(tmp_path / "i"), "c1")
    assert result.exit_code == 0 and f"argv: {fake} --root" in result.stdout
    node_config.write_text('runc = "/nonexistent/runc"\n')
    result = crgpu("checkpoint", "--dry-run", "-i", str(tmp_path / "i"), "c1")
    assert result.exit_code == 3 and f"from config ({node_config})" in result.stderr


def test_config_option_beats_the_environment(node_config: Path, tmp_path: Path) -> None:
    node_config.write_text('work_root = "/from/env/file"\n')
    other = tmp_path / "other.toml"
    other.write_text('work_root = "/from/flag/file"\n')
    doc = json.loads(crgpu("--config", str(other), "doctor", "--json").stdout)
    settings = {item["name"]: item for item in doc["config"]}
    assert settings["work_root"]["value"] == "/from/flag/file"
    assert settings["config_file"] == {"name": "config_file", "value": str(other), "source": "--config"}
    config.set_config_file(None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1\n", "unknown setting 'bogus'"),
        ("work_root = [\n", "not valid TOML"),
        ("runc_roots = 3\n", "must be a list"),
    ],
)
def test_bad_config_is_a_usage_error(node_config: Path, text: str, message: str) -> None:
    node_config.write_text(text)
    result = crgpu("doctor")
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output


def test_doctor_shows_where_each_value_came_from(node_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node_config.write_text('cuda_checkpoint_path = "/usr/local/bin/cuda-checkpoint"\n')
    monkeypatch.setenv("CRGPU_RUNTIME", "runc")
    settings = {item["name"]: item for item in json.loads(crgpu("doctor", "--json").stdout)["config"]}
    assert settings["cuda_checkpoint_path"]["source"] == f"config ({node_config})"
    assert settings["runtime"]["source"] == "environment (CRGPU_RUNTIME)"
    assert settings["work_root"]["source"] == "default"
    plain = crgpu("doctor").stdout
    assert f"cuda_checkpoint_path = /usr/local/bin/cuda-checkpoint  (config ({node_config}))" in plain
