"""A Docker host for the tests: Debian's dockerd (`docker.io`), experimental (checkpoints), with a
private data root and socket, driven with Debian's docker CLI. Its exec root stays the default,
so runc's root is /run/docker/runtime-runc/moby as on any Docker host; no bridge (the test
containers run with --network none), no iptables."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests import testbed

DATA_ROOT = Path("/var/lib/crgpu-docker")
SOCKET = "/run/crgpu-docker.sock"
IMAGE = "crgpu-busybox:1"


class DockerHost:
    def __init__(self, base: Path, rootfs_tar: Path) -> None:
        dockerd = testbed.require_binary(shutil.which("dockerd"), "dockerd (docker.io)")
        self.docker = testbed.require_binary(
            "/usr/bin/docker" if os.path.isfile("/usr/bin/docker") else shutil.which("docker"),
            "docker (docker-cli)",
        )
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{SOCKET}"}
        self.log = (base / "dockerd.log").open("w")
        self.daemon = subprocess.Popen(
            [dockerd, "--experimental", "--data-root", str(DATA_ROOT), "--host", f"unix://{SOCKET}",
             "--pidfile", str(base / "dockerd.pid"), "--bridge=none", "--iptables=false", "--ip6tables=false"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while self("info", check=False, timeout=10) is None:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dockerd did not start: {(base / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.2)
        self("import", str(rootfs_tar), IMAGE)
        self.names: list[str] = []

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str | None:
        done = subprocess.run(
            [self.docker, *args], capture_output=True, text=True, timeout=timeout, env=self.env,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if done.returncode != 0:
            if check:
                raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
            return None
        return done.stdout.strip()

    def run(self, name: str, script: str = testbed.COUNTER) -> str:
        self.names.append(name)
        return str(
            self("run", "-d", "--network", "none", "--name", name, IMAGE, "/bin/busybox", "sh", "-c", script)
        )

    def state(self, name: str) -> tuple[str, int]:
        status, code = str(self("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name)).split()
        return status, int(code)

    def count(self, name: str) -> int:
        return testbed.read_count(
            lambda: str(self("exec", name, "/bin/busybox", "cat", "/tmp/count", check=False))
        )

    def wait_count_above(self, name: str, value: int, timeout: float = 10.0) -> int:
        return testbed.wait_above(lambda: self.count(name), value, timeout, f"{name}'s counter")

    def wait_state(self, name: str, status: str, timeout: float = 10.0) -> tuple[str, int]:
        return testbed.wait_for(
            lambda: self.state(name), lambda current: current[0] == status, timeout, f"{name}, not {status},"
        )

    def cleanup(self) -> None:
        for name in self.names:
            self("rm", "-f", name, check=False)
        self.names.clear()

    def stop(self) -> None:
        self.cleanup()
        self.daemon.terminate()
        try:
            self.daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
        self.log.close()
