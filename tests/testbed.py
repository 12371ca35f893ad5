"""The real test bed: busybox bundles, runtime binaries, and the skip-or-fail rule.

Real-runtime tests skip on a machine without the bed, but never under CI (CI=true): there a
missing runtime is a failure, so a green CI always means the round trips ran.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from crgpu.doctor.bundle import busybox_bundle, static_busybox
from crgpu.host.errors import CrgpuError
from crgpu.host.mounts import mount_points_below

RUNC_NEW_DEFAULT = "/opt/crgpu-testbed/runc-new/usr/sbin/runc"

FAST_COUNTER = (
    "exec </dev/null >/tmp/log 2>&1; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done"
)
COUNTER = (
    "exec </dev/null >/tmp/log 2>&1; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done"
)

# As COUNTER, but keeps its stdio: a container's terminal stays open in it.
TTY_COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done"


def missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"test bed incomplete under CI: {reason}")
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        missing("real runtime tests need root")


def busybox() -> str:
    found = static_busybox()
    if found is None:
        missing("busybox-static is not installed (apt-get install busybox-static)")
    return str(found)


def runc_binaries() -> dict[str, str]:
    """The runc binaries to prove things on: Debian's (1.1) and a 1.3+ one."""
    found: dict[str, str] = {}
    system = shutil.which("runc")
    if system:
        found["runc-system"] = system
    new = os.environ.get("CRGPU_TEST_RUNC_NEW", RUNC_NEW_DEFAULT)
    if os.path.isfile(new):
        found["runc-new"] = new
    return found


def require_binary(path: str | None, what: str) -> str:
    if not path or not os.path.isfile(path):
        missing(f"{what} is not installed (run scripts/setup-testbed.sh)")
    assert path is not None
    return path


def make_bundle(directory: Path, script: str = COUNTER, terminal: bool = False) -> Path:
    """A busybox bundle (crgpu's own builder, as the probe and the benchmarks use it) running
    `sh -c script`; the script redirects its own stdio inside the container."""
    try:
        return busybox_bundle(directory, Path(busybox()), "runc", ["sh", "-c", script], terminal=terminal)
    except CrgpuError as exc:
        missing(exc.message)
        raise


def unmount_below(*directories: Path) -> None:
    """Lazily unmount every mount inside the directories (what a killed raw runtime left)."""
    from crgpu.host.mounts import mount_points_below

    for directory in directories:
        for point in mount_points_below(directory):
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def overlay_rootfs(bundle: Path) -> Path:
    """The bundle's rootfs made an overlay (lower: what make_bundle built, in `lower/`; upper:
    `upper/`), as an engine mounts a container's root; the mount point, to unmount at teardown."""
    rootfs, lower = bundle / "rootfs", bundle / "lower"
    rootfs.rename(lower)
    for sub in (rootfs, bundle / "upper", bundle / "work"):
        sub.mkdir()
    done = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lower},upperdir={bundle / 'upper'},workdir={bundle / 'work'}", str(rootfs)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        missing(f"cannot mount an overlay: {done.stderr.strip()}")
    return rootfs


def edit_spec(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change a bundle's config.json in place."""
    path = bundle / "config.json"
    spec = json.loads(path.read_text())
    change(spec)
    path.write_text(json.dumps(spec, indent=2))


def read_counter(bundle: Path) -> int:
    """The counter the workload last wrote in a bundle's rootfs."""
    return read_count_file(bundle / "rootfs" / "tmp" / "count")


def stopped_counter(bundle: Path, floor: int) -> int:
    """The counter a stopped (checkpointed) workload left: the file's value, or `floor` (a value read
    before the dump) when the dump froze the workload between its truncate and its write, which
    leaves the file empty for good (seen once in ~500 CI runs)."""
    text = (bundle / "rootfs" / "tmp" / "count").read_text().strip()
    return int(text) if text.isdigit() else floor


def read_count_file(path: Path) -> int:
    """A counter file's value; retried over a write in progress (the counter truncates, then writes)."""
    for _ in range(50):
        text = path.read_text().strip() if path.exists() else ""
        if text.isdigit():
            return int(text)
        time.sleep(0.02)
    raise AssertionError(f"no counter in {path}")


def wait_counter_above(bundle: Path, value: int, timeout: float = 5.0) -> int:
    return wait_above(lambda: read_counter(bundle), value, timeout, f"counter in {bundle}")


T = TypeVar("T")


def read_count(read: Callable[[], str], tries: int = 20) -> int:
    """A counter file read from outside: the counter rewrites it (`echo $i > /tmp/count` truncates
    first), so a read can land between the truncate and the write and see nothing; read again."""
    text = ""
    for _ in range(tries):
        text = read().strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    raise ValueError(f"the counter file held {text!r}, not a count")


def wait_above(read: Callable[[], int], value: int, timeout: float, what: str) -> int:
    """Until `read()` passes `value` (a read that fails counts as -1); the value it reached."""
    deadline = time.monotonic() + timeout
    current = -1
    while time.monotonic() < deadline:
        try:
            current = read()
        except (AssertionError, ValueError):
            current = -1
        if current > value:
            return current
        time.sleep(0.05)
    raise AssertionError(f"{what} stayed at {current}, not above {value} within {timeout} s")


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str) -> T:
    """Until `done(read())`; the value read then. `what` names the wait in the failure."""
    deadline = time.monotonic() + timeout
    while not done(current := read()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} stayed {current} for {timeout} s")
        time.sleep(0.05)
    return current


