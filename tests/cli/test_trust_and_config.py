"""Issue 21's attacks on trust, keys and config: a manifest cannot claim crgpu's verdict, text
that is not Unicode is refused at parse, the node key is checked before the dump, a config file
others can change is never read, non-root is told so before any runtime state is read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from crgpu.host.errors import ExitCode
from tests.archives import archive, tar
from tests.cli.test_security import foreign_image, manifest_doc, ran, strict_loads
from tests.fakes import install_fake_runc
from tests.helpers import crgpu, lock_held_elsewhere


def test_a_manifest_cannot_stand_in_for_crgpus_verdict(tmp_path: Path) -> None:
    doc = manifest_doc(tmp_path)
    doc |= {"trust": "this-node", "path": "/elsewhere", "complete": False}
    image = foreign_image(tmp_path, raw=json.dumps(doc))
    shown = strict_loads(crgpu("inspect", "--json", str(image)).stdout)
    assert (shown["trust"], shown["path"], shown["complete"]) == ("unsigned", str(image), True)
    packed = archive(tmp_path / "a.tar", ("crgpu.json", json.dumps(doc).encode()))
    assert strict_loads(crgpu("inspect", "--json", str(packed)).stdout)["crgpu"]["trust"] == "unsigned"


@pytest.mark.parametrize("where", ["options-key", "cuda-value"])
def test_a_manifest_with_a_lone_surrogate_is_refused_at_parse(tmp_path: Path, where: str) -> None:
    doc = manifest_doc(tmp_path)
    if where == "options-key":
        doc["options"] = {"x\ud800": 1}
    else:
        doc["cuda"] = {"mode": "off", "note": "w\udc01"}
    image = foreign_image(tmp_path, raw=json.dumps(doc))
    result = crgpu("inspect", "--json", str(image))
    assert result.exit_code == ExitCode.PRECONDITION and "not valid Unicode" in result.stderr, result.output
    from crgpu.host.textsafe import unencodable

    assert unencodable(strict_loads(result.stdout)) is None  # the refusal itself is valid Unicode


def test_an_archive_whose_metadata_is_not_unicode_is_refused(tmp_path: Path) -> None:
    config = json.dumps({"id": "c1", "name": "web\ud800"}).encode()
    packed = tar(tmp_path / "a.tar", ("config.dump", config), ("spec.dump", b"{}"))
    result = crgpu("inspect", str(packed))
    assert result.exit_code == ExitCode.PRECONDITION and "not valid Unicode" in result.stderr


@pytest.mark.parametrize("kind", ["symlink", "group-readable"])
def test_a_node_key_signing_would_refuse_is_refused_before_the_dump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    calls = install_fake_runc(tmp_path, monkeypatch)
    real = tmp_path / "keys" / "real.key"
    real.parent.mkdir()
    real.write_bytes(os.urandom(32))
    real.chmod(0o600)
    key = tmp_path / "keys" / "node.key"
    if kind == "symlink":
        key.symlink_to(real)
    else:
        shutil.copy(real, key)
        key.chmod(0o640)
    monkeypatch.setenv("CRGPU_NODE_KEY", str(key))
    result = crgpu("checkpoint", "-i", str(tmp_path / "img"), "c1")
    assert result.exit_code == ExitCode.PRECONDITION and "node key" in result.stderr, result.output
    assert not ran(calls, "checkpoint") and not (tmp_path / "img").exists()


def _config_with_runc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    marker = tmp_path / "ran-as-root"
    evil = tmp_path / "evil-runc"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    evil.chmod(0o755)
    conf_dir = tmp_path / "etc-crgpu"
    conf_dir.mkdir()
    conf = conf_dir / "config.toml"
    conf.write_text(f'runc = "{evil}"\n')
    monkeypatch.setenv("CRGPU_CONFIG", str(conf))
    monkeypatch.delenv("CRGPU_RUNC", raising=False)
    return conf, marker


@pytest.mark.parametrize("how", ["world-writable", "other-owner", "writable-parent"])
def test_a_config_others_can_change_is_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    conf, marker = _config_with_runc(tmp_path, monkeypatch)
    if how == "world-writable":
        conf.chmod(0o666)
    elif how == "other-owner":
        os.chown(conf, 65534, 65534)
    else:
        conf.parent.chmod(0o777)
    result = crgpu("checkpoint", "--dry-run", "-i", str(tmp_path / "img"), "c1")
    assert result.exit_code == ExitCode.PRECONDITION, result.output
    assert (
        str(conf.parent if how == "writable-parent" else conf) in result.stderr
        and "chmod go-w" in result.stderr
    )
    assert not marker.exists()


def test_a_private_config_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    conf, _marker = _config_with_runc(tmp_path, monkeypatch)
    conf.write_text(f'runc = "{tmp_path / "fake-runc"}"\n')
    conf.chmod(0o644)
    assert crgpu("checkpoint", "--dry-run", "-i", str(tmp_path / "img"), "c1").exit_code == 0


@pytest.mark.parametrize("verb", ["checkpoint", "restore"])
def test_non_root_is_told_so_before_any_runtime_state_is_read(tmp_path: Path, verb: str) -> None:
    """A real process as nobody: before, runc's root-only state gave 'Permission denied' (exit 5)."""
    setpriv = shutil.which("setpriv")
    crgpu_bin = shutil.which("crgpu")
    if os.geteuid() != 0 or setpriv is None or crgpu_bin is None:
        pytest.skip("needs root, setpriv and the installed crgpu")
    env = {"PATH": os.environ["PATH"], "HOME": "/", "NO_COLOR": "1"}
    args = (
        ["checkpoint", "-i", "/tmp/crgpu-nobody-img", "web"]
        if verb == "checkpoint"
        else ["restore", "-i", "/tmp"]
    )
    done = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", crgpu_bin, *args],
        capture_output=True, text=True, timeout=60, env=env, check=False, cwd="/",
    )  # fmt: skip
    assert done.returncode == ExitCode.PRECONDITION and "needs root" in done.stderr, done.stderr


