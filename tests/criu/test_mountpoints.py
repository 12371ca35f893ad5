"""The mounts CRIU would restore: podman 5.4's real mountpoints image (a real `podman container
checkpoint --export` on this machine) opens nothing; forged entries that leave /proc/sys
writable, drop a mask, mount sysfs writable or mount a file system of their own are found."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from crgpu.criu.images import MNTS_MAGIC, _entries
from crgpu.criu.mountpoints import mount_reaching, parse_mounts
from tests.criu_forge import decode, encode

PODMAN = Path(__file__).parent.parent / "fixtures" / "criu" / "mountpoints-podman-5.4.img"
ON_THIS_KERNEL = {"/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs", "/proc/keys", "/proc/timer_list",
                  "/proc/acpi", "/sys/firmware"}  # fmt: skip


def _exists(path: str) -> bool:
    return path in ON_THIS_KERNEL  # the kernel podman's image was taken on


def _entries_of() -> list[bytes]:
    return _entries(PODMAN, MNTS_MAGIC)


def _edit(where: str, change: Callable[[dict[int, int | bytes]], None]) -> list[bytes]:
    """The image with the entry mounted at `where` changed (its fields by number)."""
    out = []
    for entry in _entries_of():
        values = dict(decode(entry))
        if values.get(7) == where.encode():
            change(values)
        out.append(encode(sorted(values.items())))
    return out


def _reaching(entries: list[bytes]) -> list[str]:
    return mount_reaching(parse_mounts(entries), _exists)


def test_podmans_real_mounts_open_nothing() -> None:
    assert _reaching(_entries_of()) == []


def test_every_protected_path_is_checked_where_this_kernel_has_it() -> None:
    everywhere = mount_reaching(parse_mounts(_entries_of()), lambda _path: True)
    assert "leave '/proc/sysrq-trigger' writable (the engines make it read-only)" in everywhere
    assert "leave '/proc/kcore' unmasked (the engines mask it)" in everywhere


def test_a_dropped_read_only_proc_sys_is_found() -> None:
    entries = [e for e in _entries_of() if dict(decode(e)).get(7) != b"/proc/sys"]
    assert _reaching(entries) == ["leave '/proc/sys' writable (the engines make it read-only)"]


def test_a_read_write_proc_sys_is_found() -> None:
    entries = _edit("/proc/sys", lambda v: v.update({5: 0x20000E}))
    assert "leave '/proc/sys' writable (the engines make it read-only)" in _reaching(entries)
    assert "mount proc's '/sys' writable at '/proc/sys'" in _reaching(entries)


def test_a_dropped_mask_is_found() -> None:
    entries = [e for e in _entries_of() if dict(decode(e)).get(7) != b"/proc/keys"]
    assert _reaching(entries) == ["leave '/proc/keys' unmasked (the engines mask it)"]


@pytest.mark.parametrize("where", ["/sys", "/sys/fs/cgroup/memory"])
def test_sysfs_or_a_cgroup_hierarchy_mounted_writable_is_found(where: str) -> None:
    def writable(values: dict[int, int | bytes]) -> None:
        values[5] = 0x20000E
        values.pop(18, None)  # CRIU's own mount, not runc's external one

    found = _reaching(_edit(where, writable))
    assert any(line.startswith("mount ") and f"writable at {where!r}" in line for line in found), found


def _extra(**fields: int | bytes) -> bytes:
    base: dict[int, int | bytes] = {
        1: 5,
        2: 999,
        3: 77,
        4: 79,
        5: 0x200000,
        6: b"/",
        7: b"/mnt",
        8: b"x",
        9: b"",
    }
    base.update({int(k[1:]): v for k, v in fields.items()})
    return encode(sorted(base.items()))


def test_a_second_proc_without_the_masks_is_found() -> None:
    found = _reaching([*_entries_of(), _extra(f1=1, f7=b"/mnt/proc")])
    assert "leave '/mnt/proc/sys' writable (the engines make it read-only)" in found
    assert "leave '/mnt/proc/keys' unmasked (the engines mask it)" in found


def test_an_overlay_of_its_own_is_found_a_bind_of_the_root_is_not() -> None:
    root_dev = next(dict(decode(e))[3] for e in _entries_of() if dict(decode(e)).get(7) == b"/")
    assert isinstance(root_dev, int)
    assert _reaching([*_entries_of(), _extra(f1=17, f3=root_dev, f6=b"/data")]) == []
    found = _reaching([*_entries_of(), _extra(f1=17, f9=b"lowerdir=/etc")])
    assert found == ["mount an overlay of their own (its layers name paths of this host) at '/mnt'"]


def test_another_file_system_is_found() -> None:
    assert _reaching([*_entries_of(), _extra(f1=3, f8=b"devtmpfs")]) == [
        "mount devtmpfs 'devtmpfs' at '/mnt'"
    ]


def test_a_malformed_entry_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_mounts([encode([(1, b"not a number")])])