def cgroups_named(name: str) -> list[Path]:
    """Every cgroup directory called `name`, in every hierarchy (ten on a cgroup v1 node)."""
    return sorted(path for path in Path("/sys/fs/cgroup").glob(f"**/{name}") if path.is_dir())


def restored_pid(runc: str, root: Path, container_id: str) -> int:
    """The init process of a container crgpu restored (its PID on this host)."""
    state = subprocess.run([runc, "--root", str(root), "state", container_id], capture_output=True, text=True)
    assert state.returncode == 0, state.stderr
    return int(json.loads(state.stdout)["pid"])


def cgroup_of(pid: int) -> str:
    """The process's memory cgroup (v1) or its unified one (v2): where its limits come from."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    chosen = [line for line in lines if ":memory:" in line] or [
        line for line in lines if line.startswith("0::")
    ]
    return chosen[0].split(":", 2)[2]


def restored_count(runc: str, root: Path, container_id: str) -> int:
    """The counter of a container crgpu restored from an archive, read through its process."""
    return read_count_file(Path(f"/proc/{restored_pid(runc, root, container_id)}/root/tmp/count"))


def drop_restored(runc: str, root: Path, container_id: str, work_root: Path) -> None:
    """Delete a container restored from an archive and unmount what crgpu mounted for it (the
    overlay, a network namespace, ...)."""
    subprocess.run([runc, "--root", str(root), "delete", "--force", container_id], capture_output=True)
    for work in work_root.glob(f"{container_id}/import-*"):
        for point in mount_points_below(work):
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def same_file(path: str, pid: int, other: int) -> bool:
    """Whether /proc/PID/`path` is the same file (namespace, mount, root) in both processes."""
    first, second = os.stat(f"/proc/{pid}/{path}"), os.stat(f"/proc/{other}/{path}")
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


# What a restored copy must never share with its live original.
PRIVATE = ("ns/net", "root/etc/hosts", "root/etc/resolv.conf", "root/etc/hostname", "root/dev/shm", "root")


def wait_for_path(path: Path, timeout: float = 30) -> None:
    """Until `path` exists (a runtime or CRIU has started writing there)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def processes_naming(text: str) -> list[str]:
    """Every process whose command line holds `text` (a runtime or CRIU, by its image path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


class ConsoleReceiver:
    """A console socket, as runc's tests use `recvtty`: takes the pseudoterminal master that runc
    sends for a `terminal: true` container and drains what the container writes to it."""

    def __init__(self, path: Path) -> None:
        import socket
        import threading

        self.path = path
        self.masters: list[int] = []
        self.output = bytearray()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(4)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
            for fd in fds:
                self.masters.append(fd)
                threading.Thread(target=self._drain, args=(fd,), daemon=True).start()

    def _drain(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            self.output += data

    def close(self) -> None:
        self._server.close()
        for fd in self.masters:
            try:
                os.close(fd)
            except OSError:
                pass


class RuncContainer:
    """A real runc container under a private root, deleted at teardown."""

    def __init__(self, runc: str, root: Path, bundle: Path, container_id: str) -> None:
        self.runc = runc
        self.root = root
        self.bundle = bundle
        self.id = container_id

    def cmd(self, *args: str) -> list[str]:
        return [self.runc, "--root", str(self.root), *args]

    def start(self, console_socket: Path | None = None) -> RuncContainer:
        console = ["--console-socket", str(console_socket)] if console_socket else []
        done = subprocess.run(
            self.cmd("run", "-d", *console, "--bundle", str(self.bundle), self.id),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise AssertionError(f"runc run failed: {done.stderr}")
        return self

    def status(self) -> str | None:
        done = subprocess.run(self.cmd("state", self.id), capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            return None
        return str(json.loads(done.stdout)["status"])

    def delete(self) -> None:
        subprocess.run(self.cmd("delete", "--force", self.id), capture_output=True, timeout=30)


class RunscContainer:
    """A real runsc sandbox under a private root, started with non-default global flags."""

    GLOBALS = ("--network=none", "--ignore-cgroups")

    def __init__(self, runsc: str, root: Path, bundle: Path, container_id: str) -> None:
        self.runsc = runsc
        self.root = root
        self.bundle = bundle
        self.id = container_id

    def cmd(self, *args: str) -> list[str]:
        return [self.runsc, f"--root={self.root}", *args]

    def start(self) -> RunscContainer:
        done = subprocess.run(
            self.cmd(*self.GLOBALS, "run", "--detach", "--bundle", str(self.bundle), self.id),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise AssertionError(f"runsc run failed: {done.stderr}")
        return self

    def counter(self) -> int:
        """The workload's counter, read inside the sandbox (its rootfs writes stay in an overlay)."""
        for _ in range(20):
            done = subprocess.run(
                self.cmd("exec", self.id, "cat", "/tmp/count"), capture_output=True, text=True, timeout=30
            )
            if done.stdout.strip().isdigit():
                return int(done.stdout.strip())
            time.sleep(0.1)
        raise AssertionError(f"no counter in runsc container {self.id}: {done.stderr}")

    def wait_counter(self, value: int, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.counter()
            if current >= value:
                return current
            time.sleep(0.1)
        raise AssertionError(f"runsc counter did not reach {value}")

    def status(self) -> str | None:
        done = subprocess.run(self.cmd("state", self.id), capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            return None
        return str(json.loads(done.stdout)["status"])

    def delete(self) -> None:
        subprocess.run(self.cmd("delete", "--force", self.id), capture_output=True, timeout=60)


_HOG: list[Path] = []


def hog_binary() -> Path:
    """benchmarks/hog.c built static once per test session (gcc and libc6-dev from the test bed)."""
    if _HOG:
        return _HOG[0]
    gcc = shutil.which("gcc")
    if gcc is None:
        missing("gcc is not installed (apt-get install gcc libc6-dev)")
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="crgpu-hog")) / "hog"
    source = Path(__file__).resolve().parents[1] / "benchmarks" / "hog.c"
    done = subprocess.run(
        [str(gcc), "-static", "-O2", "-o", str(out), str(source)], capture_output=True, text=True
    )
    if done.returncode != 0:
        missing(f"cannot build the static hog: {done.stderr.strip()[:200]}")
    _HOG.append(out)
    return out


