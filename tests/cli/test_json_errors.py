"""--json answers every outcome with one JSON document on stdout: a command line click rejects too
(before: empty stdout, exit 2, and `jq` failed in CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crgpu.host.errors import ExitCode
from tests.helpers import crgpu


@pytest.mark.parametrize(
    ("argv", "verb", "words"),
    [
        (["checkpoint", "--json", "--tcp-establishd", "x"], "checkpoint", "No such option: --tcp-establishd"),
        (["checkpoint", "--json"], "checkpoint", "Missing argument 'CONTAINER_ID'"),
        (["restore", "--json", "--no-such"], "restore", "No such option: --no-such"),
        (["cuda", "state", "--json"], "cuda state", "Missing option '--pid'"),
        (["inspect", "--json"], "inspect", "Missing argument 'IMAGE_PATH'"),
    ],
)
def test_a_usage_error_with_json_is_one_document_with_the_verb(
    argv: list[str], verb: str, words: str
) -> None:
    result = crgpu(*argv)
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 2 and doc["verb"] == verb
    assert words in doc["error"] and f"crgpu {verb} --help" in doc["hint"]
    assert words in result.stderr  # click's own message still on stderr


def test_without_json_a_usage_error_prints_nothing_on_stdout() -> None:
    result = crgpu("checkpoint", "--tcp-establishd", "x")
    assert result.exit_code == 2 and result.stdout == "" and "No such option" in result.stderr


def test_a_validation_error_names_the_verb_and_the_flags() -> None:
    result = crgpu("checkpoint", "--json", "--tcp-established", "--tcp-close", "-i", "/tmp/x-img", "c1")
    doc = json.loads(result.stdout)
    assert result.exit_code == 2 and doc["verb"] == "checkpoint" and doc["container_id"] == "c1"
    assert "--tcp-established and --tcp-close contradict each other" in doc["error"]
    assert "tcp_close" not in doc["error"] and "options: options:" not in doc["error"]


def test_an_image_path_that_does_not_exist_is_not_found(tmp_path: Path) -> None:
    """Exit 3, the table's "not found" (before: 5, a path problem, "is not a directory")."""
    for argv in (["restore", "-i"], ["inspect"], ["export", "-o", str(tmp_path / "x.tar"), "-i"]):
        result = crgpu(*argv, str(tmp_path / "nosuch"), "--json")
        doc = json.loads(result.stdout)
        assert result.exit_code == 3 and "does not exist" in doc["error"], (argv, doc)


def test_the_cuda_verbs_without_a_driver_are_a_precondition(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit 4 (before: 1, "the runtime or CRIU failed"); the code crosses the helper process."""
    from crgpu.nvidia import cuda
    from crgpu.nvidia.cuda_api import CudaError

    def no_driver() -> object:
        raise CudaError("cannot reach the CUDA driver: libcuda.so.1", exit_code=ExitCode.PRECONDITION)

    monkeypatch.setattr(cuda, "DRIVER_FACTORY", no_driver)
    result = crgpu("cuda", "state", "--pid", "1", "--json")
    assert result.exit_code == 4 and json.loads(result.stdout)["exit_code"] == 4


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run crgpu as another user")
def test_a_non_root_run_on_roots_image_says_run_as_root(tmp_path: Path) -> None:
    """Before: exit 5 or a hint to restore with --force."""
    image = tmp_path / "img"
    image.mkdir(mode=0o700)
    (image / "crgpu.json").write_text("{}")
    tmp_path.chmod(0o755)
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "crgpu", "inspect", str(image), "--json"],
        capture_output=True, text=True, timeout=60, cwd="/", env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    doc = json.loads(done.stdout)
    assert (
        done.returncode == 4 and "permission denied" in doc["error"] and "run crgpu as root" in doc["hint"]
    ), doc
