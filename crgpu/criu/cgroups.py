"""Where CRIU's `cgroup.img` puts the restored processes, and what it would set there.

runc hands CRIU the container's own cgroup for each controller (`cgroup_root`); CRIU renames the
image's top cgroup of each controller to it and moves each task into the path its image names.
A path outside that top cgroup is not renamed: the task lands in the host's cgroup of that
name (the root cgroup: no memory, pids or device limits). CRIU also creates the directories the
image lists, joining their names unchecked, and sets the properties of every one it created
(`soft`, the default) or of all of them (`full`: the container's own cgroup too, its device
rules included). Field numbers from CRIU's images/cgroup.proto."""

from __future__ import annotations

from dataclasses import dataclass, field

from crgpu.criu.protobuf import fields, repeated_bytes

CGROUP_MAGIC = 0x59383330
MAX_DIRS = 10_000


@dataclass
class CgroupGrants:
    outside: list[str] = field(default_factory=list)  # "what" lines: paths leaving the container's cgroup
    own_properties: set[str] = field(default_factory=set)  # set on the container's cgroup by `full`


def read_cgroups(entries: list[bytes]) -> CgroupGrants:
    """`entries`: cgroup.img's messages (one cgroup_entry). Raises ValueError when malformed."""
    grants = CgroupGrants()
    if not entries:
        return grants
    entry = entries[0]
    tops: dict[str, list[str]] = {}
    budget = [MAX_DIRS]
    for controller in repeated_bytes(entry, 2):
        names = [_text(name) for name in repeated_bytes(controller, 1)]
        for directory in repeated_bytes(controller, 2):
            top = _text(_one(directory, 1))
            if not _clean(top.split("/")):
                grants.outside.append(f"cgroup directory {top[:120]!r}")
            for name in names:
                tops.setdefault(name, []).append(top)
            for prop in repeated_bytes(directory, 3):
                grants.own_properties.add(_text(_one(prop, 1))[:80])
            _children(directory, top, grants, budget)
    for cgset in repeated_bytes(entry, 1):
        for member in repeated_bytes(cgset, 2):
            values = fields(member)
            name, path = _text(_one(member, 1)), _text(_one(member, 2))
            prefix = values.get(3, 0)
            own = [top for name_part in name.split(",") for top in tops.get(name_part, [])]
            if not _inside(path, prefix if isinstance(prefix, int) else -1, own):
                grants.outside.append(f"{name or 'cgroup2'} cgroup {path[:120]!r}")
    return grants


def _children(directory: bytes, where: str, grants: CgroupGrants, budget: list[int]) -> None:
    for child in repeated_bytes(directory, 2):
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(f"more than {MAX_DIRS} cgroup directories")
        name = _text(_one(child, 1))
        path = f"{where}/{name}"
        if "/" in name or not _clean([name]):
            grants.outside.append(f"cgroup directory {path[:120]!r}")
        _children(child, path, grants, budget)


def _inside(path: str, prefix: int, tops: list[str]) -> bool:
    """Whether CRIU renames `path` into the container's cgroup: it lies in a top cgroup of its
    controller (by whole components, not CRIU's string prefix) and names nothing through `..`;
    with a cgroup namespace prefix, what follows the prefix starts a component."""
    if not path.startswith("/") or not _clean(path[1:].split("/")):
        return False
    if prefix and (prefix < 0 or prefix > len(path) or path[prefix:][:1] not in ("", "/")):
        return False
    return any(top and (path == f"/{top}" or path.startswith(f"/{top}/")) for top in tops)


def _clean(parts: list[str]) -> bool:
    return all(part not in ("", ".", "..") for part in parts)


def _one(message: bytes, number: int) -> bytes:
    values = repeated_bytes(message, number)
    if not values:
        raise ValueError(f"a cgroup entry without field {number}")
    return values[-1]


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")