def make_hog_bundle(directory: Path, mib: int) -> Path:
    """A bundle whose process holds `mib` MiB of patterned memory (see benchmarks/hog.c)."""
    bundle = make_bundle(directory, "true")
    shutil.copy2(hog_binary(), bundle / "rootfs" / "bin" / "hog")
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["args"] = ["/bin/hog", str(mib)]
    config_path.write_text(json.dumps(config, indent=2))
    return bundle


def verify_hog_memory(bundle: Path, timeout: float = 60.0) -> str:
    """Ask the hog to read all its memory back; its verdict ('ok <bytes>' or 'bad <bytes>')."""
    verdict = bundle / "rootfs" / "tmp" / "verified"
    verdict.unlink(missing_ok=True)
    (bundle / "rootfs" / "tmp" / "verify").write_text("")
    deadline = time.monotonic() + timeout
    while not verdict.exists():
        assert time.monotonic() < deadline, "the hog never answered"
        time.sleep(0.05)
    return verdict.read_text().strip()


def busybox_rootfs_tar(base: Path) -> Path:
    """A busybox rootfs as a tarball (`base`/rootfs.tar), the one every engine's test image is
    imported from."""
    tarball = base / "rootfs.tar"
    if not tarball.exists():
        rootfs = base / "rootfs"
        for sub in ("bin", "proc", "sys", "dev", "tmp", "etc"):
            (rootfs / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy2(busybox(), rootfs / "bin" / "busybox")
        rootfs.chmod(0o755)
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    return tarball


PODMAN_CONF = """[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[containers]
log_driver = "k8s-file"
netns = "none"
"""
PODMAN_IMAGE = "localhost/crgpu-busybox:latest"


class Podman:
    """podman as it runs on this host kind (../shared/research/engines.md): runc, cgroupfs, file
    events, no network; a busybox image imported from a local rootfs (no registry)."""

    def __init__(self, base: Path) -> None:
        self.podman = require_binary(shutil.which("podman"), "podman")
        (base / "containers.conf").write_text(PODMAN_CONF)
        self.env = {
            "CONTAINERS_CONF": str(base / "containers.conf"),
            "PODMAN_IGNORE_CGROUPSV1_WARNING": "1",
        }
        self.base = base
        self.names: list[str] = []

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        done = subprocess.run(
            [self.podman, *args], capture_output=True, text=True, timeout=timeout,
            env={**os.environ, **self.env}, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def image(self) -> str:
        exists = subprocess.run(
            [self.podman, "image", "exists", PODMAN_IMAGE], env={**os.environ, **self.env}, check=False
        )
        if exists.returncode == 0:
            return PODMAN_IMAGE
        self("import", str(self.rootfs_tar()), PODMAN_IMAGE)
        return PODMAN_IMAGE

    def rootfs_tar(self) -> Path:
        return busybox_rootfs_tar(self.base)

    def run(self, name: str, script: str = COUNTER, tty: bool = False, network: str | None = None) -> str:
        """`network`: podman's --network (this host's conf gives none; `bridge` is podman's default)."""
        self.names.append(name)
        terminal = ["-t"] if tty else []
        net = [f"--network={network}"] if network else []
        return self(
            "run", "-d", *terminal, *net, "--name", name, self.image(), "/bin/busybox", "sh", "-c", script
        )

    def pid(self, name: str) -> int:
        return int(self("inspect", "--format", "{{.State.Pid}}", name))

    def count(self, name: str) -> int:
        return read_count(lambda: str(self("exec", name, "/bin/busybox", "cat", "/tmp/count", check=False)))

    def wait_count_above(self, name: str, value: int, timeout: float = 10.0) -> int:
        return wait_above(lambda: self.count(name), value, timeout, f"{name}'s counter")

    def wait_status(self, name: str, status: str, timeout: float = 10.0) -> str:
        """podman's status of the container once it is `status`. Whether podman says `stopped` or
        already `exited` after its process ended depends on its clean-up, which runs on its own."""
        return wait_for(
            lambda: self("inspect", "--format", "{{.State.Status}}", name),
            lambda current: current == status,
            timeout,
            f"{name}, not {status},",
        )

    def cleanup(self) -> None:
        for name in self.names:
            self("rm", "-f", "-t", "0", name, check=False)


CONTAINERD_CONF = """version = 3
root = "/var/lib/crgpu-containerd"
state = "/run/crgpu-containerd"
[grpc]
  address = "/run/crgpu-containerd/containerd.sock"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
"""
CONTAINERD_SOCKET = "/run/crgpu-containerd/containerd.sock"


class Containerd:
    """A private containerd daemon (Debian's 2.1), driven with ctr; its runc root is
    /run/containerd/runc/<namespace>, where crgpu looks by default."""

    def __init__(self, base: Path) -> None:
        self.containerd = require_binary(shutil.which("containerd"), "containerd")
        self.ctr = require_binary(shutil.which("ctr"), "ctr")
        (base / "containerd.toml").write_text(CONTAINERD_CONF)
        self.log = (base / "containerd.log").open("w")
        self.daemon = subprocess.Popen(
            [self.containerd, "--config", str(base / "containerd.toml")],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_path(Path(CONTAINERD_SOCKET), timeout=30)
        self.base = base
        self.ids: list[str] = []

    def __call__(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [self.ctr, "--address", CONTAINERD_SOCKET, *args], capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def run(self, container_id: str, script: str = COUNTER) -> Path:
        bundle = make_bundle(self.base / container_id, script)
        self.ids.append(container_id)
        self(
            "run", "-d", "--rootfs", str(bundle / "rootfs"), container_id, "/bin/busybox", "sh", "-c", script
        )
        return bundle

    def task_status(self, container_id: str) -> str:
        for line in self("task", "ls").splitlines()[1:]:
            parts = line.split()
            if parts and parts[0] == container_id:
                return parts[-1]
        return "missing"

    def stop(self) -> None:
        for container_id in self.ids:
            self("task", "kill", "-s", "SIGKILL", container_id, check=False)
            time.sleep(0.2)
            self("task", "rm", "-f", container_id, check=False)
            self("container", "rm", container_id, check=False)
        self.daemon.terminate()
        try:
            self.daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
        self.log.close()
