"""Archives as hostile input: `crgpu restore -i ARCHIVE` and `crgpu inspect ARCHIVE` refuse what a
checkpoint archive never holds, and write nothing outside their own directory."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from crgpu.host.errors import ExitCode, PreconditionError
from crgpu.image.archive_read import read_summary, unpack
from crgpu.image.rootfs_diff import overlay_upper
from tests.archives import CONFIG, SPEC
from tests.archives import archive as _archive
from tests.archives import special as _special
from tests.archives import tar as _tar
from tests.helpers import crgpu

HOSTILE = {
    "dotdot": ("../escaped", b"x"),
    "deep-dotdot": ("checkpoint/../../escaped", b"x"),
    "absolute": ("/tmp/crgpu-escaped-abs", b"x"),
    "symlink-out": _special("checkpoint/link", tarfile.SYMTYPE, "/etc"),
    "hardlink": _special("checkpoint/hard", tarfile.LNKTYPE, "/etc/shadow"),
    "device": _special("checkpoint/sda", tarfile.BLKTYPE),
    "fifo": _special("checkpoint/fifo", tarfile.FIFOTYPE),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_archive_is_refused_and_nothing_lands_outside(tmp_path: Path, kind: str) -> None:
    archive = _archive(tmp_path / "evil.tar", HOSTILE[kind])
    target = tmp_path / "work" / "unpacked"
    target.parent.mkdir()
    with pytest.raises(PreconditionError):
        unpack(archive, target)
    assert not (tmp_path / "work" / "escaped").exists() and not (tmp_path / "escaped").exists()
    assert not Path("/tmp/crgpu-escaped-abs").exists()
    result = crgpu("restore", "-i", str(archive), "--rootfs", str(tmp_path), "c2")
    assert result.exit_code in (ExitCode.USAGE, ExitCode.PRECONDITION), result.output
    assert "Traceback" not in result.output


def test_an_oversized_member_is_refused_before_a_byte_is_written(tmp_path: Path) -> None:
    """A header claiming more than the free space: refused from the header, nothing written."""
    header = tarfile.TarInfo("checkpoint/pages-1.img")
    header.size = 1 << 50  # 1 PiB
    raw = tarfile.TarInfo("config.dump")
    raw.size = len(CONFIG)
    archive = tmp_path / "big.tar"
    archive.write_bytes(raw.tobuf() + CONFIG.ljust(512, b"\0") + header.tobuf() + b"\0" * 1024)
    target = tmp_path / "unpacked"
    with pytest.raises(PreconditionError, match=r"more than the .* bytes left"):
        unpack(archive, target)
    assert not (target / "checkpoint" / "pages-1.img").exists()


def test_an_archive_without_the_engines_metadata_is_not_a_checkpoint(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "plain.tar", ("hello.txt", b""))
    result = crgpu("inspect", str(archive))
    assert result.exit_code == ExitCode.PRECONDITION and "not a checkpoint archive" in result.stderr


def test_unpacking_tells_its_progress_in_bytes_of_the_whole(tmp_path: Path) -> None:
    big = b"\1" * (3 * 2**20 + 5)  # more than one chunk
    archive = _archive(
        tmp_path / "ok.tar", ("checkpoint/pages-1.img", big), ("checkpoint/inventory.img", b"\0" * 9)
    )
    total = read_summary(archive).unpacked_bytes
    told: list[tuple[int, int]] = []
    written = unpack(archive, tmp_path / "out", lambda done, whole: told.append((done, whole)), total)
    assert written == total and told[-1] == (total, total)
    assert [done for done, _ in told] == sorted(done for done, _ in told) and len(told) >= 4


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_an_archive_cut_inside_a_member_is_refused_whichever_way_it_is_read(
    tmp_path: Path, compression: str
) -> None:
    """An uncompressed archive's data is copied in the kernel from the member's offset, a
    compressed one's read from the stream: a cut archive is refused both ways, and a whole one
    unpacks to the same bytes."""
    data = bytes(range(256)) * 4096
    whole = _archive(
        tmp_path / "whole.tar", ("checkpoint/pages-1.img", data), ("checkpoint/inventory.img", b"i")
    )
    raw = whole.read_bytes()
    if compression == "gzip":
        raw = gzip.compress(raw)
        whole.write_bytes(raw)
    assert unpack(whole, tmp_path / "ok") == read_summary(whole).unpacked_bytes
    written = (tmp_path / "ok" / "checkpoint" / "pages-1.img").read_bytes()
    assert hashlib.sha256(written).digest() == hashlib.sha256(data).digest()  # (no megabyte diff)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PreconditionError):
        unpack(cut, tmp_path / "out")


def test_inspect_reads_an_archive_without_unpacking_it(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "ok.tar", ("checkpoint/inventory.img", b"\0" * 100))
    summary = read_summary(archive)
    assert summary.format == "podman" and summary.checkpoint_bytes == 100
    doc = json.loads(crgpu("inspect", "--json", str(archive)).stdout)
    assert doc["archive"] is True and doc["container"]["name"] == "web"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.tar"]  # nothing unpacked


def test_escape_codes_in_an_archive_never_reach_the_terminal(tmp_path: Path) -> None:
    config = json.dumps({"id": "c1", "name": "web\x1b]0;pwned\x07", "runtime": "runc"}).encode()
    archive = _tar(tmp_path / "esc.tar", ("config.dump", config), ("spec.dump", SPEC))
    result = crgpu("inspect", str(archive))
    assert result.exit_code == 0 and "\x1b" not in result.stdout and "\x07" not in result.stdout


def test_the_writable_layer_is_found_in_the_mount_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_text(
        "1606 1602 0:165 / /var/lib/containers/storage/overlay/d2/merged rw,nodev - overlay overlay "
        "rw,lowerdir=/var/lib/containers/storage/overlay/l/5X,upperdir=/var/lib/containers/storage/overlay/"
        "d2/diff,workdir=/var/lib/containers/storage/overlay/d2/work\n"
        "1607 1602 0:166 / /srv/with\\040space rw - overlay overlay rw,lowerdir=/l,upperdir=/u\\040x,workdir=/w\n"
    )
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(tmp_path))
    assert overlay_upper(Path("/var/lib/containers/storage/overlay/d2/merged")) == Path(
        "/var/lib/containers/storage/overlay/d2/diff"
    )
    assert overlay_upper(Path("/srv/with space")) == Path("/u x")
    assert overlay_upper(Path("/srv/plain")) is None


def test_the_mounts_inside_a_work_dir_are_listed_deepest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crgpu.host.mounts import mount_points_below

    work = "/var/lib/crgpu/work/c1/restore-1"
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_text(
        # As CRIU 4.1 leaves its cgroup yard after a failed lazy restore (cgroup v1), beside a
        # neighbour whose name only starts the same, the work dir itself and a name with a space.
        f"2201 30 0:301 / {work}/.criu.cgyard.4wuBB0 rw,relatime - tmpfs none rw\n"
        f"2202 2201 0:28 / {work}/.criu.cgyard.4wuBB0/pids rw,relatime - cgroup none rw,pids\n"
        f"2203 2201 0:29 / {work}/.criu.cgyard.4wuBB0/blkio rw,relatime - cgroup none rw,blkio\n"
        f"2204 30 0:302 / {work}0/x rw - tmpfs none rw\n"
        f"2205 30 0:303 / {work} rw - tmpfs none rw\n"
        f"2206 30 0:304 / {work}/with\\040space rw - tmpfs none rw\n"
    )
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(tmp_path))
    yard = f"{work}/.criu.cgyard.4wuBB0"
    assert mount_points_below(Path(work)) == [
        Path(f"{yard}/blkio"),
        Path(f"{yard}/pids"),
        Path(yard),
        Path(f"{work}/with space"),
    ]


def _rootfs(tmp_path: Path) -> Path:
    rootfs = tmp_path / "image-rootfs"
    (rootfs / "bin").mkdir(parents=True)
    return rootfs


def test_a_terminal_container_from_an_archive_needs_a_console_socket_before_anything_is_unpacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRGPU_RUNC_ROOTS", str(tmp_path / "root"))
    archive = _tar(
        tmp_path / "tty.tar",
        ("config.dump", CONFIG),
        ("spec.dump", json.dumps({"process": {"terminal": True}}).encode()),
    )
    result = crgpu("restore", "-i", str(archive), "--rootfs", str(_rootfs(tmp_path)), "c2")
    assert result.exit_code == ExitCode.PRECONDITION and "--console-socket" in result.stderr, result.output
    work = Path(os.environ["CRGPU_WORK_ROOT"])
    assert not (work / "c2").exists()  # refused from the archive's spec, nothing unpacked


def test_an_archive_whose_container_would_reach_the_host_needs_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Privileges, host namespaces and host bind mounts from an archive are listed and refused."""
    from crgpu.image.archive_spec import rebuild_spec

    spec = {
        "process": {"capabilities": {"bounding": ["CAP_CHOWN", "CAP_SYS_ADMIN"]}},
        "hooks": {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "touch /tmp/pwned"]}]},
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network", "path": "/proc/1/ns/net"}]
        },
        "mounts": [
            {"destination": "/host", "type": "bind", "source": "/etc", "options": ["rbind"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "/nonexistent/userdata/hosts"},
        ],
    }
    spec["process"]["args"] = ["sh"]  # type: ignore[index]
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    rebuilt = rebuild_spec(spec, bundle, "c2")
    reaching, notes, made = rebuilt.reaching, rebuilt.notes, rebuilt.spec
    assert "hooks" not in made and "path" not in made["linux"]["namespaces"][2]
    assert made["linux"]["cgroupsPath"] == "/crgpu/c2"
    assert any("CAP_SYS_ADMIN" in r for r in reaching)
    assert any("ipc namespace" in r for r in reaching) and any("uts namespace" in r for r in reaching)
    assert any("/etc at /host" in r for r in reaching)
    rebuilt.make_stand_ins(_rootfs(tmp_path))
    stand_in = made["mounts"][1]["source"]
    assert str(stand_in).startswith(str(bundle)) and Path(str(stand_in)).is_file()
    assert any("hooks were dropped" in n for n in notes)
    assert rebuilt.external_net  # CRIU recorded the network namespace as extRootNetNS


