"""A restored container's /dev/nvidiaN made the bundle's (CRIU restores the image's): real device
nodes made in a directory standing for the container's root, reached through a fixture /proc/PID/root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from crgpu.host.errors import PreconditionError
from crgpu.nvidia.device_nodes import NVIDIA_MAJOR, Node, given_gpu_nodes, sync_gpu_nodes

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes needs root")


@pytest.fixture
def container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Pid 100's root: a directory whose /dev holds what CRIU restored from the image."""
    root = tmp_path / "ctr-root"
    (root / "dev").mkdir(parents=True)
    os.mknod(root / "dev/nvidia0", stat.S_IFCHR | 0o666, os.makedev(NVIDIA_MAJOR, 0))
    os.mknod(root / "dev/nvidiactl", stat.S_IFCHR | 0o666, os.makedev(NVIDIA_MAJOR, 255))
    (root / "dev/null").write_text("")
    host = tmp_path / "host"
    (host / "proc/100").mkdir(parents=True)
    (host / "proc/100/root").symlink_to(root)
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(host))
    return root


def _rdev(path: Path) -> tuple[int, int]:
    info = path.lstat()
    assert stat.S_ISCHR(info.st_mode)
    return os.major(info.st_rdev), os.minor(info.st_rdev)


def test_the_bundles_nodes_replace_the_images(container: Path) -> None:
    spec = {
        "linux": {
            "devices": [
                {"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255},
                {"path": "/dev/nvidia1", "type": "c", "major": 195, "minor": 1, "fileMode": 0o660, "gid": 44},
                {"path": "/dev/nvidia-uvm", "type": "c", "major": 508, "minor": 0},
            ]
        }
    }
    nodes = given_gpu_nodes(spec)
    assert nodes == [Node("nvidia1", 1, 0o660, 0, 44)]
    changed = sync_gpu_nodes(100, nodes)
    assert changed == ["/dev/nvidia0 removed (not the bundle's)", "/dev/nvidia1 made (195:1)"]
    assert not (container / "dev/nvidia0").exists()
    assert _rdev(container / "dev/nvidia1") == (195, 1)
    info = (container / "dev/nvidia1").lstat()
    assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_gid == 44
    assert _rdev(container / "dev/nvidiactl") == (195, 255)  # not a GPU node: left as it was
    assert sync_gpu_nodes(100, nodes) == []  # already right: nothing to do


def test_a_gpu_node_name_that_is_not_a_device_is_replaced_not_followed(
    container: Path, tmp_path: Path
) -> None:
    """The container made /dev/nvidia1 a link to a host path: crgpu removes the link itself and
    makes the node; the link's target is never touched."""
    outside = tmp_path / "outside"
    outside.write_text("host file")
    (container / "dev/nvidia1").symlink_to(outside)
    sync_gpu_nodes(100, [Node("nvidia1", 1, 0o666, 0, 0)])
    assert outside.read_text() == "host file"
    assert _rdev(container / "dev/nvidia1") == (195, 1)


def test_a_dev_that_is_a_link_out_of_the_container_is_refused(container: Path, tmp_path: Path) -> None:
    """Before any node is made: /dev is a link the container made to a host directory."""
    outside = tmp_path / "host-etc"
    outside.mkdir()
    for entry in (container / "dev").iterdir():
        entry.unlink()
    (container / "dev").rmdir()
    (container / "dev").symlink_to(outside)
    with pytest.raises(PreconditionError, match="not a directory of its own"):
        sync_gpu_nodes(100, [Node("nvidia1", 1, 0o666, 0, 0)])
    assert list(outside.iterdir()) == []


def test_nodes_the_spec_does_not_describe_as_nvidia_gpus_are_ignored() -> None:
    spec = {
        "linux": {
            "devices": [
                {"path": "/dev/nvidia1", "type": "b", "major": 195, "minor": 1},  # not a char device
                {"path": "/dev/nvidia2", "type": "c", "major": 1, "minor": 2},  # not NVIDIA's major
                {"path": "/dev/../etc/nvidia3", "type": "c", "major": 195, "minor": 3},
                {"path": "/dev/nvidia4", "type": "c", "major": 195, "minor": 999},
                "garbage",
            ]
        }
    }
    assert given_gpu_nodes(spec) == []
