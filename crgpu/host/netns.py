"""Network namespaces for restored containers: a new one of crgpu's own (a bind-mounted nsfs
file, as `ip netns add` makes), or one the operator names, checked to be a network namespace."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

from crgpu.host.errors import PreconditionError
from crgpu.host.safedirs import write_new_private

NETNS_TIMEOUT_S = 30.0
NS_GET_NSTYPE = 0xB703  # linux/nsfs.h: _IO(0xb7, 0x3)
CLONE_NEWNET = 0x40000000
NETNS_HINT = "give a network namespace's file: /run/netns/NAME (`ip netns add NAME`) or /proc/PID/ns/net"


def new_network_namespace(path: Path) -> list[str]:
    """A new network namespace held by the file `path` (made here: it must not exist), its loopback
    up when ip(8) is there. Returns notes. The caller unmounts `path` when done with it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise PreconditionError(
            "cannot make the restored container's network namespace: unshare(1) is not installed",
            hint="install util-linux, or give --netns PATH",
        )
    write_new_private(path, b"", 0o400)
    ip = shutil.which("ip")
    inside = [ip, "link", "set", "lo", "up"] if ip else [shutil.which("true") or "/bin/true"]
    done = subprocess.run(
        [unshare, f"--net={path}", "--", *inside],
        capture_output=True, text=True, timeout=NETNS_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise PreconditionError(
            f"cannot make the restored container's network namespace: {done.stderr.strip()[:300]}",
            hint="give --netns PATH: a network namespace such as /run/netns/NAME (`ip netns add NAME`)",
        )
    notes = [f"a new network namespace of its own: {path}"]
    if ip is None:
        notes.append("its loopback is down: ip(8) (iproute2) is not installed")
    return notes


def check_network_namespace(path: Path) -> None:
    """`path` is a network namespace (asked of the kernel: NS_GET_NSTYPE on it), e.g. a bind-mounted
    /run/netns/NAME or /proc/PID/ns/net. Anything else is refused before runc hands it to CRIU."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise PreconditionError(f"--netns {path}: {exc.strerror}", hint=NETNS_HINT) from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = None
    finally:
        os.close(fd)
    if kind != CLONE_NEWNET:
        raise PreconditionError(f"--netns {path} is not a network namespace", hint=NETNS_HINT)