def test_the_engines_own_files_become_private_copies_never_the_hosts(tmp_path: Path) -> None:
    """An engine's per-container files (a pod sandbox's hosts, hostname, resolv.conf, /dev/shm) are
    host paths on the same node: the copy gets its own, even when the archive names /etc/shadow."""
    from crgpu.image.archive_spec import rebuild_spec

    secret = tmp_path / "shadow"
    secret.write_text("root:secret-hash")
    shm = tmp_path / "sandbox-shm"
    shm.mkdir()
    (shm / "held").write_text("the original's")
    spec = {
        "process": {"args": ["sh"]},
        "hostname": "web-0",
        "mounts": [
            {"destination": "/etc/hosts", "type": "bind", "source": str(secret), "options": ["rbind"]},
            {"destination": "/etc/hostname", "type": "bind", "source": str(secret), "options": ["rbind"]},
            {"destination": "/dev/shm", "type": "bind", "source": str(shm), "options": ["rbind"]},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": "relative/resolv.conf"},
        ],
    }
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    rebuilt = rebuild_spec(spec, bundle, "c3")
    assert not [item for item in rebuilt.reaching if "bind-mounts" in item]
    rebuilt.make_stand_ins(_rootfs(tmp_path))
    sources = [Path(m["source"]) for m in rebuilt.spec["mounts"]]
    assert all(source.parent == bundle / "mounts" for source in sources)
    hosts, hostname = (source.read_bytes() for source in sources[:2])
    assert hosts is not None and b"localhost" in hosts and b"web-0" in hosts and b"secret" not in hosts
    assert hostname == b"web-0\n"
    assert sources[2].is_dir() and not any(sources[2].iterdir())  # the original's /dev/shm is not shared
    assert sum("a private copy" in note for note in rebuilt.notes) == 4


