"""Checkpoints that land in Kubernetes: containerd's CRI, driven as a kubelet drives it, restores
what crgpu exports, on another node; a kubelet's checkpoint comes back through crgpu."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from crgpu.host.errors import ExitCode
from tests import testbed
from tests.cri import CONTAINER_RUNNING
from tests.helpers import crgpu
from tests.kubenode import REGISTRY, KubeNode, Registry

_names = itertools.count()
HASH = {"io.kubernetes.container.hash": "c0ffee42", "io.kubernetes.container.restartCount": "0"}


def _pod_name() -> str:
    return f"web-{os.getpid()}-{next(_names)}"


@pytest.fixture(autouse=True)
def _cri_roots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRGPU_RUNC_ROOTS", "/run/containerd/runc/*")


def _checkpoint_and_export(node: KubeNode, tmp_path: Path, *extra: str) -> tuple[str, Path, int]:
    """A counting container in a new pod on `node`, checkpointed with --leave-running by its
    Kubernetes name and exported in the default format; (its ID, the archive, its count before)."""
    pod = node.pod(_pod_name())
    container_id = node.run(pod, "counter", annotations=HASH)
    node.wait_count_above(container_id, 3)
    before = node.count(container_id)
    done = crgpu("checkpoint", "--leave-running", "-i", str(tmp_path / "img"), f"default/{pod.name}/counter")
    assert done.exit_code == 0, done.output
    archive = tmp_path / "counter.tar"
    exported = crgpu("export", "--json", "-i", str(tmp_path / "img"), "-o", str(archive), *extra)
    assert exported.exit_code == 0, exported.output
    document = json.loads(exported.stdout)
    assert (document["format"], document["compression"]) == ("oci" if extra else "kubernetes", "none")
    return container_id, archive, before


def test_a_kubernetes_export_is_restored_by_containerd_on_another_node_in_a_new_pod(
    kube_node: KubeNode, kube_node_b: KubeNode, tmp_path: Path
) -> None:
    source, archive, before = _checkpoint_and_export(kube_node, tmp_path)
    with tarfile.open(archive, "r:") as tar:  # a plain tar: containerd reads no other
        status = json.load(tar.extractfile("status.dump"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile("config.dump"))  # type: ignore[arg-type]
    assert status["state"] == CONTAINER_RUNNING and status["annotations"] == HASH
    assert config["rootfsImageRef"].startswith("127.0.0.1:5510/crgpu-busybox@sha256:")

    pod = kube_node_b.pod(_pod_name())
    restored = kube_node_b.cri.create(pod, "counter", str(archive))  # the pod spec names the archive
    kube_node_b.cri.start(restored)
    seen = kube_node_b.cri.status(restored)
    assert seen.state == CONTAINER_RUNNING
    assert seen.annotations["io.kubernetes.container.hash"] == HASH["io.kubernetes.container.hash"]
    assert seen.annotations["restored"] == "true"
    assert not seen.annotations["checkpointedAt"].startswith("0001-")
    assert seen.image_ref == config["rootfsImageRef"]
    # The copy counts on from its saved state, behind the original that never stopped.
    count = kube_node_b.wait_count_above(restored, before)
    time.sleep(0.5)
    assert kube_node_b.count(restored) > count
    assert count < kube_node.count(source)
    assert kube_node.rootfs(source) != kube_node_b.rootfs(restored)

    shown = subprocess.run(
        ["checkpointctl", "inspect", str(archive)], capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert "Checkpointed: " in shown.stdout and "Engine: containerd" in shown.stdout


def test_an_oci_checkpoint_image_is_pushed_pulled_and_restored_by_a_pod_spec_naming_it(
    kube_node: KubeNode, kube_node_b: KubeNode, registry: Registry, tmp_path: Path
) -> None:
    source, archive, before = _checkpoint_and_export(kube_node, tmp_path, "--format", "oci")
    ref = f"{REGISTRY}/checkpoints/counter:{os.getpid()}-{next(_names)}"
    registry.push_archive(registry.podman, archive, ref)
    kube_node_b.cri.pull(ref)  # as the kubelet pulls a pod's image
    pod = kube_node_b.pod(_pod_name())
    restored = kube_node_b.cri.create(pod, "counter", ref)
    kube_node_b.cri.start(restored)
    seen = kube_node_b.cri.status(restored)
    assert seen.state == CONTAINER_RUNNING
    assert seen.annotations["io.kubernetes.container.hash"] == HASH["io.kubernetes.container.hash"]
    assert seen.annotations["checkpointImage"] == ref
    count = kube_node_b.wait_count_above(restored, before)
    time.sleep(0.5)
    assert kube_node_b.count(restored) > count
    assert count < kube_node.count(source)


def _init_pid(container_id: str) -> int:
    state = json.loads(Path(f"/run/containerd/runc/k8s.io/{container_id}/state.json").read_text())
    return int(state["init_process_pid"])


def test_the_kubelets_own_archive_is_restored_by_crgpu_with_a_network_and_files_of_its_own(
    kube_node: KubeNode, registry: Registry, short_tmp: Path, tmp_path: Path
) -> None:
    """containerd's CheckpointContainer archive, restored by crgpu on the same node while the
    original runs (never sharing its network, hosts files, /dev/shm or rootfs), and again once
    the pod is gone; no --trust-image: the pod's namespace and files are not this host's to give."""
    runc = testbed.require_binary(shutil.which("runc"), "runc")
    pod = kube_node.pod(_pod_name())
    source = kube_node.run(pod, "counter")
    kube_node.wait_count_above(source, 3)
    archive = tmp_path / "cri.tar"
    kube_node.cri.checkpoint(source, str(archive))
    saved = kube_node.count(source)
    lower = registry.podman.base / "rootfs"  # the image's own root filesystem
    root, work_root = short_tmp / "root", Path(os.environ["CRGPU_WORK_ROOT"])
    first, second = f"cri-{os.getpid()}-{next(_names)}", f"cri-{os.getpid()}-{next(_names)}"
    try:
        done = crgpu(
            "restore", "--json", "-i", str(archive), "--rootfs", str(lower), "--root", str(root), first
        )
        assert done.exit_code == 0, done.output
        copy, original = testbed.restored_pid(runc, root, first), _init_pid(source)
        for shared in testbed.PRIVATE:
            assert not testbed.same_file(shared, copy, original), shared
        count = testbed.restored_count(runc, root, first)
        assert count >= saved - 40  # the saved state, give or take the checkpoint's own time
        time.sleep(0.3)
        assert testbed.restored_count(runc, root, first) > count
        testbed.drop_restored(runc, root, first, work_root)

        kube_node.remove_pod(pod)  # the pod, its namespace and its files are gone
        again = crgpu("restore", "-i", str(archive), "--rootfs", str(lower), "--root", str(root), second)
        assert again.exit_code == 0, again.output
        assert testbed.restored_count(runc, root, second) > 3
    finally:
        testbed.drop_restored(runc, root, first, work_root)
        testbed.drop_restored(runc, root, second, work_root)


def test_a_pods_container_is_never_stopped_behind_the_kubelets_back_and_its_copy_shares_nothing(
    kube_node: KubeNode, registry: Registry, tmp_path: Path, short_tmp: Path
) -> None:
    """By its Kubernetes name: a stop checkpoint is refused with the kubelet's API, and the pod's
    sandbox as such; --leave-running keeps it running. Its image is not restored into the live
    container's bundle (it would share its rootfs, cgroup and netns); through an archive the copy
    beside it shares none of them."""
    runc = testbed.require_binary(shutil.which("runc"), "runc")
    pod = kube_node.pod(_pod_name())
    source = kube_node.run(pod, "counter", annotations=HASH)
    kube_node.wait_count_above(source, 3)
    ref = f"default/{pod.name}/counter"
    refused = crgpu("checkpoint", "-i", str(tmp_path / "no"), ref)
    assert refused.exit_code == ExitCode.PRECONDITION, refused.output
    said = " ".join(refused.stderr.split())
    assert "belongs to Kubernetes" in said and f"POST /checkpoint/default/{pod.name}/counter" in said
    sandbox = crgpu("checkpoint", "-i", str(tmp_path / "no"), str(pod.id))
    assert sandbox.exit_code == ExitCode.PRECONDITION and "sandbox" in sandbox.stderr, sandbox.output
    assert kube_node.cri.status(source).state == CONTAINER_RUNNING and not (tmp_path / "no").exists()

    image, archive = tmp_path / "img", tmp_path / "counter.tar"
    assert crgpu("checkpoint", "-q", "--leave-running", "-i", str(image), ref).exit_code == 0
    assert kube_node.cri.status(source).state == CONTAINER_RUNNING
    root, copy_id = short_tmp / "root", f"copy-{os.getpid()}-{next(_names)}"
    beside = crgpu("restore", "-i", str(image), "--root", str(root), copy_id)
    assert beside.exit_code == ExitCode.PRECONDITION and "would share its root filesystem" in beside.stderr
    assert crgpu("export", "-q", "-i", str(image), "-o", str(archive)).exit_code == 0
    lower = registry.podman.base / "rootfs"
    try:
        restored = crgpu("restore", "-i", str(archive), "--rootfs", str(lower), "--root", str(root), copy_id)
        assert restored.exit_code == 0, restored.output
        copy, original = testbed.restored_pid(runc, root, copy_id), _init_pid(source)
        for shared in testbed.PRIVATE:
            assert not testbed.same_file(shared, copy, original), shared
        assert testbed.cgroup_of(copy) != testbed.cgroup_of(original)
        count = testbed.restored_count(runc, root, copy_id)
        time.sleep(0.3)
        assert testbed.restored_count(runc, root, copy_id) > count
        assert kube_node.cri.status(source).state == CONTAINER_RUNNING
    finally:
        testbed.drop_restored(runc, root, copy_id, Path(os.environ["CRGPU_WORK_ROOT"]))
