"""Network namespaces for restored containers: made new, or the operator's checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crgpu.host.errors import PreconditionError
from crgpu.host.mounts import unmount
from crgpu.host.netns import check_network_namespace, new_network_namespace
from tests.helpers import crgpu


@pytest.mark.parametrize("given", ["/etc/hostname", "/proc/self/ns/ipc", "/nonexistent/netns"])
def test_netns_that_is_not_a_network_namespace_is_refused(given: str) -> None:
    with pytest.raises(PreconditionError, match="--netns"):
        check_network_namespace(Path(given))


def test_a_process_network_namespace_is_accepted() -> None:
    check_network_namespace(Path("/proc/self/ns/net"))


@pytest.mark.skipif(os.geteuid() != 0, reason="making a network namespace needs root")
def test_a_new_network_namespace_is_its_own_and_held_by_its_file(tmp_path: Path) -> None:
    held = tmp_path / "netns"
    notes = new_network_namespace(held)
    try:
        assert os.path.ismount(held)
        check_network_namespace(held)
        assert os.stat(held).st_ino != os.stat("/proc/self/ns/net").st_ino
        assert any(str(held) in note for note in notes)
    finally:
        assert unmount(held, detach=True)


def test_netns_is_refused_for_an_image_directory(tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.mkdir()
    result = crgpu("restore", "-i", str(image), "--netns", "/proc/self/ns/net", "c1")
    assert result.exit_code == 4, result.output
    assert "--netns is for an archive's restore" in result.stderr
