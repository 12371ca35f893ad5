"""An archive's OCI spec is data: the restore bundle's spec is crgpu's own, with the archive's
values copied into it field by field where they are of the kinds an engine writes.

Everything else is left out: hooks (host commands), namespace paths (another host's processes),
annotations outside a short list (runc hands `org.criu.config` to CRIU as a config file,
`org.systemd.property.*` to systemd), seccomp listeners (a host socket), Intel RDT, sysctls that
are not namespaced. What is copied but would reach this host beyond what the engines give a
container by default (capabilities, host namespaces, bind mounts of this host's paths, device
nodes and device access, a weaker or missing seccomp profile, AppArmor or SELinux switched off,
non-engine mount types) is listed, and the restore needs --trust-image for it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from crgpu.criu.seccomp_bpf import REFUSED_SYSCALLS
from crgpu.host.errors import PreconditionError
from crgpu.host.safedirs import write_new_private

# What a container gets without asking (the engines' default capability set).
DEFAULT_CAPS = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT", "CAP_MKNOD",
    "CAP_AUDIT_WRITE", "CAP_NET_RAW",
}  # fmt: skip
OWN_NAMESPACES = ("pid", "network", "ipc", "uts", "mount")
NAMESPACE_TYPES = {"pid", "network", "ipc", "uts", "mount", "cgroup", "user", "time"}
CAP_KINDS = ("bounding", "effective", "inheritable", "permitted", "ambient")
# Annotations kept: what engines and Kubernetes write to describe a container. Nothing runc,
# CRIU or systemd reads as configuration.
ANNOTATION_PREFIXES = ("io.kubernetes.", "io.container.manager", "org.opencontainers.image.",
                       "io.podman.annotations.", "cdi.k8s.io/")  # fmt: skip
ANNOTATIONS_MAX = 256
# Mount types an engine puts into a container's spec; bind mounts are checked for their source.
MOUNT_TYPES = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "bind", "shm"}
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
_CAP = re.compile(r"CAP_[A-Z_]{1,32}")
_RLIMIT = re.compile(r"RLIMIT_[A-Z]{1,16}")
_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,256}")
U32 = 2**32 - 1
U64 = 2**64 - 1


@dataclass
class RebuiltSpec:
    spec: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what was left out or changed
    reaching: list[str] = field(default_factory=list)  # what would reach this host
    # Empty files or directories in the bundle for bind mounts from the archive's host: (path, dir?)
    stand_ins: list[tuple[Path, bool]] = field(default_factory=list)

    def make_stand_ins(self) -> None:
        for path, is_dir in self.stand_ins:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            if is_dir:
                path.mkdir(mode=0o755)
            else:
                write_new_private(path, b"", 0o644)


class _Rebuild:
    def __init__(self, bundle: Path) -> None:
        self.bundle = bundle
        self.notes: list[str] = []
        self.reaching: list[str] = []
        self.stand_ins: list[tuple[Path, bool]] = []


def rebuild_spec(src: dict[str, Any], bundle: Path, container_id: str) -> RebuiltSpec:
    """The bundle's spec for an archive's spec (changed here: pass a copy); nothing is written.
    The root path is the caller's to set."""
    work = _Rebuild(bundle)
    if src.pop("hooks", None):
        work.notes.append("the spec's hooks were dropped (an archive never decides what runs on this host)")
    version = src.get("ociVersion")
    spec: dict[str, Any] = {
        "ociVersion": version
        if isinstance(version, str) and re.fullmatch(r"1\.\d+\.\d+[\w.+-]*", version)
        else "1.0.2",
        "process": _process(src.get("process"), work),
        "root": {"path": "rootfs", "readonly": _dict(src.get("root")).get("readonly") is True},
        "mounts": _mounts(src.get("mounts"), work),
        "linux": _linux(_dict(src.get("linux")), container_id, work),
    }
    for key in ("hostname", "domainname"):
        value = src.get(key)
        if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9.-]{1,253}", value):
            spec[key] = value
    annotations = _annotations(src.get("annotations"), work)
    if annotations:
        spec["annotations"] = annotations
    left = sorted(set(src) - {"ociVersion", "process", "root", "mounts", "linux", "hostname", "domainname",
                              "annotations", "hooks"})  # fmt: skip
    if left:
        work.notes.append("left out of the archive's spec: " + ", ".join(_show(k) for k in left[:10]))
    return RebuiltSpec(spec, work.notes, work.reaching, work.stand_ins)


