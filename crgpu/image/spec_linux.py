"""The linux section of an archive's spec, rebuilt: namespaces (never a path), id mappings, resources with device access from deny-all, device nodes, seccomp (never its listener), masked and read-only paths, namespaced sysctls; what is weaker than an engine's default is listed as reaching the host."""

from __future__ import annotations

import re
from typing import Any

from crgpu.criu.seccomp_bpf import REFUSED_SYSCALLS
from crgpu.host.errors import PreconditionError
from crgpu.image.spec_values import PLAIN_NAME, U64, Rebuild, as_dict, as_uint, show, strings

OWN_NAMESPACES = ("pid", "network", "ipc", "uts", "mount")
NAMESPACE_TYPES = {"pid", "network", "ipc", "uts", "mount", "cgroup", "user", "time"}
# The device nodes runc and the engines give every container: path -> (type, major, minor).
DEFAULT_DEVICES = {
    "/dev/null": ("c", 1, 3), "/dev/zero": ("c", 1, 5), "/dev/full": ("c", 1, 7),
    "/dev/random": ("c", 1, 8), "/dev/urandom": ("c", 1, 9), "/dev/tty": ("c", 5, 0),
    "/dev/console": ("c", 5, 1), "/dev/ptmx": ("c", 5, 2), "/dev/fuse": ("c", 10, 229),
    "/dev/net/tun": ("c", 10, 200),
}  # fmt: skip
DEFAULT_DEVICE_NUMBERS = {(kind, major, minor) for kind, major, minor in DEFAULT_DEVICES.values()}
CONFINING_ACTIONS = {"SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                     "SCMP_ACT_TRAP"}  # fmt: skip
# Sysctls in a container's own namespaces (runc's validator accepts these with the namespace).
NAMESPACED_SYSCTLS = re.compile(
    r"(net\.|fs\.mqueue\.|kernel\.(msgmax|msgmnb|msgmni|sem|shmall|shmmax|shmmni|shm_rmid_forced)$)"
)
PRIVATE_PROPAGATION = {"private", "rprivate", "slave", "rslave"}


def linux_section(src: dict[str, Any], container_id: str, work: Rebuild) -> dict[str, Any]:
    linux: dict[str, Any] = {"cgroupsPath": f"/crgpu/{container_id}"}
    namespaces: list[dict[str, str]] = []
    for item in src.get("namespaces") or [] if isinstance(src.get("namespaces"), list) else []:
        entry = as_dict(item)
        kind = entry.get("type")
        if kind not in NAMESPACE_TYPES or any(ns["type"] == kind for ns in namespaces):
            continue
        if entry.get("path"):
            work.external_net |= kind == "network"
            work.notes.append(
                f"the {kind} namespace path of the archive's host was dropped: a new one is made"
            )
        namespaces.append({"type": str(kind)})
    linux["namespaces"] = namespaces
    own = {ns["type"] for ns in namespaces}
    work.reaching += [f"shares this host's {kind} namespace" for kind in OWN_NAMESPACES if kind not in own]
    for key in ("uidMappings", "gidMappings"):
        mappings = [_id_mapping(m) for m in src.get(key) or [] if isinstance(src.get(key), list)]
        if any(m is not None for m in mappings):
            linux[key] = [m for m in mappings if m is not None][:64]
    linux["resources"] = _resources(as_dict(src.get("resources")), work)
    devices = []
    for item in src.get("devices") or [] if isinstance(src.get("devices"), list) else []:
        device = _device(as_dict(item))
        if device is None:
            continue
        number = (device["type"], device["major"], device["minor"])
        if DEFAULT_DEVICES.get(device["path"]) != number:
            work.reaching.append(
                f"creates the device node {device['path']} ({device['type']} {device['major']}:{device['minor']})"
            )
        devices.append(device)
    if devices:
        linux["devices"] = devices
    seccomp = _seccomp(src.get("seccomp"), work)
    if seccomp is not None:
        linux["seccomp"] = seccomp
    for key in ("maskedPaths", "readonlyPaths"):
        paths = [p for p in strings(src.get(key), 256) if p.startswith("/")]
        if paths:
            linux[key] = paths
    sysctl = {k: v for k, v in as_dict(src.get("sysctl")).items() if isinstance(v, str)}
    kept = {k: v for k, v in sysctl.items() if NAMESPACED_SYSCTLS.match(k)}
    if kept:
        linux["sysctl"] = kept
    if len(kept) < len(as_dict(src.get("sysctl"))):
        work.notes.append("sysctls outside the container's own namespaces were dropped")
    propagation = src.get("rootfsPropagation")
    if propagation in PRIVATE_PROPAGATION:
        linux["rootfsPropagation"] = propagation
    for key in ("mountLabel",):
        if isinstance(src.get(key), str) and PLAIN_NAME.fullmatch(src[key]):
            linux[key] = src[key]
    left = sorted(set(src) - {"cgroupsPath", "namespaces", "uidMappings", "gidMappings", "resources", "devices",
                              "seccomp", "maskedPaths", "readonlyPaths", "sysctl", "rootfsPropagation",
                              "mountLabel"})  # fmt: skip
    if left:
        work.notes.append("left out of the archive's linux section: " + ", ".join(show(k) for k in left[:10]))
    return linux


def _id_mapping(value: object) -> dict[str, int] | None:
    entry = as_dict(value)
    numbers = {key: as_uint(entry.get(key)) for key in ("containerID", "hostID", "size")}
    if any(v is None for v in numbers.values()):
        return None
    return {key: int(v) for key, v in numbers.items() if v is not None}


def _device(entry: dict[str, Any]) -> dict[str, Any] | None:
    path, kind = entry.get("path"), entry.get("type")
    major, minor = as_uint(entry.get("major")), as_uint(entry.get("minor"))
    if not isinstance(path, str) or not path.startswith("/dev/") or ".." in path.split("/"):
        return None
    if kind not in ("c", "b", "u", "p") or major is None or minor is None:
        return None
    device: dict[str, Any] = {"path": path, "type": kind, "major": major, "minor": minor}
    for key in ("fileMode", "uid", "gid"):
        if as_uint(entry.get(key)) is not None:
            device[key] = entry[key]
    return device


def _resources(src: dict[str, Any], work: Rebuild) -> dict[str, Any]:
    """Limits copied; device access starts from deny-all (a spec without that rule would let the
    container open every host device), and any allow rule beyond the defaults is listed."""
    resources: dict[str, Any] = {}
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    for item in src.get("devices") or [] if isinstance(src.get("devices"), list) else []:
        rule = _device_rule(as_dict(item))
        if rule is None or rule == rules[0]:
            continue
        if rule["allow"] and not _default_rule(rule):
            number = f"{rule.get('major', '*')}:{rule.get('minor', '*')}"
            work.reaching.append(f"allows device access {rule.get('type', 'a')} {number} {rule['access']}")
        rules.append(rule)
    resources["devices"] = rules
    memory = {k: v for k, v in as_dict(src.get("memory")).items()
              if k in ("limit", "reservation", "swap", "swappiness") and isinstance(v, int) and not isinstance(v, bool)}  # fmt: skip
    if memory:
        resources["memory"] = memory
    cpu = {k: v for k, v in as_dict(src.get("cpu")).items()
           if (k in ("shares", "quota", "period") and isinstance(v, int) and not isinstance(v, bool))
           or (k in ("cpus", "mems") and isinstance(v, str) and re.fullmatch(r"[0-9,-]{0,256}", v))}  # fmt: skip
    if cpu:
        resources["cpu"] = cpu
    pids = as_dict(src.get("pids")).get("limit")
    if isinstance(pids, int) and not isinstance(pids, bool):
        resources["pids"] = {"limit": pids}
    return resources


def _device_rule(entry: dict[str, Any]) -> dict[str, Any] | None:
    allow, access = entry.get("allow"), entry.get("access", "rwm")
    if not isinstance(allow, bool) or not isinstance(access, str) or not re.fullmatch(r"[rwm]{1,3}", access):
        return None
    rule: dict[str, Any] = {"allow": allow, "access": access}
    kind = entry.get("type", "a")
    if kind not in ("a", "c", "b"):
        return None
    if kind != "a":
        rule["type"] = kind
    for key in ("major", "minor"):
        number = entry.get(key)
        if number is not None:
            if as_uint(number) is None:
                return None
            rule[key] = number
    return rule


def _default_rule(rule: dict[str, Any]) -> bool:
    """An allow rule every engine's container has: mknod of anything (Docker's `c *:* m`,
    `b *:* m`), the default device nodes, and the pseudo-terminals (136:*)."""
    if rule["access"] == "m" and rule.get("type") in ("c", "b"):
        return True
    if rule.get("type") != "c":
        return False
    major, minor = rule.get("major"), rule.get("minor")
    if major == 136 and minor is None:
        return True
    return ("c", major, minor) in DEFAULT_DEVICE_NUMBERS


def _seccomp(value: object, work: Rebuild) -> dict[str, Any] | None:
    src = as_dict(value)
    if not src:
        work.reaching.append("runs without a seccomp profile")
        return None
    profile: dict[str, Any] = {}
    action = src.get("defaultAction")
    if not isinstance(action, str) or not re.fullmatch(r"SCMP_ACT_[A-Z_]{1,20}", action):
        raise PreconditionError("the archive's seccomp profile has no valid defaultAction")
    profile["defaultAction"] = action
    if action not in CONFINING_ACTIONS:
        work.reaching.append(f"a seccomp profile that lets every system call through by default ({action})")
    if as_uint(src.get("defaultErrnoRet")) is not None:
        profile["defaultErrnoRet"] = src["defaultErrnoRet"]
    arches = [
        a for a in strings(src.get("architectures"), 16) if re.fullmatch(r"SCMP_ARCH_[A-Z0-9_]{1,20}", a)
    ]
    if arches:
        profile["architectures"] = arches
    flags = [f for f in strings(src.get("flags"), 8) if re.fullmatch(r"SECCOMP_FILTER_FLAG_[A-Z_]{1,30}", f)]
    if flags:
        profile["flags"] = flags
    if src.get("listenerPath") or src.get("listenerMetadata"):
        work.notes.append("the seccomp profile's listener (a socket on the archive's host) was dropped")
    rules = []
    opened = set()
    for item in src.get("syscalls") or [] if isinstance(src.get("syscalls"), list) else []:
        rule = _syscall_rule(as_dict(item))
        if rule is None:
            continue
        if rule["action"] not in CONFINING_ACTIONS and "args" not in rule:
            opened |= set(rule["names"]) & REFUSED_SYSCALLS
        rules.append(rule)
    if opened:
        work.reaching.append("a seccomp profile that allows " + ", ".join(sorted(opened)))
    profile["syscalls"] = rules
    return profile


def _syscall_rule(entry: dict[str, Any]) -> dict[str, Any] | None:
    names = [n for n in strings(entry.get("names"), 1024) if re.fullmatch(r"[a-z0-9_]{1,64}", n)]
    action = entry.get("action")
    if not names or not isinstance(action, str) or not re.fullmatch(r"SCMP_ACT_[A-Z_]{1,20}", action):
        return None
    rule: dict[str, Any] = {"names": names, "action": action}
    if as_uint(entry.get("errnoRet")) is not None:
        rule["errnoRet"] = entry["errnoRet"]
    args = []
    for arg in entry.get("args") or [] if isinstance(entry.get("args"), list) else []:
        arg = as_dict(arg)
        index, value, op = as_uint(arg.get("index"), 5), as_uint(arg.get("value"), U64), arg.get("op")
        if (
            index is None
            or value is None
            or not isinstance(op, str)
            or not re.fullmatch(r"SCMP_CMP_[A-Z_]{1,12}", op)
        ):
            return None  # a rule whose condition cannot be kept must not become unconditional
        copied: dict[str, Any] = {"index": index, "value": value, "op": op}
        if as_uint(arg.get("valueTwo"), U64) is not None:
            copied["valueTwo"] = arg["valueTwo"]
        args.append(copied)
    if args:
        rule["args"] = args
    return rule