def test_a_stand_in_takes_the_type_of_the_containers_mount_point_not_of_its_name(tmp_path: Path) -> None:
    """A missing bind source named like a file over a directory in the container's root fails the
    mount in runc ("not a directory"): the stand-in is typed by the mount point; a link there is
    never followed."""
    from crgpu.image.archive_spec import rebuild_spec

    root = _rootfs(tmp_path)
    (root / "data.d").mkdir()
    (root / "conf").write_text("x")
    (root / "linked").symlink_to("/etc")
    mounts = [
        {"destination": "/data.d", "type": "bind", "source": "/gone/volume.d"},
        {"destination": "/conf", "type": "bind", "source": "/gone/shm"},
        {"destination": "/linked/passwd", "type": "bind", "source": "/gone/passwd"},
    ]
    (tmp_path / "bundle").mkdir()
    rebuilt = rebuild_spec({"process": {"args": ["sh"]}, "mounts": mounts}, tmp_path / "bundle", "c4")
    rebuilt.make_stand_ins(root)
    data, conf, linked = (Path(m["source"]) for m in rebuilt.spec["mounts"])
    assert data.is_dir() and conf.is_file() and linked.is_file()


def test_a_gzip_writable_layer_as_containerd_writes_it_is_applied(tmp_path: Path) -> None:
    """containerd's CheckpointContainer copies the layer from its content store: gzip-compressed."""
    from crgpu.image.rootfs_layer import apply_layer

    plain = _tar(tmp_path / "plain.tar", ("tmp/count", b"41\n"))
    layer = tmp_path / "rootfs-diff.tar"
    layer.write_bytes(gzip.compress(plain.read_bytes()))
    upper = tmp_path / "upper"
    upper.mkdir()
    assert apply_layer(layer, None, upper) == 1
    assert (upper / "tmp" / "count").read_bytes() == b"41\n"


