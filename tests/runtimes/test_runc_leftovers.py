"""Where runc's cgroupfs manager puts a container's cgroups, as crgpu takes them back after a
stopped restore (real mountinfo and /proc/self/cgroup lines of a v2 node and this v1 node)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crgpu.host import proc_cgroups
from crgpu.runtimes import runc_leftovers
from crgpu.runtimes.runc_leftovers import claim_cgroups, runc_cgroup_dirs

V2_MOUNTS = [
    "30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate"
]
V2_OWN = "0::/user.slice/user-0.slice/session-3.scope\n"
V1_MOUNTS = [
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct",
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd",
]
V1_OWN = "4:memory:/process_api/0486\n2:cpuacct,cpu:/\n1:name=systemd:/init.scope\n"


def _node(monkeypatch: pytest.MonkeyPatch, mounts: list[str], own: str) -> None:
    monkeypatch.setattr(runc_leftovers, "mountinfo_lines", lambda: mounts)
    monkeypatch.setattr(proc_cgroups, "read_host_text", lambda path: own)


def test_v2_a_relative_path_lies_under_the_parent_of_runcs_own_cgroup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _node(monkeypatch, V2_MOUNTS, V2_OWN)
    dirs = runc_cgroup_dirs("web-1")
    assert Path("/sys/fs/cgroup/user.slice/user-0.slice/web-1") in dirs


def test_v1_each_hierarchy_with_its_own_cgroup(monkeypatch: pytest.MonkeyPatch) -> None:
    _node(monkeypatch, V1_MOUNTS, V1_OWN)
    assert runc_cgroup_dirs("web-1") == [
        Path("/sys/fs/cgroup/cpu,cpuacct/web-1"),
        Path("/sys/fs/cgroup/memory/process_api/0486/web-1"),
        Path("/sys/fs/cgroup/systemd/init.scope/web-1"),
    ]


def test_an_absolute_path_is_cleaned_and_never_leaves_a_hierarchy(monkeypatch: pytest.MonkeyPatch) -> None:
    _node(monkeypatch, V1_MOUNTS, V1_OWN)
    assert runc_cgroup_dirs("/crgpu/../../../etc") == [
        Path("/sys/fs/cgroup/cpu,cpuacct/etc"),
        Path("/sys/fs/cgroup/memory/etc"),
        Path("/sys/fs/cgroup/systemd/etc"),
    ]
    assert runc_cgroup_dirs("/..") == []


def test_only_what_was_missing_is_claimed_and_only_empty_dirs_go(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hierarchy = tmp_path / "cg"
    (hierarchy / "crgpu").mkdir(parents=True)
    monkeypatch.setattr(
        runc_leftovers, "mountinfo_lines", lambda: [f"35 31 0:32 / {hierarchy} rw - cgroup cgroup rw,memory"]
    )
    monkeypatch.setattr(proc_cgroups, "read_host_text", lambda path: "4:memory:/\n")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"linux": {"cgroupsPath": "/crgpu/a/b"}}))
    claim = claim_cgroups(bundle, "b")
    assert set(claim.made) == {hierarchy / "crgpu/a", hierarchy / "crgpu/a/b"}
    (hierarchy / "crgpu/a/b").mkdir(parents=True)
    (hierarchy / "crgpu/a/other").mkdir()  # someone else's, made meanwhile: kept, and so is its parent
    claim.release()
    assert sorted(p.relative_to(hierarchy).as_posix() for p in hierarchy.rglob("*")) == [
        "crgpu",
        "crgpu/a",
        "crgpu/a/other",
    ]
