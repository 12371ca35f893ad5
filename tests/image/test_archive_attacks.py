"""Issue 21's attacks on `crgpu restore -i ARCHIVE` that need no runtime: a spec that would reach
the host, a writable layer that links out, damaged streams, bombs, and a Python that spins."""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from crgpu.host.errors import ExitCode, PreconditionError
from crgpu.image.archive_read import read_summary, unpack
from crgpu.image.archive_spec import rebuild_spec
from tests.archives import CONFIG, PODMAN_SPEC, Member, archive, special, tar
from tests.helpers import crgpu


def podman_spec() -> dict[str, Any]:
    """A real spec.dump of a podman 5.4 container (busybox, default options)."""
    spec: dict[str, Any] = json.loads(PODMAN_SPEC.read_text())
    return spec


def reaching(spec: dict[str, Any], tmp_path: Path) -> list[str]:
    return rebuild_spec(copy.deepcopy(spec), tmp_path / "bundle", "c2").reaching


def test_an_engines_default_container_reaches_nothing(tmp_path: Path) -> None:
    rebuilt = rebuild_spec(podman_spec(), tmp_path / "bundle", "c2")
    assert rebuilt.reaching == [bind for bind in rebuilt.reaching if "bind-mounts" in bind] == []
    spec = rebuilt.spec
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert len(spec["linux"]["seccomp"]["syscalls"]) == len(podman_spec()["linux"]["seccomp"]["syscalls"])
    assert spec["linux"]["cgroupsPath"] == "/crgpu/c2"
    assert spec["annotations"] == {
        "io.container.manager": "libpod",
        "org.opencontainers.image.stopSignal": "15",
    }  # the org.systemd.property.* ones are systemd's configuration: dropped
    assert spec["process"]["args"][0] == "/bin/busybox"


def test_annotations_runc_or_criu_read_as_configuration_never_reach_the_bundle(tmp_path: Path) -> None:
    """org.criu.config names a CRIU config file that runc hands to CRIU (action-script: root code)."""
    spec = podman_spec()
    spec["annotations"] |= {
        "org.criu.config": "checkpoint/zz.conf",
        "org.systemd.property.ExecStartPre": "/bin/sh -c 'touch /pwned'",
        "run.oci.hooks.stdout": "/dev/tty",
        "io.kubernetes.cri.container-name": "web",
    }
    rebuilt = rebuild_spec(spec, tmp_path / "bundle", "c2")
    assert "org.criu.config" not in rebuilt.spec["annotations"]
    assert not any(key.startswith(("org.systemd", "run.oci")) for key in rebuilt.spec["annotations"])
    assert rebuilt.spec["annotations"]["io.kubernetes.cri.container-name"] == "web"
    assert any("'org.criu.config'" in note for note in rebuilt.notes)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            lambda s: s["mounts"].append(
                {"destination": "/h", "type": "bind", "source": "../../../../etc", "options": ["rbind"]}
            ),
            "relative to the bundle",
        ),
        (
            lambda s: s["mounts"].append({"destination": "/h", "source": "sub/dir", "options": ["bind"]}),
            "relative to the bundle",
        ),
        (
            lambda s: s["mounts"].append({"destination": "/d", "type": "ext4", "source": "/dev/sda1"}),
            "'ext4' file system",
        ),
        (
            lambda s: s["linux"]["resources"]["devices"].append({"allow": True, "access": "rwm"}),
            "allows device access a *:* rwm",
        ),
        (lambda s: s["linux"]["resources"].update(devices=[]), None),  # deny-all put back: not reaching
        (
            lambda s: s["linux"].update(devices=[{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}]),
            "device node /dev/sda",
        ),
        (lambda s: s["linux"].pop("seccomp"), "without a seccomp profile"),
        (lambda s: s["linux"]["seccomp"].update(defaultAction="SCMP_ACT_ALLOW"), "lets every system call"),
        (
            lambda s: s["linux"]["seccomp"]["syscalls"].insert(
                0, {"names": ["kexec_load", "bpf"], "action": "SCMP_ACT_ALLOW"}
            ),
            "allows bpf, kexec_load",
        ),
        (lambda s: s["process"].update(apparmorProfile="unconfined"), "without AppArmor"),
        (
            lambda s: (
                s["process"]["capabilities"]["ambient"].append("CAP_SYS_MODULE")
                if "ambient" in s["process"]["capabilities"]
                else s["process"]["capabilities"].update(ambient=["CAP_SYS_MODULE"])
            ),
            "CAP_SYS_MODULE",
        ),
        (lambda s: s["linux"]["namespaces"].pop(1), "shares this host's network namespace"),
    ],
    ids=[
        "relative-bind",
        "relative-bind-by-option",
        "block-device-mount",
        "devices-allow-all",
        "no-device-rules",
        "device-node",
        "no-seccomp",
        "seccomp-allow-all",
        "seccomp-opens-kexec",
        "apparmor-unconfined",
        "ambient-caps",
        "host-network",
    ],
)
def test_what_a_spec_would_reach_is_listed(tmp_path: Path, change: Any, said: str | None) -> None:
    spec = podman_spec()
    change(spec)
    found = reaching(spec, tmp_path)
    if said is None:
        assert found == []
        devices = rebuild_spec(spec, tmp_path / "b2", "c2").spec["linux"]["resources"]["devices"]
        assert devices[0] == {"allow": False, "access": "rwm"}
    else:
        assert any(said in line for line in found), found