@pytest.mark.parametrize(
    ("deleted", "layer"),
    [
        (["../../escaped"], []),  # a whiteout outside the container's layer
        ([], [_special("dev/sda", tarfile.BLKTYPE)]),  # a device node in the layer
        ([], [_special("etc/passwd", tarfile.SYMTYPE, "../../../../etc/passwd"), ("etc/passwd", b"x")]),
    ],
    ids=["whiteout-out", "device", "write-through-link"],
)
def test_a_hostile_writable_layer_is_refused_and_nothing_lands_outside(
    tmp_path: Path, deleted: list[str], layer: list[tarfile.TarInfo | tuple[str, bytes]]
) -> None:
    """rootfs-diff.tar and deleted.files from an archive go into the overlay's upper dir only."""
    from crgpu.image.rootfs_layer import apply_layer

    unpacked, upper = tmp_path / "archive", tmp_path / "bundle" / "upper"
    unpacked.mkdir()
    upper.mkdir(parents=True)
    if layer:
        _tar(unpacked / "rootfs-diff.tar", *layer)
    if deleted:
        (unpacked / "deleted.files").write_text(json.dumps(deleted))
    with pytest.raises(PreconditionError):
        apply_layer(
            unpacked / "rootfs-diff.tar" if layer else None,
            unpacked / "deleted.files" if deleted else None,
            upper,
        )
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()
    assert not (upper / "dev" / "sda").exists()