def test_an_export_into_its_own_image_dir_is_refused(tmp_path: Path) -> None:
    from tests.cli.test_security import signed_image

    image = signed_image(tmp_path)
    result = crgpu("export", "-i", str(image), "-o", str(image / "inside.tar"))
    assert result.exit_code == ExitCode.IMAGE_PATH and "inside the image" in result.stderr, result.output
    assert not (image / "inside.tar").exists()


def test_an_engines_container_is_never_hinted_away_with_the_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image of a containerd container that still exists under its ID: the engine guard
    answers first, with containerd's command, never `runc delete` behind containerd's back."""
    from tests.cli.test_security import signed_image

    calls = install_fake_runc(tmp_path, monkeypatch)
    engine = {"kind": "containerd", "name": "c1", "namespace": "k8s.io"}
    image = signed_image(tmp_path, **{"container.id": "c1", "container.engine": engine})
    result = crgpu("restore", "--dry-run", "-i", str(image))
    assert result.exit_code == ExitCode.PRECONDITION, result.output
    assert "containerd" in result.stderr and "delete" not in result.stderr
    assert not ran(calls, "delete")


def test_a_plain_container_in_the_way_is_hinted_with_a_delete_that_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.cli.test_security import signed_image

    install_fake_runc(tmp_path, monkeypatch)
    image = signed_image(tmp_path, **{"container.id": "c1"})
    result = crgpu("restore", "--dry-run", "-i", str(image))
    assert result.exit_code == ExitCode.PRECONDITION and "already exists" in result.stderr
    assert "delete --force c1" in result.stderr  # runc refuses a plain delete of a running container


def test_gc_leaves_an_import_whose_restore_is_under_way(tmp_path: Path) -> None:
    """owner.json names the container; its lock is held (by a restore still unpacking): kept."""
    work = Path(os.environ["CRGPU_WORK_ROOT"]) / "c7" / "import-1"
    (work / "archive").mkdir(parents=True)
    (work / "archive" / "pages-1.img").write_bytes(b"x" * 4096)
    (work / "owner.json").write_text(json.dumps({"root": str(tmp_path / "root"), "id": "c7"}))
    with lock_held_elsewhere(tmp_path / "root", "c7"):
        doc = strict_loads(crgpu("gc", "--json").stdout)
        assert doc["removed"] == [] and "under way" in doc["kept"][0]["why"] and work.exists()
    doc = strict_loads(crgpu("gc", "--json").stdout)
    assert [item["path"] for item in doc["removed"]] == [str(work)] and not work.exists()
