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
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from crgpu.host.errors import PreconditionError
from crgpu.host.safedirs import write_new_private
from crgpu.image.archive_names import DEVSHM_NAME
from crgpu.image.rootfs_layer import apply_layer
from crgpu.image.spec_linux import linux_section
from crgpu.image.spec_values import (
    CAP_NAME,
    PLAIN_NAME,
    RLIMIT_NAME,
    U64,
    Rebuild,
    StandIn,
    as_dict,
    as_uint,
    show,
    strings,
)

# What a container gets without asking (the engines' default capability set).
DEFAULT_CAPS = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT", "CAP_MKNOD",
    "CAP_AUDIT_WRITE", "CAP_NET_RAW",
}  # fmt: skip
CAP_KINDS = ("bounding", "effective", "inheritable", "permitted", "ambient")
# Annotations kept: what engines and Kubernetes write to describe a container. Nothing runc,
# CRIU or systemd reads as configuration.
ANNOTATION_PREFIXES = ("io.kubernetes.", "io.container.manager", "org.opencontainers.image.",
                       "io.podman.annotations.", "cdi.k8s.io/")  # fmt: skip
ANNOTATIONS_MAX = 256
# Mount types an engine puts into a container's spec; bind mounts are checked for their source.
HOSTNAME = re.compile(r"[A-Za-z0-9.-]{1,253}")
# The files an engine makes for each container (in the pod's sandbox, podman's userdata, Docker's
# container directory), by destination: whether it is a directory. Beside a live original or on
# another host they are that container's, so a restored copy gets its own.
ENGINE_FILES = {"/etc/hostname": False, "/etc/hosts": False, "/etc/resolv.conf": False,
                "/run/.containerenv": False, "/dev/termination-log": False, "/dev/shm": True}  # fmt: skip
RESOLV_MAX_BYTES = 64 * 1024
MOUNT_TYPES = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "bind", "shm"}


@dataclass
class RebuiltSpec:
    spec: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what was left out or changed
    reaching: list[str] = field(default_factory=list)  # what would reach this host
    # Files or directories in the bundle for bind mounts the archive's host gave the container.
    stand_ins: list[StandIn] = field(default_factory=list)
    external_net: bool = False  # CRIU's images name an external network namespace

    def make_stand_ins(self, root: Path, unpacked: Path | None = None) -> None:
        """Each stand-in typed as the container's mount point in `root` is (a file over a directory,
        or the reverse, fails the mount); /dev/shm gets what podman's archive saved of it."""
        for item in self.stand_ins:
            item.path.parent.mkdir(mode=0o700, exist_ok=True)
            found = mount_point_is_dir(root, item.destination)
            if item.is_dir if found is None else found:
                item.path.mkdir(mode=0o755)
                if item.destination == "/dev/shm":
                    os.chmod(item.path, 0o1777)
                    saved = unpacked / DEVSHM_NAME if unpacked is not None else None
                    if saved is not None and saved.is_file():
                        apply_layer(saved, None, item.path)
            else:
                write_new_private(item.path, item.content, 0o644)


def rebuild_spec(src: dict[str, Any], bundle: Path, container_id: str) -> RebuiltSpec:
    """The bundle's spec for an archive's spec (changed here: pass a copy); nothing is written.
    The root path is the caller's to set."""
    work = Rebuild(bundle)
    hostname = src.get("hostname")
    work.hostname = hostname if isinstance(hostname, str) and HOSTNAME.fullmatch(hostname) else None
    if src.pop("hooks", None):
        work.notes.append("the spec's hooks were dropped (an archive never decides what runs on this host)")
    version = src.get("ociVersion")
    spec: dict[str, Any] = {
        "ociVersion": version
        if isinstance(version, str) and re.fullmatch(r"1\.\d+\.\d+[\w.+-]*", version)
        else "1.0.2",
        "process": _process(src.get("process"), work),
        "root": {"path": "rootfs", "readonly": as_dict(src.get("root")).get("readonly") is True},
        "mounts": _mounts(src.get("mounts"), work),
        "linux": linux_section(as_dict(src.get("linux")), container_id, work),
    }
    for key in ("hostname", "domainname"):
        value = src.get(key)
        if isinstance(value, str) and HOSTNAME.fullmatch(value):
            spec[key] = value
    annotations = _annotations(src.get("annotations"), work)
    if annotations:
        spec["annotations"] = annotations
    left = sorted(set(src) - {"ociVersion", "process", "root", "mounts", "linux", "hostname", "domainname",
                              "annotations", "hooks"})  # fmt: skip
    if left:
        work.notes.append("left out of the archive's spec: " + ", ".join(show(k) for k in left[:10]))
    return RebuiltSpec(spec, work.notes, work.reaching, work.stand_ins, work.external_net)


