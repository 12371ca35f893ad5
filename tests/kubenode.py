"""Kubernetes nodes as the tests stand them up: Debian's `docker-registry` on 127.0.0.1, and a
private containerd with its CRI plugin per node, driven through the CRI as a kubelet drives it
(pods with their own PID namespace and a CNI bridge of the tests' own, images pulled from the
registry by PullImage, a pinned sandbox image). Two nodes have separate roots, sockets, bridges
and subnets; what one checkpoints reaches the other through a file or the registry only."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc

from tests import testbed
from tests.cri import CRI, Pod

REGISTRY_BINARY = "/opt/crgpu-testbed/registry/usr/bin/docker-registry"
REGISTRY = "127.0.0.1:5510"
BUSYBOX_IMAGE = f"{REGISTRY}/crgpu-busybox:1"  # CMD: the counter
PAUSE_IMAGE = f"{REGISTRY}/crgpu-pause:1"
COUNTER_CMD = ["/bin/busybox", "sh", "-c", testbed.COUNTER]


class Registry:
    """docker-registry (Debian's distribution 2.8) serving plain HTTP on 127.0.0.1, which
    containerd and podman use without TLS for a loopback address."""

    def __init__(self, base: Path) -> None:
        binary = testbed.require_binary(
            REGISTRY_BINARY if os.path.isfile(REGISTRY_BINARY) else shutil.which("docker-registry"),
            "docker-registry",
        )
        (base / "registry.yml").write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {base / 'registry'}\nhttp:\n  addr: {REGISTRY}\n"
        )
        self.log = (base / "registry.log").open("w")
        self.daemon = subprocess.Popen(
            [binary, "serve", str(base / "registry.yml")], stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=2):
                    break
            except OSError:
                assert self.daemon.poll() is None, (base / "registry.log").read_text()
                assert time.monotonic() < deadline, "the registry never answered"
                time.sleep(0.1)

    def push_test_images(self, podman: testbed.Podman) -> None:
        """The busybox image (CMD: the counter) and the sandbox image, built by podman from a
        local rootfs and pushed as a kubelet's node would find them in a registry."""
        self.podman = podman
        rootfs = str(podman.rootfs_tar())
        for ref, cmd in (
            (BUSYBOX_IMAGE, COUNTER_CMD),
            (PAUSE_IMAGE, ["/bin/busybox", "sleep", "2147483647"]),
        ):
            podman("import", "--change", f"CMD {json.dumps(cmd)}", rootfs, ref)
            podman("push", "-q", "--tls-verify=false", ref)

    def push_archive(self, podman: testbed.Podman, archive: Path, ref: str) -> None:
        """An oci-archive into the registry as an operator pushes one (`podman load`, `push`)."""
        loaded = podman("load", "-q", "-i", str(archive))
        image_id = loaded.rsplit(":", 1)[-1].strip()
        try:
            podman("push", "-q", "--tls-verify=false", image_id, f"docker://{ref}")
        finally:
            podman("rmi", "-f", image_id, check=False)

    def stop(self) -> None:
        self.daemon.terminate()
        self.daemon.wait(timeout=30)
        self.log.close()


def _conf(name: str) -> str:
    state = f"/run/crgpu-{name}"
    return f"""version = 3
root = "/var/lib/crgpu-{name}"
state = "{state}"
[grpc]
  address = "{state}/containerd.sock"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "/run/crgpu-{name}-cni"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{PAUSE_IMAGE}"
"""


def _cni(name: str, bridge: str, subnet: str) -> str:
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": f"crgpu-{name}",
            "plugins": [
                {
                    "type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                             "dataDir": f"/run/crgpu-{name}-ipam"},
                },
                {"type": "loopback"},
            ],
        }
    )  # fmt: skip


class KubeNode:
    """One node: a containerd with the CRI plugin and its CNI network; `pods` are taken down
    (containers, sandboxes, network) when the node stops."""

    def __init__(self, base: Path, name: str, subnet: str) -> None:
        containerd = testbed.require_binary(shutil.which("containerd"), "containerd")
        testbed.require_binary("/usr/lib/cni/bridge", "containernetworking-plugins")
        self.name = name
        self.state = Path(f"/run/crgpu-{name}")
        self.root = Path(f"/var/lib/crgpu-{name}")
        cni_dir = Path(f"/run/crgpu-{name}-cni")
        cni_dir.mkdir(parents=True, exist_ok=True)
        (cni_dir / "10-crgpu.conflist").write_text(_cni(name, f"crgpu-{name}"[:15], subnet))
        (base / "containerd.toml").write_text(_conf(name))
        self.log_path = base / "containerd.log"
        self.log = self.log_path.open("w")
        self.daemon = subprocess.Popen(
            [containerd, "--config", str(base / "containerd.toml")],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.socket = str(self.state / "containerd.sock")
        testbed.wait_for_path(Path(self.socket), timeout=30)
        self.cri = CRI(self.socket)
        self.pods: list[Pod] = []
        deadline = time.monotonic() + 30
        while True:
            try:
                self.cri.version()
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, self.log_path.read_text()[-2000:]
                time.sleep(0.2)
        self.cri.pull(PAUSE_IMAGE)
        self.cri.pull(BUSYBOX_IMAGE)

    def pod(self, name: str, namespace: str = "default") -> Pod:
        pod = Pod(name, namespace=namespace, uid=f"uid-{self.name}-{name}")
        self.cri.run_pod(pod)
        self.pods.append(pod)
        return pod

    def run(
        self,
        pod: Pod,
        name: str,
        image: str = BUSYBOX_IMAGE,
        annotations: dict[str, str] | None = None,
    ) -> str:
        """A container created and started as a kubelet does; its ID."""
        container_id = self.cri.create(
            pod, name, image, labels={"io.kubernetes.container.name": name}, annotations=annotations
        )
        self.cri.start(container_id)
        return container_id

    def rootfs(self, container_id: str) -> Path:
        return self.state / "io.containerd.runtime.v2.task" / "k8s.io" / container_id / "rootfs"

    def count(self, container_id: str) -> int:
        try:
            return int((self.rootfs(container_id) / "tmp" / "count").read_text())
        except (OSError, ValueError):
            return -1

    def wait_count_above(self, container_id: str, value: int, timeout: float = 15.0) -> int:
        return testbed.wait_above(
            lambda: self.count(container_id), value, timeout, f"{container_id}'s counter"
        )

    def remove_pod(self, pod: Pod) -> None:
        with contextlib.suppress(grpc.RpcError):
            self.cri.stop_pod(pod.id)
        with contextlib.suppress(grpc.RpcError):
            self.cri.remove_pod(pod.id)
        if pod in self.pods:
            self.pods.remove(pod)

    def stop(self) -> None:
        for pod in list(self.pods):
            self.remove_pod(pod)
        self.cri.close()
        self.daemon.terminate()
        try:
            self.daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
        self.log.close()
        testbed.unmount_below(self.state, self.root)
        subprocess.run(["ip", "link", "delete", f"crgpu-{self.name}"[:15]], capture_output=True, check=False)
