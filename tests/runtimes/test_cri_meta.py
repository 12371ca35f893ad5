"""What containerd's CRI keeps of a Kubernetes container, read as `ctr` prints it (outputs copied
from containerd 2.1.9 on this machine kind): the kubelet's labels and annotations, the CRI's name,
and the base image by digest; a shim that is not containerd's, or output that is not, gives {}."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from crgpu.runtimes import cri_meta

FIXTURES = Path(__file__).parent.parent / "fixtures" / "engines"
INFO = (FIXTURES / "containerd-2.1-cri-container-info.json").read_text()
IMAGES = (FIXTURES / "containerd-2.1-images-ls.txt").read_text()
CONTAINER = json.loads(INFO)["ID"]
DIGEST = "sha256:204a67316964c128f3700e7c14110d57f5b12ab036be12dacff7852566b00780"


def _answering(monkeypatch: pytest.MonkeyPatch, info: str = INFO, images: str = IMAGES) -> list[list[str]]:
    calls: list[list[str]] = []

    def run(argv: list[str], **_: object) -> subprocess.CompletedProcess[bytes]:
        calls.append(argv)
        out = info if "containers" in argv else images
        return subprocess.CompletedProcess(argv, 0, out.encode(), b"")

    monkeypatch.setattr(cri_meta, "_shim_address", lambda pid: "/run/crgpu-node/containerd.sock")
    monkeypatch.setattr(cri_meta.shutil, "which", lambda name: "/usr/bin/ctr")
    monkeypatch.setattr(cri_meta.subprocess, "run", run)
    return calls


def test_the_kubelets_record_is_read_from_containerd(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _answering(monkeypatch)
    found = cri_meta.cri_details(CONTAINER, 1234, "k8s.io")
    assert found == {
        "labels": {"io.kubernetes.container.name": "counter"},
        "annotations": {
            "io.kubernetes.container.hash": "abc123",
            "io.kubernetes.container.restartCount": "0",
        },
        "cri_name": "counter_web_default_uid-web_0",
        "created_at": "2026-12-02T22:08:58.573931598Z",
        "image_ref": f"127.0.0.1:5000/crgpu-busybox@{DIGEST}",
    }
    # argv only, the ID after `--`, the socket the shim names
    assert calls[0] == [
        "/usr/bin/ctr", "--address", "/run/crgpu-node/containerd.sock", "--namespace", "k8s.io",
        "containers", "info", "--", CONTAINER,
    ]  # fmt: skip


def test_the_digest_reference_prefers_the_tags_repository() -> None:
    listing = (
        IMAGES + f"other.example/mirror@{DIGEST.split(':')[0]}:{DIGEST.split(':')[1]} x {DIGEST} 1 MiB\n"
    )
    image_id = "sha256:8d240641e16da21716fbee459ca10670cb56cc85deec6f0c4033125f7ea5e594"
    assert cri_meta._digest_ref(listing, image_id, "127.0.0.1:5000/crgpu-busybox:1") == (
        f"127.0.0.1:5000/crgpu-busybox@{DIGEST}"
    )
    assert cri_meta._digest_ref(listing, "sha256:" + "9" * 64, "x:1") is None


@pytest.mark.parametrize(
    "info", ["not json", "[]", json.dumps({"Extensions": {cri_meta._METADATA: {"value": "!!"}}})]
)
def test_output_that_is_not_containerds_gives_nothing(monkeypatch: pytest.MonkeyPatch, info: str) -> None:
    _answering(monkeypatch, info=info)
    assert cri_meta.cri_details(CONTAINER, 1234, "k8s.io") == {}


def test_a_namespace_that_could_be_a_flag_is_never_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _answering(monkeypatch)
    assert cri_meta.cri_details(CONTAINER, 1234, "--debug") == {}
    assert calls == []


def test_a_parent_that_is_not_a_containerd_shim_is_not_asked() -> None:
    """This test's own process has pytest's parent, not a shim: no socket is taken from it."""
    assert cri_meta._shim_address(os.getpid()) is None
    assert cri_meta._shim_address(None) is None