def spec_grants(spec: dict[str, Any]) -> tuple[set[str], set[str], bool]:
    """What a spec (the bundle's) lets a container have: capabilities (with the engines'
    defaults), the namespaces it makes the container's own, whether seccomp confines it."""
    process = as_dict(spec.get("process"))
    caps = set(DEFAULT_CAPS)
    for kind in CAP_KINDS:
        caps |= set(strings(as_dict(process.get("capabilities")).get(kind)))
    linux = as_dict(spec.get("linux"))
    own = {
        str(as_dict(ns).get("type"))
        for ns in linux.get("namespaces") or []
        if isinstance(linux.get("namespaces"), list)
    }
    return caps, own, bool(as_dict(linux.get("seccomp")))


def _process(value: object, work: Rebuild) -> dict[str, Any]:
    src = as_dict(value)
    args = strings(src.get("args"))
    if not args:
        raise PreconditionError("the archive's spec has no process to run (process.args)")
    process: dict[str, Any] = {
        "terminal": src.get("terminal") is True,
        "args": args,
        "env": strings(src.get("env")),
    }
    cwd = src.get("cwd")
    process["cwd"] = cwd if isinstance(cwd, str) and cwd.startswith("/") and "\0" not in cwd else "/"
    user_src = as_dict(src.get("user"))
    user: dict[str, Any] = {
        "uid": as_uint(user_src.get("uid")) or 0,
        "gid": as_uint(user_src.get("gid")) or 0,
    }
    if as_uint(user_src.get("umask"), 0o777) is not None:
        user["umask"] = user_src["umask"]
    groups = [g for g in user_src.get("additionalGids") or [] if as_uint(g) is not None] if isinstance(
        user_src.get("additionalGids"), list) else []  # fmt: skip
    if groups:
        user["additionalGids"] = groups[:256]
    process["user"] = user
    caps_src = as_dict(src.get("capabilities"))
    caps = {
        kind: sorted({c for c in strings(caps_src.get(kind)) if CAP_NAME.fullmatch(c)}) for kind in CAP_KINDS
    }
    process["capabilities"] = {kind: names for kind, names in caps.items() if names}
    extra = sorted(set().union(*caps.values()) - DEFAULT_CAPS)
    if extra:
        work.reaching.append("privileges beyond the engines' defaults: " + ", ".join(extra))
    rlimits = []
    for item in src.get("rlimits") or [] if isinstance(src.get("rlimits"), list) else []:
        entry = as_dict(item)
        kind, hard, soft = entry.get("type"), as_uint(entry.get("hard"), U64), as_uint(entry.get("soft"), U64)
        if isinstance(kind, str) and RLIMIT_NAME.fullmatch(kind) and hard is not None and soft is not None:
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
        if PLAIN_NAME.fullmatch(apparmor):
            process["apparmorProfile"] = apparmor
    selinux = src.get("selinuxLabel")
    if isinstance(selinux, str) and selinux:
        if any(kind in selinux for kind in ("spc_t", "unconfined_t")):
            work.reaching.append(f"runs with an unconfined SELinux label ({show(selinux)})")
        if PLAIN_NAME.fullmatch(selinux):
            process["selinuxLabel"] = selinux
    return process