def test_a_seccomp_rule_whose_condition_is_malformed_is_dropped_not_made_unconditional(
    tmp_path: Path,
) -> None:
    spec = podman_spec()
    spec["linux"]["seccomp"]["syscalls"].insert(
        0, {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 9, "value": 1, "op": "X"}]}
    )
    rules = rebuild_spec(spec, tmp_path / "bundle", "c2").spec["linux"]["seccomp"]["syscalls"]
    assert all(rule.get("args") for rule in rules if rule["names"] == ["socket"])


def test_a_relative_bind_is_refused_before_anything_is_unpacked(tmp_path: Path) -> None:
    spec = podman_spec()
    spec["mounts"].append(
        {"destination": "/h", "type": "bind", "source": "../../../../etc", "options": ["rbind"]}
    )
    evil = archive(tmp_path / "evil.tar", ("checkpoint/inventory.img", b"x"), spec=json.dumps(spec).encode())
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    result = crgpu("restore", "-i", str(evil), "--rootfs", str(rootfs), "c2")
    assert result.exit_code == ExitCode.PRECONDITION, result.output
    assert "relative to the bundle" in result.stderr and "--trust-image" in result.stderr
    assert not (Path(os.environ["CRGPU_WORK_ROOT"]) / "c2").exists()


@pytest.mark.parametrize("where", ["/", "work-root-parent", "node-key-dir"])
def test_a_rootfs_of_the_host_or_of_crgpus_state_is_refused_whatever_the_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    state = tmp_path / "state"
    (state / "work").mkdir(parents=True)
    (state / "keys").mkdir()
    monkeypatch.setenv("CRGPU_WORK_ROOT", str(state / "work"))
    monkeypatch.setenv("CRGPU_NODE_KEY", str(state / "keys" / "node.key"))
    rootfs = {"/": Path("/"), "work-root-parent": state, "node-key-dir": state / "keys"}[where]
    (state / "keys" / "node.key").write_text("k")
    evil = archive(tmp_path / "a.tar", ("checkpoint/inventory.img", b"x"), spec=PODMAN_SPEC.read_bytes())
    result = crgpu("restore", "-i", str(evil), "--rootfs", str(rootfs), "--trust-image", "c2")
    assert result.exit_code == ExitCode.PRECONDITION, result.output
    assert "--rootfs" in result.stderr and "host" in result.stderr
    assert not (state / "work" / "c2").exists()


# ---------------------------------------------------------------- the writable layer
def _apply(tmp_path: Path, *layer: Member) -> Path:
    from crgpu.image.rootfs_layer import apply_layer

    unpacked, upper = tmp_path / "archive", tmp_path / "bundle" / "upper"
    unpacked.mkdir()
    upper.mkdir(parents=True)
    apply_layer(tar(unpacked / "rootfs-diff.tar", *layer), None, upper)
    return upper


