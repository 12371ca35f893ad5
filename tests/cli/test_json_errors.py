"""--json answers every outcome with one JSON document on stdout: a command line click rejects too
(before: empty stdout, exit 2, and `jq` failed in CI)."""

from __future__ import annotations

import json

import pytest

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