def spec_grants(spec: dict[str, Any]) -> tuple[set[str], set[str], bool]:
    """What a spec (the bundle's) lets a container have: capabilities (with the engines'
    defaults), the namespaces it makes the container's own, whether seccomp confines it."""
    process = _dict(spec.get("process"))
    caps = set(DEFAULT_CAPS)
    for kind in CAP_KINDS:
        caps |= set(_strings(_dict(process.get("capabilities")).get(kind)))
    linux = _dict(spec.get("linux"))
    own = {
        str(_dict(ns).get("type"))
        for ns in linux.get("namespaces") or []
        if isinstance(linux.get("namespaces"), list)
    }
    return caps, own, bool(_dict(linux.get("seccomp")))


def _show(value: object) -> str:
    return repr(str(value)[:80])


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _uint(value: object, limit: int = U32) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit else None


def _strings(value: object, limit: int = 65_536) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value[:limit] if isinstance(item, str) and "\0" not in item]


def _process(value: object, work: _Rebuild) -> dict[str, Any]:
    src = _dict(value)
    args = _strings(src.get("args"))
    if not args:
        raise PreconditionError("the archive's spec has no process to run (process.args)")
    process: dict[str, Any] = {
        "terminal": src.get("terminal") is True,
        "args": args,
        "env": _strings(src.get("env")),
    }
    cwd = src.get("cwd")
    process["cwd"] = cwd if isinstance(cwd, str) and cwd.startswith("/") and "\0" not in cwd else "/"
    user_src = _dict(src.get("user"))
    user: dict[str, Any] = {"uid": _uint(user_src.get("uid")) or 0, "gid": _uint(user_src.get("gid")) or 0}
    if _uint(user_src.get("umask"), 0o777) is not None:
        user["umask"] = user_src["umask"]
    groups = [g for g in user_src.get("additionalGids") or [] if _uint(g) is not None] if isinstance(
        user_src.get("additionalGids"), list) else []  # fmt: skip
    if groups:
        user["additionalGids"] = groups[:256]
    process["user"] = user
    caps_src = _dict(src.get("capabilities"))
    caps = {
        kind: sorted({c for c in _strings(caps_src.get(kind)) if _CAP.fullmatch(c)}) for kind in CAP_KINDS
    }
    process["capabilities"] = {kind: names for kind, names in caps.items() if names}
    extra = sorted(set().union(*caps.values()) - DEFAULT_CAPS)
    if extra:
        work.reaching.append("privileges beyond the engines' defaults: " + ", ".join(extra))
    rlimits = []
    for item in src.get("rlimits") or [] if isinstance(src.get("rlimits"), list) else []:
        entry = _dict(item)
        kind, hard, soft = entry.get("type"), _uint(entry.get("hard"), U64), _uint(entry.get("soft"), U64)
        if isinstance(kind, str) and _RLIMIT.fullmatch(kind) and hard is not None and soft is not None:
            rlimits.append({"type": kind, "hard": hard, "soft": soft})
    if rlimits:
        process["rlimits"] = rlimits[:32]
    if isinstance(src.get("noNewPrivileges"), bool):
        process["noNewPrivileges"] = src["noNewPrivileges"]
    oom = src.get("oomScoreAdj")
    if isinstance(oom, int) and not isinstance(oom, bool) and -1000 <= oom <= 1000:
        process["oomScoreAdj"] = oom
    apparmor = src.get("apparmorProfile")
    if isinstance(apparmor, str) and apparmor:
        if apparmor == "unconfined":
            work.reaching.append("runs without AppArmor (apparmorProfile unconfined)")
        if _NAME.fullmatch(apparmor):
            process["apparmorProfile"] = apparmor
    selinux = src.get("selinuxLabel")
    if isinstance(selinux, str) and selinux:
        if any(kind in selinux for kind in ("spc_t", "unconfined_t")):
            work.reaching.append(f"runs with an unconfined SELinux label ({_show(selinux)})")
        if _NAME.fullmatch(selinux):
            process["selinuxLabel"] = selinux
    return process


def _annotations(value: object, work: _Rebuild) -> dict[str, str]:
    kept: dict[str, str] = {}
    dropped = []
    for key, item in _dict(value).items():
        if isinstance(item, str) and key.startswith(ANNOTATION_PREFIXES) and len(kept) < ANNOTATIONS_MAX:
            kept[key] = item
        else:
            dropped.append(key)
    if dropped:
        shown = ", ".join(_show(k) for k in sorted(dropped)[:8])
        more = f" and {len(dropped) - 8} more" if len(dropped) > 8 else ""
        work.notes.append(
            f"annotations the runtime or CRIU would read as configuration were dropped: {shown}{more}"
        )
    return kept