@pytest.mark.parametrize(
    "layer",
    [
        [special("etc/shadow", tarfile.LNKTYPE, "HOSTFILE")],  # absolute: replaced below
        [special("etc/shadow", tarfile.LNKTYPE, "../../../host-file")],
        [special("etc/link", tarfile.SYMTYPE, "HOSTFILE"), special("etc/hard", tarfile.LNKTYPE, "etc/link")],
        [special("etc/hard", tarfile.LNKTYPE, "etc/not-in-the-layer")],
    ],
    ids=["absolute", "dotdot", "to-a-symlink-out", "to-a-missing-member"],
)
def test_a_hard_link_out_of_the_layer_is_refused_and_the_host_file_untouched(
    tmp_path: Path, layer: list[tarfile.TarInfo]
) -> None:
    host_file = tmp_path / "host-file"
    host_file.write_text("root only\n")
    host_file.chmod(0o600)
    for member in layer:
        member.linkname = member.linkname.replace("HOSTFILE", str(host_file))
    with pytest.raises(PreconditionError, match="writable layer was refused"):
        _apply(tmp_path, *layer)
    assert host_file.stat().st_nlink == 1 and host_file.read_text() == "root only\n"


def test_a_hard_link_to_a_file_of_the_layer_is_kept(tmp_path: Path) -> None:
    upper = _apply(tmp_path, ("bin/tool", b"#!x"), special("bin/alias", tarfile.LNKTYPE, "bin/tool"))
    assert (upper / "bin" / "alias").stat().st_ino == (upper / "bin" / "tool").stat().st_ino


def test_nothing_is_written_through_a_link_the_layer_made(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    layer = [special("etc", tarfile.SYMTYPE, str(outside)), ("etc/passwd", b"root::0:0::/:/bin/sh\n")]
    with pytest.raises(PreconditionError, match="not a directory"):
        _apply(tmp_path, *layer)
    assert list(outside.iterdir()) == []


def test_the_layer_keeps_modes_owners_and_links_but_no_setuid(tmp_path: Path) -> None:
    tool = tarfile.TarInfo("usr/bin/tool")
    tool.size, tool.mode, tool.uid, tool.gid = 2, 0o4755, 1000, 1000
    tmp = tarfile.TarInfo("tmp")
    tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
    upper = _apply(
        tmp_path,
        tmp,
        (tool, b"#!"),
        special("bin", tarfile.SYMTYPE, "/usr/bin"),
        ("etc/motd", b"new"),
    )
    st = (upper / "usr/bin/tool").stat()
    assert (st.st_mode & 0o7777, st.st_uid) == (0o755, 1000)
    assert (upper / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert os.readlink(upper / "bin") == "/usr/bin" and (upper / "etc/motd").read_bytes() == b"new"


def test_a_path_twice_in_the_layer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PreconditionError, match="twice"):
        _apply(tmp_path, ("etc/motd", b"old"), ("etc/motd", b"new"))


def test_deleted_files_has_a_cap(tmp_path: Path) -> None:
    from crgpu.image.rootfs_layer import DELETED_MAX_ENTRIES, apply_layer

    unpacked, upper = tmp_path / "archive", tmp_path / "upper"
    unpacked.mkdir()
    upper.mkdir()
    (unpacked / "deleted.files").write_text(json.dumps([f"f{i}" for i in range(DELETED_MAX_ENTRIES + 1)]))
    with pytest.raises(PreconditionError, match="at most"):
        apply_layer(None, unpacked / "deleted.files", upper)
    assert list(upper.iterdir()) == []


# ---------------------------------------------------------------- streams and bombs
def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :]


