"""A checkpoint image, an ID or a path is hostile input: each attack of issue 12, as a test.

These use fake runtimes (a fake runc from tests/fakes.py, runsc help texts captured from the
real binaries); the attacks that need a real runtime are in test_security_real.py.
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crgpu.host.errors import ExitCode, ImagePathError
from crgpu.host.locks import container_lock, lock_path
from crgpu.host.textsafe import printable, strict_json
from crgpu.image.manifest import ContainerRecord, Manifest, RuntimeRecord, write_manifest
from crgpu.options.runsc_flags import carried_globals
from tests.fakes import HELP, install_fake_runc
from tests.helpers import crgpu

ESC = "\x1b"
HOSTILE_TEXT = [
    "\x1b[2J\x1b[H",  # clear screen
    "\x1b]0;owned\x07",  # window title
    "\x1b]52;c;ZWNobyBvd25lZA==\x07",  # OSC 52: write the clipboard
    "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\",  # OSC 8 link
    "[/bold]",  # Rich markup that crashed the renderer
    "[red]fake[/red] [link=http://evil.example]x[/link]",
    "\u202eevil",  # right-to-left override
    "\x9b2J",  # C1 CSI
]


def strict_loads(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "bundle"
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text("{}")
    return path


def manifest_doc(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = Manifest(
        runtime=RuntimeRecord(
            name="runc", version="1.1.15", path="/usr/sbin/runc", root=str(tmp_path / "root")
        ),
        container=ContainerRecord(id="c9", bundle=str(bundle(tmp_path))),
    ).model_dump(mode="json")
    for dotted, value in changes.items():
        target = doc
        *parents, last = dotted.split(".")
        for parent in parents:
            target = target[parent]
        target[last] = value
    return doc


def foreign_image(tmp_path: Path, name: str = "img", raw: str | None = None, **changes: Any) -> Path:
    """An image written elsewhere: crgpu.json as a file, unsigned (or raw text)."""
    path = tmp_path / name
    path.mkdir(mode=0o700)
    text = raw if raw is not None else json.dumps(manifest_doc(tmp_path, **changes))
    (path / "crgpu.json").write_text(text)
    return path


def signed_image(tmp_path: Path, name: str = "img", **changes: Any) -> Path:
    """An image this node wrote: signed with the node key."""
    path = tmp_path / name
    path.mkdir(mode=0o700)
    write_manifest(path, Manifest.model_validate(manifest_doc(tmp_path, **changes)))
    return path


def ran(calls: Path, verb: str) -> bool:
    """Whether the fake runtime was asked to do `verb` (help and version queries aside)."""
    return calls.exists() and f" {verb} " in calls.read_text()


# --- 1. the image is data: state root and bundle, trust ---------------------------------------


def test_a_foreign_image_cannot_choose_the_state_root_or_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    image = foreign_image(tmp_path)
    result = crgpu("restore", "--dry-run", "-i", str(image))
    assert result.exit_code == ExitCode.PRECONDITION
    assert "unsigned" in result.stderr and "--root and --bundle" in result.stderr
    other = tmp_path / "mine"
    other.mkdir()
    (other / "config.json").write_text("{}")
    result = crgpu(
        "restore",
        "--dry-run",
        "--json",
        "-i",
        str(image),
        "--root",
        str(tmp_path / "r2"),
        "--bundle",
        str(other),
    )
    assert result.exit_code == 0, result.output
    doc = strict_loads(result.stdout)
    assert doc["argv"][:3] == [str(tmp_path / "fake-runc"), "--root", str(tmp_path / "r2")]
    assert doc["argv"][doc["argv"].index("--bundle") + 1] == str(other)
    assert any("unsigned" in note for note in doc["notes"])
    assert crgpu("restore", "--dry-run", "--trust-image", "-i", str(image)).exit_code == 0


def test_a_signed_image_keeps_the_convenience_and_an_edited_one_loses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    image = signed_image(tmp_path)
    key = Path(os.environ["CRGPU_NODE_KEY"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert crgpu("restore", "--dry-run", "-i", str(image)).exit_code == 0
    shown = crgpu("inspect", "--json", str(image))
    assert strict_loads(shown.stdout)["trust"] == "this-node"
    doc = json.loads((image / "crgpu.json").read_text())
    doc["runtime"]["root"] = "/run/elsewhere"
    (image / "crgpu.json").write_text(json.dumps(doc))
    result = crgpu("restore", "--dry-run", "-i", str(image))
    assert result.exit_code == ExitCode.PRECONDITION and "edited" in result.stderr
    assert strict_loads(crgpu("inspect", "--json", str(image)).stdout)["trust"] == "edited"
    assert "edited after this node signed it" in crgpu("inspect", str(image)).stdout


def test_an_image_signed_on_another_node_is_foreign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    image = signed_image(tmp_path)
    monkeypatch.setenv("CRGPU_NODE_KEY", str(tmp_path / "other-node" / "node.key"))
    crgpu("checkpoint", "--dry-run", "-i", str(tmp_path / "x"), "c1")  # the other node's own key exists
    result = crgpu("restore", "--dry-run", "-i", str(image))
    assert result.exit_code == ExitCode.PRECONDITION and "another node" in result.stderr


def test_a_node_key_others_can_read_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    image = signed_image(tmp_path)
    os.chmod(os.environ["CRGPU_NODE_KEY"], 0o644)
    result = crgpu("restore", "--dry-run", "-i", str(image))
    assert result.exit_code == ExitCode.PRECONDITION and "chmod 600" in result.stderr


@pytest.mark.parametrize("version", [0, 2, 99])
def test_an_unknown_schema_version_is_refused(tmp_path: Path, version: int) -> None:
    image = foreign_image(tmp_path, schema_version=version)
    result = crgpu("inspect", str(image))
    assert result.exit_code == ExitCode.PRECONDITION
    assert f"schema_version {version} is not one this crgpu reads" in result.stderr


# --- 2. IDs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["--help", "-h", "c1\n", ".hidden", "_x", "a" * 256, "c/1", "c 1", "é", "+x", "-"]
)
def test_an_id_that_is_not_runcs_is_refused_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    calls = install_fake_runc(tmp_path, monkeypatch)
    result = crgpu("checkpoint", "-i", str(tmp_path / "img"), "--", bad)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "invalid container ID" in result.stderr
    assert not ran(calls, "checkpoint")


def test_the_longest_id_works_and_reaches_the_runtime_after_a_double_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    long_id = "a" * 255
    result = crgpu(
        "checkpoint",
        "--dry-run",
        "--json",
        "--root",
        str(tmp_path / "root"),
        "-i",
        str(tmp_path / "i"),
        long_id,
    )
    assert result.exit_code == ExitCode.NOT_FOUND, result.output  # looked up, never a crash
    code = crgpu("checkpoint", "--dry-run", "--json", "-i", str(tmp_path / "i"), "c1")
    assert strict_loads(code.stdout)["argv"][-2:] == ["--", "c1"]


@pytest.mark.parametrize("bad_id", ["--help", "c1\n", "../../etc", "x" * 300, "-rf"])
def test_an_id_inside_an_image_is_checked_when_the_image_is_read(tmp_path: Path, bad_id: str) -> None:
    image = foreign_image(tmp_path, **{"container.id": bad_id})
    for args in (["inspect", str(image)], ["restore", "--dry-run", "--trust-image", "-i", str(image)]):
        result = crgpu(*args)
        assert result.exit_code == ExitCode.PRECONDITION, result.output
        assert "invalid container ID" in result.stderr and "internal error" not in result.stderr


def test_a_path_too_long_for_the_kernel_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    long_name = "b" * 300
    result = crgpu("restore", "--dry-run", "-i", str(tmp_path), "--bundle", f"/srv/{long_name}")
    assert result.exit_code == ExitCode.USAGE and "longer than 255 bytes" in result.stderr
    result = crgpu("checkpoint", "-i", "/" + "x/" * 2100, "c1")
    assert result.exit_code == ExitCode.USAGE and "longer than 4095 bytes" in result.stderr
    image = foreign_image(tmp_path, "img2", **{"container.bundle": f"/srv/{long_name}"})
    result = crgpu("inspect", str(image))
    assert result.exit_code == ExitCode.PRECONDITION and "internal error" not in result.stderr


# --- 3. directories ------------------------------------------------------------------------------


def test_an_image_dir_prepared_by_another_user_is_refused_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = install_fake_runc(tmp_path, monkeypatch)
    planted = tmp_path / "planted"
    planted.mkdir()
    os.chown(planted, 1000, 1000)
    os.chmod(planted, 0o777)
    result = crgpu("checkpoint", "-i", str(planted), "c1")
    assert result.exit_code == ExitCode.IMAGE_PATH
    assert "prepared by someone else" in result.stderr
    info = planted.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (1000, 0o777) and not any(planted.iterdir())
    assert not ran(calls, "checkpoint")
    # Root's own but writable by all: refused too; root's own 0755: taken and tightened.
    os.chown(planted, 0, 0)
    assert crgpu("checkpoint", "-i", str(planted), "c1").exit_code == ExitCode.IMAGE_PATH
    os.chmod(planted, 0o755)
    assert crgpu("checkpoint", "-i", str(planted), "c1").exit_code == 0
    assert stat.S_IMODE(planted.stat().st_mode) == 0o700


def test_a_work_path_with_a_planted_link_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = install_fake_runc(
        tmp_path, monkeypatch, on_checkpoint="echo written > $(dirname $0)/work/dump.log"
    )
    secret = tmp_path / "root-only"
    secret.write_text("precious")
    secret.chmod(0o600)
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    (work / "dump.log").symlink_to(secret)
    result = crgpu("checkpoint", "-i", str(tmp_path / "img"), "--work-path", str(work), "c1")
    assert result.exit_code == ExitCode.IMAGE_PATH and "symbolic link (dump.log)" in result.stderr
    assert secret.read_text() == "precious"
    assert not ran(calls, "checkpoint")


def test_a_parent_anyone_can_write_without_sticky_bit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    (open_dir / "img").mkdir(mode=0o700)
    result = crgpu("checkpoint", "-i", str(open_dir / "img"), "c1")
    assert result.exit_code == ExitCode.IMAGE_PATH and "sticky" in result.stderr


def test_dirs_made_under_umask_000_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_runc(tmp_path, monkeypatch, on_checkpoint="echo 'criu failed' >&2; exit 1")
    monkeypatch.setenv("CRGPU_WORK_ROOT", str(tmp_path / "var" / "lib" / "crgpu" / "work"))
    monkeypatch.setenv("CRGPU_LOCK_DIR", str(tmp_path / "run" / "crgpu"))
    old = os.umask(0)
    try:
        result = crgpu("checkpoint", "-i", str(tmp_path / "deep" / "er" / "img"), "c1")
    finally:
        os.umask(old)
    assert result.exit_code == ExitCode.RUNTIME_FAILED  # the failed checkpoint's logs went to the work root
    made = [
        tmp_path / p
        for p in (
            "var",
            "var/lib",
            "var/lib/crgpu",
            "var/lib/crgpu/work",
            "run",
            "run/crgpu",
            "deep",
            "deep/er",
        )
    ]
    made += [p for p in (tmp_path / "var/lib/crgpu/work").rglob("*") if p.is_dir()]
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    logs = list((tmp_path / "var/lib/crgpu/work").rglob("crgpu-checkpoint-output.log"))
    assert logs and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in logs)


def test_the_runtime_runs_with_umask_077(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = tmp_path / "img"
    install_fake_runc(tmp_path, monkeypatch, on_checkpoint=f"echo memory > {image}/pages-1.img")
    old = os.umask(0)
    try:
        assert crgpu("checkpoint", "-i", str(image), "c1").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((image / "pages-1.img").stat().st_mode) == 0o600


# --- 4. nothing from outside reaches the terminal as codes or markup ---------------------------


def test_printable_escapes_every_terminal_code() -> None:
    for text in HOSTILE_TEXT:
        shown = printable(text)
        assert ESC not in shown and "\x07" not in shown and "\x9b" not in shown and "\u202e" not in shown
    assert printable("plain text [ok]") == "plain text [ok]"
    assert printable("naïve") == "naïve"
    assert printable("a\nb") == "a\\x0ab"


@pytest.mark.parametrize("rich", [False, True])
def test_inspect_shows_hostile_strings_literally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rich: bool
) -> None:
    monkeypatch.setattr("crgpu.cli.render.stderr_is_terminal", lambda: rich)
    hostile = "".join(HOSTILE_TEXT)
    image = foreign_image(
        tmp_path,
        **{
            "runtime.version": hostile,
            "host.kernel": hostile,
            "crgpu_version": "[/bold]",
            "options": {"note[/bold]": hostile},
            "runtime.global_flags": [f"--network={hostile}"],
        },
    )
    result = crgpu("inspect", str(image))
    assert result.exit_code == 0, result.output
    assert ESC not in result.output and "\x07" not in result.output and "\u202e" not in result.output
    assert "[/bold]" in result.stdout  # shown as text, not read as markup
    assert "internal error" not in result.output
    doc = strict_loads(crgpu("inspect", "--json", str(image)).stdout)
    assert doc["host"]["kernel"] == hostile  # JSON carries the value, escaped by the encoder


@pytest.mark.parametrize("rich", [False, True])
def test_runtime_output_and_errors_are_shown_literally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rich: bool
) -> None:
    monkeypatch.setattr("crgpu.cli.render.stderr_is_terminal", lambda: rich)
    install_fake_runc(
        tmp_path,
        monkeypatch,
        on_checkpoint=r"printf '\033[2J\033]52;c;eA==\007[/bold] Error: criu failed\n' >&2; exit 1",
    )
    result = crgpu("checkpoint", "-i", str(tmp_path / "img"), "c1")
    assert result.exit_code == ExitCode.RUNTIME_FAILED
    assert ESC not in result.output and "\x07" not in result.output
    assert "\\x1b[2J" in result.stderr and "[/bold]" in result.stderr


def test_a_forced_restore_of_an_image_with_markup_does_not_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("crgpu.cli.render.stderr_is_terminal", lambda: True)
    install_fake_runc(tmp_path, monkeypatch)
    image = signed_image(tmp_path, **{"host.arch": "[/bold]\x1b[31m"})
    result = crgpu("restore", "--force", "--dry-run", "-i", str(image))
    assert result.exit_code == 0, result.output
    assert "[/bold]" in result.stdout and ESC not in result.output


def test_json_output_is_strict() -> None:
    text = strict_json({"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": {"d": "\x1b"}})
    assert strict_loads(text) == {"a": None, "b": [None, None, 1.5], "c": {"d": "\x1b"}}
    assert "\x1b" not in text


def test_a_huge_integer_or_nan_in_an_image_is_refused_not_a_crash(tmp_path: Path) -> None:
    for name, raw in (
        ("huge", json.dumps(manifest_doc(tmp_path, **{"sizes.total_bytes": 10**40}))),
        ("nan", json.dumps(manifest_doc(tmp_path, stats={"frozen_time": math.nan}))),
        ("inf", json.dumps(manifest_doc(tmp_path)).replace('"stats": {}', '"stats": {"x": 1e999}')),
        ("digits", json.dumps(manifest_doc(tmp_path)).replace('"pid": null', '"pid": ' + "9" * 5000)),
    ):
        image = foreign_image(tmp_path, name, raw=raw)
        for args in (["inspect", str(image)], ["inspect", "--json", str(image)]):
            result = crgpu(*args)
            assert result.exit_code == ExitCode.PRECONDITION, (name, result.output)
            assert "internal error" not in result.output


@pytest.mark.parametrize(
    "cuda",
    [
        {"mode": "driver-api", "processes": [{"ns_pid": 7, "gpus": ["--root=/tmp"]}]},
        {"mode": "driver-api", "processes": [{"ns_pid": 7, "gpus": "GPU-1"}]},
        {"mode": "driver-api", "processes": [{"ns_pid": 7}], "container_gpus": ["GPU-\u001b[2J"]},
    ],
)
def test_gpu_uuids_in_an_image_are_checked_when_it_is_read(tmp_path: Path, cuda: dict[str, object]) -> None:
    """They become driver call arguments at restore: anything but a GPU UUID is refused up front."""
    image = foreign_image(tmp_path, "gpus", raw=json.dumps(manifest_doc(tmp_path, cuda=cuda)))
    result = crgpu("inspect", "--json", str(image))
    assert result.exit_code == ExitCode.PRECONDITION, result.output
    assert "not a list of GPU UUIDs" in result.stdout


@pytest.mark.parametrize(
    ("cuda", "words"),
    [
        (
            {"mode": "driver-api", "processes": [{"ns_pid": 7, "gpu_bytes": -1}]},
            "gpu_bytes is not a byte count",
        ),
        (
            {"mode": "driver-api", "processes": [{"ns_pid": 7, "gpu_bytes": 2**60}]},
            "gpu_bytes is not a byte count",
        ),
        (
            {"mode": "driver-api", "processes": [{"ns_pid": 7, "gpu_bytes": True}]},
            "gpu_bytes is not a byte count",
        ),
        (
            {"mode": "driver-api", "processes": [{"ns_pid": 7, "gpu_memory": [1]}]},
            "gpu_memory is not bytes per GPU",
        ),
        (
            {
                "mode": "driver-api",
                "processes": [{"ns_pid": 7, "gpu_memory": {"GPU-00000000-0000-0000-0000-000000000001": "9"}}],
            },
            "gpu_memory is not bytes per GPU",
        ),
        (
            {"mode": "driver-api", "processes": [{"ns_pid": 7, "gpu_memory": {"--root=/tmp": 1}}]},
            "not a list of GPU UUIDs",
        ),
    ],
)
def test_gpu_byte_counts_in_an_image_are_checked_when_it_is_read(
    tmp_path: Path, cuda: dict[str, object], words: str
) -> None:
    """They set a restore's deadlines and its free-GPU-memory check: anything but bytes per GPU
    UUID is refused up front."""
    image = foreign_image(tmp_path, "bytes", raw=json.dumps(manifest_doc(tmp_path, cuda=cuda)))
    result = crgpu("inspect", "--json", str(image))
    assert result.exit_code == ExitCode.PRECONDITION, result.output
    assert words in result.stdout


# --- 5. locks and the restore's existence check ---------------------------------------------------


def test_the_lock_is_keyed_on_the_resolved_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run" / "x").mkdir(parents=True)
    assert lock_path("runc", tmp_path / "run" / "x", "c1") == lock_path(
        "runc", tmp_path / "run" / ".." / "run" / "x", "c1"
    )
    calls = install_fake_runc(tmp_path, monkeypatch)
    spelled_otherwise = tmp_path / "root" / ".." / "root"
    with container_lock("runc", tmp_path / "root", "c1"):
        result = crgpu("checkpoint", "--root", str(spelled_otherwise), "-i", str(tmp_path / "img"), "c1")
    assert result.exit_code == ExitCode.BUSY
    assert not ran(calls, "checkpoint")


def test_restore_checks_the_id_again_under_the_lock_and_deletes_nothing_it_did_not_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = install_fake_runc(tmp_path, monkeypatch)
    image = signed_image(tmp_path, **{"container.id": "c2", "runtime.root": str(tmp_path / "root")})
    root = tmp_path / "root"
    with container_lock("runc", root, "c2"):
        child = subprocess.Popen(
            [sys.executable, "-m", "crgpu", "restore", "--wait", "30", "-i", str(image)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        time.sleep(1.5)  # crgpu has planned (the ID was free) and waits for the lock
        assert child.poll() is None
        (root / "c2").mkdir()  # meanwhile, someone else made the container
        (root / "c2" / "state.json").write_text(json.dumps({"init_process_pid": 7, "config": {}}))
    _, err = child.communicate(timeout=30)
    assert child.returncode == ExitCode.PRECONDITION, err
    assert "already exists" in err
    assert not ran(calls, "restore") and not ran(calls, "delete")


def test_a_lock_file_planted_as_a_link_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    path = lock_path("runc", tmp_path / "root", "c1")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(victim)
    result = crgpu("checkpoint", "-i", str(tmp_path / "img"), "c1")
    assert result.exit_code == ExitCode.IMAGE_PATH
    assert victim.read_text() == "keep"


# --- 6. runaway runtimes ----------------------------------------------------------------------------


def test_a_restore_whose_criu_log_runs_away_is_stopped_and_the_log_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crgpu.core import restore

    monkeypatch.setattr(restore, "RESTORE_LOG_CAP_BYTES", 2 * 1024 * 1024)
    work = tmp_path / "work"
    install_fake_runc(
        tmp_path,
        monkeypatch,
        on_restore=f"while true; do echo 'pie: Error reading pages' >> {work}/restore.log; done",
        on_delete="exit 0",
    )
    image = signed_image(tmp_path, **{"runtime.root": str(tmp_path / "r")})
    started = time.monotonic()
    result = crgpu("restore", "--json", "--work-path", str(work), "-i", str(image))
    assert time.monotonic() - started < 10
    doc = strict_loads(result.stdout)
    assert result.exit_code == ExitCode.RUNTIME_FAILED
    assert "CRIU is looping" in doc["error"]
    assert (work / "restore.log").stat().st_size <= 2 * 1024 * 1024


# --- 7. runsc: the image's flags, and the boot-only ones ------------------------------------------

KNOWN = frozenset(
    line.split()[0].lstrip("-").split("=")[0]
    for line in (HELP / "runsc-20260817-flags.txt").read_text().splitlines()
    if line.strip().startswith("-")
)


@pytest.mark.parametrize(
    "flags",
    [
        ["do", "/bin/sh", "-c", "touch /tmp/owned"],
        ["--network=none", "delete", "--force", "other"],
        ["--host-uds=all"],
        ["--network=host"],
        ["--platform=/bin/sh"],
        ["--TESTONLY-unsafe-nonroot=true"],
    ],
)
def test_image_flags_outside_the_allow_list_are_refused(flags: list[str]) -> None:
    with pytest.raises(Exception) as caught:
        carried_globals(flags, [], KNOWN, "the image")
    assert getattr(caught.value, "exit_code", None) == ExitCode.PRECONDITION


def test_image_flags_the_allow_list_takes_drops_and_the_operator_adds() -> None:
    offered = [
        "--network=none",
        "--ignore-cgroups=true",
        "--root=/tmp/elsewhere",
        "--debug-log=/etc/cron.d/x",
        "--log-fd=3",
        "--debug-log-fd=4",
        "--nvproxy=true",
        "--debug",
    ]
    flags, notes = carried_globals(offered, ["--debug-log=/var/log/runsc/"], KNOWN, "the image")
    assert flags == [
        "--network=none",
        "--ignore-cgroups=true",
        "--nvproxy=true",
        "--debug",
        "--debug-log=/var/log/runsc/",
    ]
    assert notes == []  # the operator passed --debug-log again: the image's is replaced, not noted
    flags, notes = carried_globals(offered, [], KNOWN, "the image")
    assert "--debug-log=/etc/cron.d/x" not in flags and "--root=/tmp/elsewhere" not in flags
    assert len(notes) == 1 and "--runtime-flag=--debug-log=/etc/cron.d/x" in notes[0]
    flags, _ = carried_globals(["--network=host"], ["--network=host"], KNOWN, "the image")
    assert flags == ["--network=host"]


@pytest.mark.parametrize("bad", ["network=host", "do", "--root=/x", "--log-fd=3", "-"])
def test_runtime_flag_values_are_checked(tmp_path: Path, bad: str) -> None:
    result = crgpu("restore", "--dry-run", "-i", str(tmp_path), f"--runtime-flag={bad}")
    assert result.exit_code == ExitCode.USAGE, result.output


def test_an_image_cannot_run_a_command_through_runsc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reproduced attack: flags `do /bin/sh -c CMD` made `crgpu restore` run CMD as root."""
    runsc = tmp_path / "runsc"
    texts = {
        name: (HELP / f"runsc-20260817-{name}.txt").read_text()
        for name in ("version", "checkpoint", "restore", "flags", "help")
    }
    for name, text in texts.items():
        (tmp_path / f"{name}.txt").write_text(text)
    marker = tmp_path / "owned"
    runsc.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f"  --version) cat {tmp_path}/version.txt ;;\n"
        f'  "checkpoint --help") cat {tmp_path}/checkpoint.txt ;;\n'
        f'  "restore --help") cat {tmp_path}/restore.txt ;;\n'
        f"  flags) cat {tmp_path}/flags.txt ;;\n"
        f"  --help) cat {tmp_path}/help.txt ;;\n"
        f'  *) echo "$@" >> {tmp_path}/calls ;;\n'
        "esac\n"
    )
    runsc.chmod(0o755)
    monkeypatch.setenv("CRGPU_RUNSC", str(runsc))
    monkeypatch.setenv("CRGPU_RUNSC_ROOTS", str(tmp_path / "none"))
    image = signed_image(
        tmp_path,
        **{"runtime.name": "runsc", "runtime.global_flags": ["do", "/bin/sh", "-c", f"touch {marker}"]},
    )
    result = crgpu("restore", "-i", str(image))
    assert result.exit_code == ExitCode.PRECONDITION, result.output
    assert "not a flag" in result.stderr
    assert not marker.exists() and not (tmp_path / "calls").exists()