def _mounts(value: object, work: _Rebuild) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = []
    for item in value if isinstance(value, list) else []:
        src = _dict(item)
        destination = src.get("destination")
        if not isinstance(destination, str) or not destination.startswith("/") or "\0" in destination:
            work.notes.append(f"a mount without an absolute destination was dropped: {_show(destination)}")
            continue
        options = _strings(src.get("options"), 64)
        kind = str(src["type"]) if isinstance(src.get("type"), str) else ""
        source = str(src["source"]) if isinstance(src.get("source"), str) else ""
        if "\0" in source:
            continue
        is_bind = kind == "bind" or "bind" in options or "rbind" in options
        mount: dict[str, Any] = {"destination": destination, "type": "bind" if is_bind else kind,
                                 "source": source, "options": options}  # fmt: skip
        if is_bind:
            _bind_source(mount, len(mounts), work)
        elif kind not in MOUNT_TYPES:
            work.reaching.append(
                f"mounts a {_show(kind)} file system from {_show(source)} at {_show(destination)}"
            )
        mounts.append(mount)
    return mounts


def _bind_source(mount: dict[str, Any], index: int, work: _Rebuild) -> None:
    """runc resolves a relative bind source against the bundle directory (specconv), so it is
    resolved the same way before the host-path rule."""
    source, destination = mount["source"], mount["destination"]
    resolved = os.path.normpath(os.path.join(work.bundle, source)) if source else ""
    if not source or not source.startswith("/"):
        work.reaching.append(
            f"bind-mounts {_show(source)} (relative to the bundle: this host's {resolved or work.bundle}) "
            f"at {_show(destination)}"
        )
    elif os.path.lexists(source):
        work.reaching.append(f"bind-mounts this host's {source} at {destination}")
    else:
        # An empty file or directory in the bundle instead (a directory by its name: a mount of
        # a file over a directory fails in runc).
        name = PurePosixPath(source).name or "root"
        path = work.bundle / "mounts" / f"{index}-{name}"
        work.stand_ins.append((path, name in ("shm", "mqueue") or source.endswith("/")))
        mount["source"] = str(path)
        work.notes.append(f"{destination}: bound from an empty stand-in ({source} is the archive host's)")


def _linux(src: dict[str, Any], container_id: str, work: _Rebuild) -> dict[str, Any]:
    linux: dict[str, Any] = {"cgroupsPath": f"/crgpu/{container_id}"}
    namespaces: list[dict[str, str]] = []
    for item in src.get("namespaces") or [] if isinstance(src.get("namespaces"), list) else []:
        entry = _dict(item)
        kind = entry.get("type")
        if kind not in NAMESPACE_TYPES or any(ns["type"] == kind for ns in namespaces):
            continue
        if entry.get("path"):
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
    linux["resources"] = _resources(_dict(src.get("resources")), work)
    devices = []
    for item in src.get("devices") or [] if isinstance(src.get("devices"), list) else []:
        device = _device(_dict(item))
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
        paths = [p for p in _strings(src.get(key), 256) if p.startswith("/")]
        if paths:
            linux[key] = paths
    sysctl = {k: v for k, v in _dict(src.get("sysctl")).items() if isinstance(v, str)}
    kept = {k: v for k, v in sysctl.items() if NAMESPACED_SYSCTLS.match(k)}
    if kept:
        linux["sysctl"] = kept
    if len(kept) < len(_dict(src.get("sysctl"))):
        work.notes.append("sysctls outside the container's own namespaces were dropped")
    propagation = src.get("rootfsPropagation")
    if propagation in PRIVATE_PROPAGATION:
        linux["rootfsPropagation"] = propagation
    for key in ("mountLabel",):
        if isinstance(src.get(key), str) and _NAME.fullmatch(src[key]):
            linux[key] = src[key]
    left = sorted(set(src) - {"cgroupsPath", "namespaces", "uidMappings", "gidMappings", "resources", "devices",
                              "seccomp", "maskedPaths", "readonlyPaths", "sysctl", "rootfsPropagation",
                              "mountLabel"})  # fmt: skip
    if left:
        work.notes.append(
            "left out of the archive's linux section: " + ", ".join(_show(k) for k in left[:10])
        )
    return linux


def _id_mapping(value: object) -> dict[str, int] | None:
    entry = _dict(value)
    numbers = {key: _uint(entry.get(key)) for key in ("containerID", "hostID", "size")}
    if any(v is None for v in numbers.values()):
        return None
    return {key: int(v) for key, v in numbers.items() if v is not None}


