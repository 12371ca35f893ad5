"""argv, environment and CRIU config text for every option, against help texts captured from
the real runc 1.1.15 and 1.3.6 binaries (tests/fixtures/help)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crgpu.host.errors import PreconditionError
from crgpu.options.models import CheckpointOptions, RestoreOptions
from crgpu.runtimes.base import ContainerInfo, RuntimeBinary
from crgpu.runtimes.capabilities import parse_help_flags
from crgpu.runtimes.runc import RuncAdapter, runc_binary_from_texts
from tests.fakes import HELP

ROOT = Path("/run/runc")
IMG = Path("/ckpt/img")
WORK = Path("/ckpt/work")


def binary(version: str) -> RuntimeBinary:
    texts = {
        verb: (HELP / f"runc-{version}-{verb}.txt").read_text()
        for verb in ("version", "checkpoint", "restore")
    }
    return runc_binary_from_texts(Path("/usr/sbin/runc"), texts)


RUNC_11 = binary("1.1.15")
RUNC_13 = binary("1.3.6")
INFO = ContainerInfo(id="c1", runtime="runc", root=ROOT, state_path=ROOT / "c1" / "state.json")
BASE_CKPT = [
    "/usr/sbin/runc",
    "--root",
    "/run/runc",
    "checkpoint",
    "--image-path",
    "/ckpt/img",
    "--work-path",
    "/ckpt/work",
]
BASE_RESTORE = [
    "/usr/sbin/runc",
    "--root",
    "/run/runc",
    "restore",
    "--image-path",
    "/ckpt/img",
    "--work-path",
    "/ckpt/work",
    "--bundle",
    "/srv/b",
]
CONF_DUMP = {"CRIU_CONFIG_FILE": "/ckpt/work/crgpu-criu-dump.conf"}
CONF_RESTORE = {"CRIU_CONFIG_FILE": "/ckpt/work/crgpu-criu-restore.conf"}


def ckpt(runc: RuntimeBinary, **options: object):  # type: ignore[no-untyped-def]
    opts = CheckpointOptions(container_id="c1", image_path=IMG, work_path=WORK, **options)  # type: ignore[arg-type]
    return RuncAdapter(runc).checkpoint_invocation(opts, INFO, WORK)


def rest(runc: RuntimeBinary, **options: object):  # type: ignore[no-untyped-def]
    opts = RestoreOptions(image_path=IMG, work_path=WORK, **options)  # type: ignore[arg-type]
    return RuncAdapter(runc).restore_invocation(opts, "c1", ROOT, Path("/srv/b"), WORK, [])


def config_lines(text: str | None) -> list[str]:
    return [line for line in (text or "").splitlines() if line and not line.startswith("#")]


def test_versions_and_flags_from_the_real_help_texts() -> None:
    assert RUNC_11.version == "1.1.15+ds1" and RUNC_13.version == "1.3.6+ds1"
    assert {"link-remap", "tcp-skip-in-flight"} <= RUNC_13.checkpoint_flags
    assert not {"link-remap", "tcp-skip-in-flight"} & RUNC_11.checkpoint_flags
    assert "tcp-close" not in RUNC_13.checkpoint_flags | RUNC_13.restore_flags
    assert {"bundle", "b", "detach", "d", "pid-file"} <= RUNC_11.restore_flags


# (option, runc 1.1 flags, runc 1.1 config, runc 1.3 flags, runc 1.3 config)
CHECKPOINT_CASES = [
    ({}, [], [], [], []),
    ({"leave_running": True}, ["--leave-running"], [], ["--leave-running"], []),
    ({"tcp_established": True}, ["--tcp-established"], [], ["--tcp-established"], []),
    ({"skip_in_flight": True}, [], ["skip-in-flight"], ["--tcp-skip-in-flight"], []),
    ({"link_remap": True}, [], ["link-remap"], ["--link-remap"], []),
    ({"tcp_close": True}, [], ["tcp-close"], [], ["tcp-close"]),
    ({"file_locks": True}, ["--file-locks"], [], ["--file-locks"], []),
    ({"ext_unix_sk": True}, ["--ext-unix-sk"], [], ["--ext-unix-sk"], []),
    ({"shell_job": True}, ["--shell-job"], [], ["--shell-job"], []),
    (
        {"manage_cgroups_mode": "full"},
        ["--manage-cgroups-mode", "full"],
        [],
        ["--manage-cgroups-mode", "full"],
        [],
    ),
    (
        {"link_remap": True, "skip_in_flight": True, "tcp_close": True, "leave_running": True},
        ["--leave-running"],
        ["skip-in-flight", "link-remap", "tcp-close"],
        ["--leave-running", "--tcp-skip-in-flight", "--link-remap"],
        ["tcp-close"],
    ),
]


@pytest.mark.parametrize(("options", "flags11", "conf11", "flags13", "conf13"), CHECKPOINT_CASES)
def test_checkpoint_mapping(
    options: dict[str, object], flags11: list[str], conf11: list[str], flags13: list[str], conf13: list[str]
) -> None:
    for runc, flags, conf in ((RUNC_11, flags11, conf11), (RUNC_13, flags13, conf13)):
        inv = ckpt(runc, **options)
        assert inv.argv == [*BASE_CKPT, *flags, "--", "c1"]
        assert config_lines(inv.criu_config) == conf
        assert inv.env == (CONF_DUMP if conf else {})
        assert inv.criu_config_path == (WORK / "crgpu-criu-dump.conf" if conf else None)
        # Never a flag the binary does not know.
        known = runc.checkpoint_flags
        assert all(a.removeprefix("--") in known for a in inv.argv[3:] if a.startswith("--") and a != "--")


RESTORE_CASES = [
    ({}, ["--detach"], []),
    ({"detach": False}, [], []),
    ({"pid_file": Path("/run/c1.pid")}, ["--detach", "--pid-file", "/run/c1.pid"], []),
    ({"tcp_established": True}, ["--tcp-established", "--detach"], []),
    ({"tcp_close": True}, ["--detach"], ["tcp-close"]),
    ({"file_locks": True}, ["--file-locks", "--detach"], []),
    ({"ext_unix_sk": True}, ["--ext-unix-sk", "--detach"], []),
    ({"shell_job": True}, ["--shell-job", "--detach"], []),
    ({"manage_cgroups_mode": "strict"}, ["--manage-cgroups-mode", "strict", "--detach"], []),
]


@pytest.mark.parametrize(("options", "flags", "conf"), RESTORE_CASES)
@pytest.mark.parametrize("runc", [RUNC_11, RUNC_13], ids=["1.1", "1.3"])
def test_restore_mapping(
    runc: RuntimeBinary, options: dict[str, object], flags: list[str], conf: list[str]
) -> None:
    inv = rest(runc, **options)
    assert inv.argv == [*BASE_RESTORE, *flags, "--", "c1"]
    assert config_lines(inv.criu_config) == conf
    assert inv.env == (CONF_RESTORE if conf else {})


def test_cgroups_ignore_needs_runc_1_2() -> None:
    with pytest.raises(PreconditionError, match=r"needs runc 1\.2 or newer; this is runc 1\.1\.15"):
        ckpt(RUNC_11, manage_cgroups_mode="ignore")
    assert ckpt(RUNC_13, manage_cgroups_mode="ignore").argv[-4:] == [
        "--manage-cgroups-mode",
        "ignore",
        "--",
        "c1",
    ]


def test_runsc_only_options_are_refused_on_runc() -> None:
    for options in ({"compression": "none"}, {"direct": True}, {"exclude_committed_zero_pages": True}):
        with pytest.raises(PreconditionError, match="is a runsc option"):
            ckpt(RUNC_13, **options)
    with pytest.raises(PreconditionError, match="--direct is a runsc option"):
        rest(RUNC_13, direct=True)


def test_an_option_without_flag_or_config_route_is_refused_naming_the_version() -> None:
    old = RuntimeBinary(
        name="runc",
        path=Path("/x/runc"),
        version="0.9.0",
        checkpoint_flags=RUNC_11.checkpoint_flags - {"file-locks"},
        restore_flags=RUNC_11.restore_flags,
    )
    with pytest.raises(PreconditionError, match=r"--file-locks cannot reach CRIU through runc 0\.9\.0"):
        ckpt(old, file_locks=True)


def test_an_inherited_criu_config_file_is_replaced_and_said(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRIU_CONFIG_FILE", "/etc/mine.conf")
    inv = ckpt(RUNC_11, link_remap=True)
    assert inv.env == CONF_DUMP
    assert any("replaced" in note for note in inv.notes)


def test_help_parser_reads_go_flag_and_urfave_styles() -> None:
    go = "Usage:\n  -image-path string\n    \tdirectory\n  -leave-running\n    \trestart\n"
    assert parse_help_flags(go) == {"image-path", "leave-running"}
    urfave = "OPTIONS:\n   --bundle value, -b value  path\n   --detach, -d  detach\n"
    assert parse_help_flags(urfave) == {"bundle", "b", "detach", "d"}


def test_the_options_runcs_own_tests_use() -> None:
    for runc in (RUNC_11, RUNC_13):
        inv = ckpt(runc, runtime_debug=True, parent_path="../parent")
        assert inv.argv[:4] == ["/usr/sbin/runc", "--debug", "--root", str(ROOT)]
        assert inv.argv[-4:] == ["--parent-path", "../parent", "--", "c1"]
        opts = RestoreOptions(image_path=IMG, console_socket=Path("/run/console.sock"), runtime_debug=True)
        argv = RuncAdapter(runc).restore_invocation(opts, "c1", ROOT, Path("/srv/b"), WORK, []).argv
        assert argv[1] == "--debug"
        assert argv[argv.index("--console-socket") + 1] == "/run/console.sock"
    with pytest.raises(ValueError, match="--pre-dump chooses the parent itself"):
        CheckpointOptions(container_id="c1", image_path=IMG, pre_dump=1, parent_path="x")


def test_lazy_migration_mapping() -> None:
    for runc in (RUNC_11, RUNC_13):
        inv = ckpt(runc, lazy_pages=True, page_server="10.0.0.5:27277")
        lazy = ["--lazy-pages", "--page-server", "10.0.0.5:27277", "--status-fd", "3", "--", "c1"]
        assert inv.argv[-7:] == lazy
        opts = RestoreOptions(image_path=IMG, lazy_pages=True, page_server="10.0.0.5:27277")
        helper = RuncAdapter(runc).restore_invocation(opts, "c1", ROOT, Path("/srv/b"), WORK, []).helper_argv
        assert helper[1] == "lazy-pages"
        assert helper[helper.index("--page-server") :][:5] == [
            "--page-server",
            "--address",
            "10.0.0.5",
            "--port",
            "27277",
        ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lazy_pages": True}, "--lazy-pages needs --page-server"),
        ({"page_server": "h:1"}, "are for a --lazy-pages checkpoint"),
        ({"status_fd": 5}, "are for a --lazy-pages checkpoint"),
        ({"lazy_pages": True, "page_server": "h:1", "leave_running": True}, "cannot be combined"),
        ({"lazy_pages": True, "page_server": "h:0"}, "is not ADDRESS:PORT"),
        ({"lazy_pages": True, "page_server": "-x:80"}, "is not ADDRESS:PORT"),
        ({"lazy_pages": True, "page_server": "nocolon"}, "is not ADDRESS:PORT"),
    ],
)
def test_lazy_migration_options_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CheckpointOptions(container_id="c1", image_path=IMG, **options)  # type: ignore[arg-type]
