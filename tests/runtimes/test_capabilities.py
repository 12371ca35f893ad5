"""The runtimes' help texts cached per binary, and the binary an operator names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crgpu.host.errors import NotFoundError
from crgpu.runtimes import capabilities


def test_capabilities_are_cached_per_binary_and_mtime(tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    fake = tmp_path / "fake-runc"
    fake.write_text(f"#!/bin/sh\necho x >> {counter}\necho 'runc version 9.9.9'\n")
    fake.chmod(0o755)
    first = capabilities.cached_texts(fake, {"version": [str(fake), "--version"]})
    second = capabilities.cached_texts(fake, {"version": [str(fake), "--version"]})
    assert first == second == {"version": "runc version 9.9.9\n"}
    assert counter.read_text().count("x") == 1
    os.utime(fake, ns=(0, 1))  # a new binary: the cache must not answer
    capabilities.cached_texts(fake, {"version": [str(fake), "--version"]})
    assert counter.read_text().count("x") == 2


def test_runtime_binary_override_must_be_executable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRGPU_RUNC", str(tmp_path / "nope"))
    with pytest.raises(
        NotFoundError, match=r"runc = .*nope from environment \(CRGPU_RUNC\) is not an executable"
    ):
        capabilities.resolve_binary("runc")