def _export_like(tmp_path: Path) -> bytes:
    """A plain archive with a pages file of incompressible bytes."""
    return archive(
        tmp_path / "plain.tar",
        ("checkpoint/inventory.img", b"i"),
        ("checkpoint/pages-1.img", os.urandom(200_000)),
    ).read_bytes()


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_a_damaged_stream_is_a_clear_refusal_and_nothing_is_left(tmp_path: Path, compression: str) -> None:
    plain = _export_like(tmp_path)
    if compression == "zstd":
        import zstandard

        packed = zstandard.ZstdCompressor(write_checksum=True).compress(plain)
    else:
        packed = gzip.compress(plain, mtime=0)
    damaged = tmp_path / f"damaged.{compression}"
    damaged.write_bytes(_flip(packed, len(packed) // 2))
    target = tmp_path / "unpacked"
    with pytest.raises(PreconditionError, match="damaged"):
        unpack(damaged, target)
    result = crgpu("inspect", str(damaged))
    assert result.exit_code == ExitCode.PRECONDITION, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output


def test_a_gzip_stream_with_a_bad_crc_is_refused(tmp_path: Path) -> None:
    """The damage is in the trailer only: the tar reads well, the CRC at the stream's end does not."""
    packed = gzip.compress(_export_like(tmp_path), mtime=0)
    damaged = tmp_path / "crc.tar.gz"
    damaged.write_bytes(_flip(packed, len(packed) - 6))
    with pytest.raises(PreconditionError, match="damaged"):
        read_summary(damaged)


def test_an_export_carries_a_zstd_checksum(tmp_path: Path) -> None:
    import zstandard

    from crgpu.image.archive_export import _compressor

    raw = io.BytesIO()
    with _compressor(raw, "zstd") as stream:
        stream.write(b"x" * 1000)
    assert zstandard.get_frame_parameters(raw.getvalue()).has_checksum


def test_a_bomb_is_refused_at_its_header_before_its_data_is_read(tmp_path: Path) -> None:
    """A tiny zstd archive whose member claims a petabyte: refused from the first pass's header."""
    import zstandard

    header = tarfile.TarInfo("checkpoint/pages-1.img")
    header.size = 1 << 50
    raw = tarfile.TarInfo("config.dump")
    raw.size = len(CONFIG)
    plain = raw.tobuf() + CONFIG.ljust(512, b"\0") + header.tobuf()
    bomb = tmp_path / "bomb.tar.zst"
    bomb.write_bytes(zstandard.ZstdCompressor().compress(plain))
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    result = crgpu("restore", "-i", str(bomb), "--rootfs", str(rootfs), "c2")
    assert result.exit_code == ExitCode.PRECONDITION, result.output
    assert "free where it is unpacked" in result.stderr
    assert not (Path(os.environ["CRGPU_WORK_ROOT"]) / "c2").exists()


def test_more_members_than_free_inodes_are_refused_before_unpacking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crgpu.host import safedirs

    members = [(f"checkpoint/f{i}", b"") for i in range(300)]
    many = archive(
        tmp_path / "many.tar", ("checkpoint/inventory.img", b"x"), *members, spec=PODMAN_SPEC.read_bytes()
    )
    real = os.statvfs(tmp_path)

    class Few:
        f_bavail, f_frsize, f_files, f_favail = real.f_bavail, real.f_frsize, 1000, 200

    monkeypatch.setattr(safedirs, "_statvfs", lambda _path: Few())
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    result = crgpu("restore", "-i", str(many), "--rootfs", str(rootfs), "c2")
    assert result.exit_code == ExitCode.PRECONDITION and "free inodes" in result.stderr, result.output
    assert not list((Path(os.environ["CRGPU_WORK_ROOT"]) / "c2").rglob("f1"))


ABSURD_PAX = """
import io, sys, tarfile, time
sys.path.insert(0, {root!r})
from crgpu.image.archive_read import read_summary
from crgpu.host.errors import PreconditionError
member = tarfile.TarInfo("checkpoint/pages-1.img")
member.size = 10
member.pax_headers = {{"size": "9" * 30}}
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
    out.addfile(member, io.BytesIO(b"x" * 10))
open(sys.argv[1], "wb").write(buf.getvalue())
started = time.monotonic()
try:
    read_summary(__import__("pathlib").Path(sys.argv[1]))
except PreconditionError as exc:
    print("refused in", round(time.monotonic() - started, 3), "s:", exc.message)
"""


def test_an_absurd_pax_size_is_refused_at_once_on_this_python(tmp_path: Path) -> None:
    """Python 3.11's stream reader skips such a member by reading an empty stream for ever."""
    script = ABSURD_PAX.format(root=str(Path(__file__).parent.parent.parent))
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "absurd.tar")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and "refused in" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize(
    "inventory",
    [
        b"",
        b"\x16\x31\x31\x58",
        b"\x16\x31\x31\x58\xff\xff\xff\x7f",
        b"\x16\x31\x31\x58\x03\x00\x00\x00\x1a\xff\x01",
    ],
    ids=["empty", "magic-only", "huge-length", "truncated-field"],
)
def test_malformed_criu_images_are_a_refusal_not_a_crash(tmp_path: Path, inventory: bytes) -> None:
    """CRIU's images come from the archive: whatever they hold, reading them is exit 4 or data."""
    from crgpu.criu.images import read_grants

    (tmp_path / "inventory.img").write_bytes(inventory)
    (tmp_path / "pstree.img").write_bytes(os.urandom(64))
    with pytest.raises(PreconditionError, match="CRIU's image"):
        read_grants(tmp_path)