def _annotations(value: object, work: Rebuild) -> dict[str, str]:
    kept: dict[str, str] = {}
    dropped = []
    for key, item in as_dict(value).items():
        if isinstance(item, str) and key.startswith(ANNOTATION_PREFIXES) and len(kept) < ANNOTATIONS_MAX:
            kept[key] = item
        else:
            dropped.append(key)
    if dropped:
        shown = ", ".join(show(k) for k in sorted(dropped)[:8])
        more = f" and {len(dropped) - 8} more" if len(dropped) > 8 else ""
        work.notes.append(
            f"annotations the runtime or CRIU would read as configuration were dropped: {shown}{more}"
        )
    return kept


def _mounts(value: object, work: Rebuild) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = []
    for item in value if isinstance(value, list) else []:
        src = as_dict(item)
        destination = src.get("destination")
        if not isinstance(destination, str) or not destination.startswith("/") or "\0" in destination:
            work.notes.append(f"a mount without an absolute destination was dropped: {show(destination)}")
            continue
        options = strings(src.get("options"), 64)
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
                f"mounts a {show(kind)} file system from {show(source)} at {show(destination)}"
            )
        mounts.append(mount)
    return mounts


def _bind_source(mount: dict[str, Any], index: int, work: Rebuild) -> None:
    """runc resolves a relative bind source against the bundle directory (specconv), so it is
    resolved the same way before the host-path rule. The engines' own per-container files
    (hosts, hostname, /dev/shm, ...) are never the host's to give: the copy gets private ones."""
    source, destination = mount["source"], mount["destination"]
    resolved = os.path.normpath(os.path.join(work.bundle, source)) if source else ""
    engine_file = ENGINE_FILES.get(os.path.normpath(destination))
    if engine_file is not None:
        _stand_in(mount, index, work, engine_file, _engine_content(destination, work))
        work.notes.append(f"{destination}: a private copy in the bundle (the engine's was {show(source)})")
    elif not source or not source.startswith("/"):
        work.reaching.append(
            f"bind-mounts {show(source)} (relative to the bundle: this host's {resolved or work.bundle}) "
            f"at {show(destination)}"
        )
    elif os.path.lexists(source):
        work.reaching.append(f"bind-mounts this host's {source} at {destination}")
    else:
        # Typed by the container's mount point when it has one (make_stand_ins); without one, a
        # directory only for a name that says so.
        name = PurePosixPath(source).name
        _stand_in(mount, index, work, name in ("shm", "mqueue") or source.endswith("/"), b"")
        work.notes.append(f"{destination}: bound from an empty stand-in ({source} is the archive host's)")


def _stand_in(mount: dict[str, Any], index: int, work: Rebuild, is_dir: bool, content: bytes) -> None:
    name = PurePosixPath(mount["destination"]).name or "root"
    path = work.bundle / "mounts" / f"{index}-{name}"
    work.stand_ins.append(StandIn(path, mount["destination"], is_dir, content))
    mount["source"] = str(path)


def _engine_content(destination: str, work: Rebuild) -> bytes:
    """What an engine writes into its own copy: the spec's hostname, localhost, this host's name
    servers (podman and Docker copy the host's resolv.conf the same way)."""
    hostname = work.hostname or "localhost"
    if destination == "/etc/hostname":
        return f"{hostname}\n".encode()
    if destination == "/etc/hosts":
        return f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n".encode()
    if destination == "/etc/resolv.conf":
        try:
            with open("/etc/resolv.conf", "rb") as handle:
                return handle.read(RESOLV_MAX_BYTES)
        except OSError:
            return b""
    return b""


def mount_point_is_dir(root: Path, destination: str) -> bool | None:
    """Whether the container's root has a directory at `destination`: None where it has nothing
    there, or reaches it only through a link (never followed: the root is the archive's)."""
    current, mode = root, None
    for part in PurePosixPath(destination).parts[1:]:
        if part in (".", ".."):
            return None
        current = current / part
        try:
            mode = current.lstat().st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            return None
    return None if mode is None else stat.S_ISDIR(mode)
