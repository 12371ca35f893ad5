"""Docker's data root found from the daemon's own files: its running command line, then its
daemon.json, then Docker's default; a setting wins. /proc and /etc are a fake host here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crgpu.runtimes.docker_root import docker_data_root


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(tmp_path))
    monkeypatch.delenv("CRGPU_DOCKER_DATA_ROOT", raising=False)
    (tmp_path / "proc" / "1").mkdir(parents=True)
    (tmp_path / "proc" / "1" / "comm").write_text("systemd\n")
    (tmp_path / "etc" / "docker").mkdir(parents=True)
    return tmp_path


def _dockerd(host: Path, *argv: str) -> None:
    (host / "proc" / "812").mkdir()
    (host / "proc" / "812" / "comm").write_text("dockerd\n")
    (host / "proc" / "812" / "cmdline").write_text("\0".join(["/usr/sbin/dockerd", *argv]) + "\0")


@pytest.mark.parametrize(
    "argv", [["--data-root=/srv/docker"], ["--data-root", "/srv/docker"], ["-g", "/srv/docker"]]
)
def test_the_running_daemons_data_root_is_taken(host: Path, argv: list[str]) -> None:
    _dockerd(host, "-H", "fd://", *argv)
    (host / "etc" / "docker" / "daemon.json").write_text(json.dumps({"data-root": "/elsewhere"}))
    assert docker_data_root() == Path(f"{host}/srv/docker")


def test_daemon_json_when_the_command_line_names_none(host: Path) -> None:
    _dockerd(host, "-H", "fd://")
    (host / "etc" / "docker" / "daemon.json").write_text(json.dumps({"data-root": "/data/docker"}))
    assert docker_data_root() == Path(f"{host}/data/docker")


def test_the_daemons_own_config_file(host: Path) -> None:
    _dockerd(host, "--config-file", "/opt/d.json")
    (host / "opt").mkdir()
    (host / "opt" / "d.json").write_text(json.dumps({"data-root": "/d"}))
    assert docker_data_root() == Path(f"{host}/d")


def test_dockers_default_without_a_daemon(host: Path) -> None:
    assert docker_data_root() == Path("/var/lib/docker")


def test_a_relative_or_damaged_value_is_not_taken(host: Path) -> None:
    _dockerd(host, "--data-root=relative")
    (host / "etc" / "docker" / "daemon.json").write_text("{not json")
    assert docker_data_root() == Path("/var/lib/docker")


def test_the_setting_wins(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dockerd(host, "--data-root=/srv/docker")
    monkeypatch.setenv("CRGPU_DOCKER_DATA_ROOT", "/mine")
    assert docker_data_root() == Path("/mine")
