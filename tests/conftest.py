from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import dockerhost, kubenode, testbed

_ids = itertools.count()
# A test that asks for one of these drives a real runtime: it carries the `real` marker.
REAL_FIXTURES = frozenset(
    {"runc_binary", "runc_container", "runsc_container", "big", "podman", "containerd", "registry", "kube_node",
     "kube_node_b", "docker"}
)  # fmt: skip
REAL_DIR = Path(__file__).parent / "real"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every real-runtime test is marked `real`: those under tests/real/, and any other that
    uses a real container fixture (`pytest -m "not real"` runs without the test bed)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if REAL_DIR in Path(str(item.fspath)).parents or fixtures & REAL_FIXTURES:
            item.add_marker(pytest.mark.real)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own capability cache and work root, and no stray runtime overrides."""
    base = tmp_path_factory.mktemp("crgpu-env")
    monkeypatch.setenv("CRGPU_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("CRGPU_WORK_ROOT", str(base / "work"))
    monkeypatch.setenv("CRGPU_LOCK_DIR", str(base / "locks"))
    monkeypatch.setenv("CRGPU_NODE_KEY", str(base / "key" / "node.key"))
    (base / "config.toml").write_text("")  # never the node's /etc/crgpu/config.toml
    monkeypatch.setenv("CRGPU_CONFIG", str(base / "config.toml"))
    for name in ("CRGPU_RUNC", "CRGPU_RUNSC", "CRGPU_RUNTIME", "CRIU_CONFIG_FILE", "CRGPU_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    from crgpu.host import config

    config.set_config_file(None)  # a --config from an earlier in-process CLI call must not leak


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short path: runc and CRIU put sockets under the root, and sun_path is 108 bytes."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="crgpu-t"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["runc-system", "runc-new"])
def runc_binary(request: pytest.FixtureRequest) -> str:
    testbed.require_root()
    binaries = testbed.runc_binaries()
    return testbed.require_binary(binaries.get(request.param), request.param)


@pytest.fixture
def runc_container(
    runc_binary: str, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., testbed.RuncContainer]]:
    """Factory: a started busybox container under a private runc root, run by `runc_binary`.

    crgpu is pointed at the same binary through CRGPU_RUNC.
    """
    monkeypatch.setenv("CRGPU_RUNC", runc_binary)
    made: list[testbed.RuncContainer] = []
    overlays: list[Path] = []

    def start(
        script: str = testbed.COUNTER,
        console_socket: Path | None = None,
        spec_change: Callable[[dict[str, Any]], None] | None = None,
        overlay: bool = False,
    ) -> testbed.RuncContainer:
        n = next(_ids)
        bundle = testbed.make_bundle(short_tmp / f"b{n}", script, terminal=console_socket is not None)
        if spec_change is not None:
            testbed.edit_spec(bundle, spec_change)
        if overlay:  # as an engine runs it: the rootfs an overlay, its upper dir the writable layer
            overlays.append(testbed.overlay_rootfs(bundle))
        container = testbed.RuncContainer(
            runc_binary, short_tmp / "root", bundle, f"crgpu-t{os.getpid()}-{n}"
        )
        made.append(container)
        return container.start(console_socket)

    yield start
    for container in made:
        container.delete()
    for rootfs in overlays:
        subprocess.run(["umount", "-l", str(rootfs)], capture_output=True)


@pytest.fixture
def runsc_container(short_tmp: Path) -> Iterator[Callable[..., testbed.RunscContainer]]:
    """Factory: a started busybox sandbox under a private (non-default) runsc root."""
    import shutil

    testbed.require_root()
    runsc = testbed.require_binary(shutil.which("runsc"), "runsc")
    made: list[testbed.RunscContainer] = []

    def start(script: str = testbed.FAST_COUNTER) -> testbed.RunscContainer:
        n = next(_ids)
        bundle = testbed.make_bundle(short_tmp / f"g{n}", script)
        container = testbed.RunscContainer(runsc, short_tmp / "gvroot", bundle, f"crgpu-g{os.getpid()}-{n}")
        made.append(container)
        return container.start()

    yield start
    for container in made:
        container.delete()


@pytest.fixture
def podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[testbed.Podman]:
    """Real podman (rootful, runc under /run/runc); crgpu in this process sees the same config."""
    testbed.require_root()
    engine = testbed.Podman(tmp_path)
    for key, value in engine.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CRGPU_RUNC_ROOTS", "/run/runc")
    yield engine
    engine.cleanup()


@pytest.fixture(scope="session")
def containerd() -> Iterator[testbed.Containerd]:
    """A private containerd daemon for the session (ctr drives it)."""
    import tempfile

    testbed.require_root()
    base = Path(tempfile.mkdtemp(prefix="crgpu-ctd"))
    daemon = testbed.Containerd(base)
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def _docker_host() -> Iterator[dockerhost.DockerHost]:
    import tempfile

    testbed.require_root()
    base = Path(tempfile.mkdtemp(prefix="crgpu-docker"))
    host = dockerhost.DockerHost(base, testbed.busybox_rootfs_tar(base))
    yield host
    host.stop()


@pytest.fixture
def docker(_docker_host: dockerhost.DockerHost) -> Iterator[dockerhost.DockerHost]:
    """Docker (dockerd from docker.io, private data root): crgpu finds it from the daemon's flags."""
    yield _docker_host
    _docker_host.cleanup()


@pytest.fixture(scope="session")
def registry() -> Iterator[kubenode.Registry]:
    """Debian's docker-registry on 127.0.0.1 with the test images pushed (podman builds them)."""
    import tempfile

    testbed.require_root()
    base = Path(tempfile.mkdtemp(prefix="crgpu-reg"))
    served = kubenode.Registry(base)
    served.push_test_images(testbed.Podman(base))
    yield served
    served.stop()


@pytest.fixture(scope="session")
def kube_node(registry: kubenode.Registry) -> Iterator[kubenode.KubeNode]:
    """A Kubernetes node: containerd's CRI, driven as a kubelet drives it."""
    import tempfile

    node = kubenode.KubeNode(Path(tempfile.mkdtemp(prefix="crgpu-node-a")), "node-a", "10.88.71.0/24")
    yield node
    node.stop()


@pytest.fixture(scope="session")
def kube_node_b(registry: kubenode.Registry) -> Iterator[kubenode.KubeNode]:
    """A second node, with its own roots, socket and network: where checkpoints travel to."""
    import tempfile

    node = kubenode.KubeNode(Path(tempfile.mkdtemp(prefix="crgpu-node-b")), "node-b", "10.88.72.0/24")
    yield node
    node.stop()