def _device(entry: dict[str, Any]) -> dict[str, Any] | None:
    path, kind = entry.get("path"), entry.get("type")
    major, minor = _uint(entry.get("major")), _uint(entry.get("minor"))
    if not isinstance(path, str) or not path.startswith("/dev/") or ".." in path.split("/"):
        return None
    if kind not in ("c", "b", "u", "p") or major is None or minor is None:
        return None
    device: dict[str, Any] = {"path": path, "type": kind, "major": major, "minor": minor}
    for key in ("fileMode", "uid", "gid"):
        if _uint(entry.get(key)) is not None:
            device[key] = entry[key]
    return device


def _resources(src: dict[str, Any], work: _Rebuild) -> dict[str, Any]:
    """Limits copied; device access starts from deny-all (a spec without that rule would let the
    container open every host device), and any allow rule beyond the defaults is listed."""
    resources: dict[str, Any] = {}
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    for item in src.get("devices") or [] if isinstance(src.get("devices"), list) else []:
        rule = _device_rule(_dict(item))
        if rule is None or rule == rules[0]:
            continue
        if rule["allow"] and not _default_rule(rule):
            number = f"{rule.get('major', '*')}:{rule.get('minor', '*')}"
            work.reaching.append(f"allows device access {rule.get('type', 'a')} {number} {rule['access']}")
        rules.append(rule)
    resources["devices"] = rules
    memory = {k: v for k, v in _dict(src.get("memory")).items()
              if k in ("limit", "reservation", "swap", "swappiness") and isinstance(v, int) and not isinstance(v, bool)}  # fmt: skip
    if memory:
        resources["memory"] = memory
    cpu = {k: v for k, v in _dict(src.get("cpu")).items()
           if (k in ("shares", "quota", "period") and isinstance(v, int) and not isinstance(v, bool))
           or (k in ("cpus", "mems") and isinstance(v, str) and re.fullmatch(r"[0-9,-]{0,256}", v))}  # fmt: skip
    if cpu:
        resources["cpu"] = cpu
    pids = _dict(src.get("pids")).get("limit")
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
            if _uint(number) is None:
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


def _seccomp(value: object, work: _Rebuild) -> dict[str, Any] | None:
    src = _dict(value)
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
    if _uint(src.get("defaultErrnoRet")) is not None:
        profile["defaultErrnoRet"] = src["defaultErrnoRet"]
    arches = [
        a for a in _strings(src.get("architectures"), 16) if re.fullmatch(r"SCMP_ARCH_[A-Z0-9_]{1,20}", a)
    ]
    if arches:
        profile["architectures"] = arches
    flags = [f for f in _strings(src.get("flags"), 8) if re.fullmatch(r"SECCOMP_FILTER_FLAG_[A-Z_]{1,30}", f)]
    if flags:
        profile["flags"] = flags
    if src.get("listenerPath") or src.get("listenerMetadata"):
        work.notes.append("the seccomp profile's listener (a socket on the archive's host) was dropped")
    rules = []
    opened = set()
    for item in src.get("syscalls") or [] if isinstance(src.get("syscalls"), list) else []:
        rule = _syscall_rule(_dict(item))
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
    names = [n for n in _strings(entry.get("names"), 1024) if re.fullmatch(r"[a-z0-9_]{1,64}", n)]
    action = entry.get("action")
    if not names or not isinstance(action, str) or not re.fullmatch(r"SCMP_ACT_[A-Z_]{1,20}", action):
        return None
    rule: dict[str, Any] = {"names": names, "action": action}
    if _uint(entry.get("errnoRet")) is not None:
        rule["errnoRet"] = entry["errnoRet"]
    args = []
    for arg in entry.get("args") or [] if isinstance(entry.get("args"), list) else []:
        arg = _dict(arg)
        index, value, op = _uint(arg.get("index"), 5), _uint(arg.get("value"), U64), arg.get("op")
        if (
            index is None
            or value is None
            or not isinstance(op, str)
            or not re.fullmatch(r"SCMP_CMP_[A-Z_]{1,12}", op)
        ):
            return None  # a rule whose condition cannot be kept must not become unconditional
        copied: dict[str, Any] = {"index": index, "value": value, "op": op}
        if _uint(arg.get("valueTwo"), U64) is not None:
            copied["valueTwo"] = arg["valueTwo"]
        args.append(copied)
    if args:
        rule["args"] = args
    return rule