# --- the fuzz: hostile manifests through inspect and restore --------------------------------------

TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from([*HOSTILE_TEXT, "--help", "-x", "c1\n", "[bold]", "\x00", "a" * 300]),
)
NUMBER = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([10**400, -1, 0]),
)
VALUE = st.one_of(TEXT, NUMBER, st.none(), st.booleans(), st.lists(TEXT, max_size=3))
FIELDS = st.sampled_from(
    [
        "schema_version",
        "crgpu_version",
        "created_at",
        "runtime.name",
        "runtime.version",
        "runtime.root",
        "runtime.global_flags",
        "container.id",
        "container.bundle",
        "container.pid",
        "container.gpu",
        "host.kernel",
        "host.arch",
        "host.driver_version",
        "sizes.total_bytes",
        "sizes.memory_pages_bytes",
        "stats",
        "options",
        "cuda",
    ]
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(FIELDS, VALUE, max_size=4), stat_value=NUMBER)
def test_fuzzed_manifests_never_crash_or_leak_terminal_codes(
    tmp_path_factory: pytest.TempPathFactory, changes: dict[str, Any], stat_value: Any
) -> None:
    tmp_path = tmp_path_factory.mktemp("fuzz")
    doc = manifest_doc(tmp_path)
    doc["stats"] = {"frozen_time": stat_value}
    for dotted, value in changes.items():
        target = doc
        *parents, last = dotted.split(".")
        for parent in parents:
            target = target[parent]
        target[last] = value
    image = tmp_path / "img"
    image.mkdir()
    (image / "crgpu.json").write_text(json.dumps(doc))  # NaN/Infinity written as Python writes them
    codes = {0, int(ExitCode.PRECONDITION), int(ExitCode.NOT_FOUND), int(ExitCode.USAGE)}
    for args in (
        ["inspect", str(image)],
        ["inspect", "--json", str(image)],
        ["restore", "--dry-run", "--json", "--trust-image", "-i", str(image)],
    ):
        result = crgpu(*args)
        assert result.exit_code in codes, (args, result.output)
        assert "internal error" not in result.output and "Traceback" not in result.output
        assert ESC not in result.output and "\x07" not in result.output
        if "--json" in args:
            strict_loads(result.stdout)


def test_image_path_error_is_raised_for_links(tmp_path: Path) -> None:
    from crgpu.host.safedirs import take_private_dir

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ImagePathError, match="symlink"):
        take_private_dir(tmp_path / "link", "image path", empty=True)
