"""CRIU's cgroup.img as crgpu reads it: a real one (runc 1.1.15 and CRIU 4.1.1 on this cgroup v1
node) reaches nothing; forged paths that would put a task or a cgroup outside the container's
cgroup are found, and `--manage-cgroups-mode full` is named for what it applies."""

from __future__ import annotations

from pathlib import Path

import pytest

from crgpu.criu.cgroups import read_cgroups
from crgpu.criu.images import ImageGrants, reaching
from tests.criu_forge import decode, encode, map_members

REAL = Path(__file__).parent.parent / "fixtures" / "criu" / "cgroup-runc-1.1-cgroupv1.img"
TOP = "/crgpu-t7343-0"


def _entry() -> bytes:
    raw = REAL.read_bytes()
    length = int.from_bytes(raw[8:12], "little")
    return raw[12 : 12 + length]


def test_a_real_image_stays_inside_and_lists_its_own_properties() -> None:
    grants = read_cgroups([_entry()])
    assert grants.outside == []
    assert {"devices.list", "memory.limit_in_bytes", "pids.max"} <= grants.own_properties


@pytest.mark.parametrize(
    "path",
    ["/", f"{TOP}/../..", f"{TOP}x", f"{TOP}/./a", "crgpu-t7343-0", f"{TOP}//a"],
    ids=["root", "dotdot", "string-prefix", "dot", "relative", "empty-component"],
)
def test_a_task_put_outside_the_containers_cgroup_is_found(path: str) -> None:
    forged = map_members(_entry(), lambda name, old: path if name == "memory" else old)
    outside = read_cgroups([forged]).outside
    assert outside == [f"memory cgroup {path!r}"]


def test_a_task_deeper_inside_is_fine() -> None:
    forged = map_members(_entry(), lambda name, old: f"{old}/worker")
    assert read_cgroups([forged]).outside == []


def _with_child(entry: bytes, child_name: bytes) -> bytes:
    """The pids controller's top directory given a child directory named `child_name`."""
    out = []
    for number, value in decode(entry):
        if number == 2 and isinstance(value, bytes) and (1, b"pids") in decode(value):
            controller = []
            for sub, item in decode(value):
                if sub == 2 and isinstance(item, bytes):
                    item = encode([*decode(item), (2, encode([(1, child_name)]))])
                controller.append((sub, item))
            value = encode(controller)
        out.append((number, value))
    return encode(out)


@pytest.mark.parametrize("name", [b"..", b"../../evil", b"a/b", b""])
def test_a_cgroup_directory_that_leaves_its_parent_is_found(name: bytes) -> None:
    outside = read_cgroups([_with_child(_entry(), name)]).outside
    assert outside == [f"cgroup directory {TOP[1:] + '/' + name.decode()!r}"]


def test_a_plain_child_directory_is_fine() -> None:
    assert read_cgroups([_with_child(_entry(), b"worker")]).outside == []


def test_full_mode_is_named_for_what_it_sets_soft_is_not() -> None:
    grants = ImageGrants(cgroups=read_cgroups([_entry()]))
    assert reaching(grants, set(), set(), False) == []
    assert reaching(grants, set(), set(), False, "soft") == []
    (line,) = reaching(grants, set(), set(), False, "full")
    assert "--manage-cgroups-mode full sets the container's cgroup limits" in line and "devices.list" in line


def test_a_malformed_image_is_an_error() -> None:
    with pytest.raises(ValueError):
        read_cgroups([encode([(1, encode([(2, encode([(2, b"/x")]))]))])])  # a member without a name
