"""The CLI's contract: exit codes, one-line errors, JSON on stdout only, dry-run runs nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes import install_fake_runc
from tests.helpers import crgpu


@pytest.fixture
def fake_runc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared fake runc (tests/fakes.py): answers from the captured 1.1 help texts, logs calls."""
    return install_fake_runc(tmp_path, monkeypatch)


def test_version() -> None:
    result = crgpu("--version")
    assert result.exit_code == 0 and result.stdout.startswith("crgpu 0.")


def test_help_lists_exit_codes_and_examples() -> None:
    assert "Exit codes" in crgpu("--help").stdout
    out = crgpu("checkpoint", "--help").stdout
    assert "Examples" in out and "--link-remap" in out


def test_dry_run_prints_the_plan_and_runs_nothing(fake_runc: Path, tmp_path: Path) -> None:
    image = tmp_path / "img"
    result = crgpu("checkpoint", "--dry-run", "--link-remap", "--tcp-close", "-i", str(image), "c1")
    assert result.exit_code == 0, result.output
    assert (
        "argv: " in result.stdout and "--link-remap" not in result.stdout.split("argv: ")[1].splitlines()[0]
    )
    assert f"env: CRIU_CONFIG_FILE={image}/crgpu-criu-dump.conf" in result.stdout
    assert "  link-remap" in result.stdout and "  tcp-close" in result.stdout
    assert not image.exists()
    assert " checkpoint --image-path" not in fake_runc.read_text()


def test_json_dry_run_is_one_document(fake_runc: Path, tmp_path: Path) -> None:
    result = crgpu("checkpoint", "--dry-run", "--json", "-i", str(tmp_path / "i"), "c1")
    doc = json.loads(result.stdout)
    for key in (
        "ok",
        "runtime",
        "runtime_version",
        "container_id",
        "image_path",
        "work_path",
        "argv",
        "exit_code",
        "duration_s",
    ):
        assert key in doc
    assert doc["runtime_version"] == "1.1.15+ds1"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["checkpoint", "c1"], 2, "give --image-path DIR (or --hand-off"),
        (["checkpoint", "-i", "/tmp/x", "a/b"], 2, "invalid container ID"),
        (["checkpoint", "-i", "/tmp/x", "--manage-cgroups-mode", "bogus", "c1"], 2, "--manage-cgroups-mode"),
        (["checkpoint", "-i", "/tmp/x", "nosuch"], 3, "container 'nosuch' not found"),
        (["checkpoint", "-i", "/tmp/x", "--compression", "none", "c1"], 4, "runsc option"),
        (["checkpoint", "-i", "/tmp/x", "--manage-cgroups-mode", "ignore", "c1"], 4, "runc 1.2 or newer"),
    ],
)
def test_bad_input_gives_one_line_and_its_exit_code(
    fake_runc: Path, args: list[str], code: int, message: str
) -> None:
    result = crgpu(*args)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_existing_non_empty_image_path_is_refused_untouched(fake_runc: Path, tmp_path: Path) -> None:
    image = tmp_path / "img"
    image.mkdir()
    (image / "keep").write_text("precious")
    result = crgpu("checkpoint", "-i", str(image), "c1")
    assert result.exit_code == 5
    assert "never overwrites" in result.stderr
    assert (image / "keep").read_text() == "precious"


def test_json_error_document(fake_runc: Path) -> None:
    result = crgpu("checkpoint", "--json", "-i", "/tmp/x", "nosuch")
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 3 and "not found" in doc["error"] and doc["hint"]
    # exactly the keys of a run's document, so a script reads one shape
    run = json.loads(crgpu("checkpoint", "--json", "--dry-run", "-i", "/tmp/crgpu-nonexistent", "c1").stdout)
    assert set(doc) == set(run)
    assert doc["argv"] == [] and doc["stats"] == {} and doc["runtime"] is None


def test_restore_without_manifest_is_refused(tmp_path: Path) -> None:
    result = crgpu("restore", "-i", str(tmp_path))
    assert result.exit_code == 4
    assert "no crgpu.json" in result.stderr


def test_missing_runtime_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    (root / "c1").mkdir(parents=True)
    (root / "c1" / "state.json").write_text("{}")
    monkeypatch.setenv("CRGPU_RUNC_ROOTS", str(root))
    monkeypatch.setenv("PATH", str(tmp_path))
    result = crgpu("checkpoint", "-i", str(tmp_path / "i"), "c1")
    assert result.exit_code == 3
    assert "runc not found on PATH" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "\x00"],
        ["export", "-i", "\x00", "-o", "/tmp/crgpu-never"],
        ["export", "-i", "/tmp", "-o", "bad\x00name"],
        ["doctor", "-i", "\x00"],
        ["checkpoint", "--root", "\x00", "-i", "/tmp/crgpu-never", "c1"],
    ],
)
def test_a_nul_byte_in_a_path_is_a_usage_error_not_a_traceback(args: list[str]) -> None:
    """Typer's Path type stats paths while parsing and raised ValueError on a NUL byte."""
    result = crgpu(*args)
    assert result.exit_code == 2 and "NUL byte" in result.stderr, result.output
