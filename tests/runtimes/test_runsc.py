"""runsc argv for Debian's runsc 20240729 (captured) and a 2026 runsc (fixture from source)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crgpu.host.errors import PreconditionError
from crgpu.options.models import CheckpointOptions, RestoreOptions
from crgpu.options.runsc_flags import sandbox_global_flags
from crgpu.runtimes.base import ContainerInfo, RuntimeBinary
from crgpu.runtimes.runsc import RunscAdapter, runsc_binary_from_texts
from tests.fakes import HELP

ROOT = Path("/run/gv")
IMG = Path("/ckpt/g")
GLOBALS = ["--network=none", "--ignore-cgroups=true"]


def binary(version: str) -> RuntimeBinary:
    texts = {
        name: (HELP / f"runsc-{version}-{name}.txt").read_text()
        for name in ("version", "checkpoint", "restore", "flags", "help")
    }
    return runsc_binary_from_texts(Path("/usr/bin/runsc"), texts)


RUNSC_2024 = binary("20240729")
RUNSC_2026 = binary("20260817")


def info(gpu: bool = False, flags: list[str] | None = None) -> ContainerInfo:
    return ContainerInfo(
        id="g1",
        runtime="runsc",
        root=ROOT,
        state_path=ROOT / "x.state",
        gpu=gpu,
        global_flags=flags or GLOBALS,
    )


def ckpt(runsc: RuntimeBinary, gpu: bool = False, **options: object):  # type: ignore[no-untyped-def]
    opts = CheckpointOptions(container_id="g1", image_path=IMG, **options)  # type: ignore[arg-type]
    return RunscAdapter(runsc).checkpoint_invocation(opts, info(gpu), IMG)


def test_sandbox_globals_are_the_flags_before_boot_minus_root() -> None:
    cmdline = [
        "runsc-sandbox",
        "--network=none",
        "--ignore-cgroups=true",
        "--root=/tmp/r",
        "boot",
        "--bundle=/b",
        "--",
        "g1",
    ]
    assert sandbox_global_flags(cmdline) == GLOBALS
    assert sandbox_global_flags(["sleep", "1"]) == []


@pytest.mark.parametrize("runsc", [RUNSC_2024, RUNSC_2026], ids=["2024", "2026"])
def test_plain_checkpoint_carries_the_sandbox_globals(runsc: RuntimeBinary) -> None:
    inv = ckpt(runsc, leave_running=True)
    assert inv.argv == [
        "/usr/bin/runsc",
        "--root=/run/gv",
        *GLOBALS,
        "checkpoint",
        "--image-path",
        "/ckpt/g",
        "--leave-running",
        "--",
        "g1",
    ]
    assert inv.env == {} and inv.criu_config is None
    assert inv.global_flags == GLOBALS


def test_runsc_own_options() -> None:
    inv = ckpt(RUNSC_2024, compression="none", direct=True, exclude_committed_zero_pages=True)
    assert inv.argv[inv.argv.index("checkpoint") + 1 :] == [
        "--image-path",
        "/ckpt/g",
        "--compression=none",
        "--direct",
        "--exclude-committed-zero-pages",
        "--",
        "g1",
    ]


@pytest.mark.parametrize(
    ("runsc", "expected"),
    [(RUNSC_2024, "--net-disconnect-ok=false"), (RUNSC_2026, "--allow-connected-on-save=true")],
    ids=["2024", "2026"],
)
def test_tcp_established_becomes_a_global_flag(runsc: RuntimeBinary, expected: str) -> None:
    inv = ckpt(runsc, tcp_established=True)
    assert inv.argv[: inv.argv.index("checkpoint")] == [
        "/usr/bin/runsc",
        "--root=/run/gv",
        *GLOBALS,
        expected,
    ]
    assert expected in inv.global_flags  # carried into crgpu.json, so restore gets it too


def test_tcp_established_refused_when_runsc_has_neither_flag() -> None:
    bare = RuntimeBinary(
        "runsc", Path("/r"), "0.0~2023", RUNSC_2024.checkpoint_flags, RUNSC_2024.restore_flags
    )
    with pytest.raises(PreconditionError, match=r"--tcp-established cannot reach runsc 0\.0~2023"):
        ckpt(bare, tcp_established=True)


@pytest.mark.parametrize("field", ["skip_in_flight", "link_remap", "tcp_close", "file_locks"])
def test_criu_options_handled_in_the_sandbox_are_reported_not_passed(field: str) -> None:
    inv = ckpt(RUNSC_2024, **{field: True})
    flag = "--" + field.replace("_", "-")
    assert not any(arg.startswith(flag) for arg in inv.argv)
    assert any(note.startswith(flag) for note in inv.notes)


@pytest.mark.parametrize(
    "options", [{"ext_unix_sk": True}, {"shell_job": True}, {"manage_cgroups_mode": "soft"}], ids=str
)
def test_criu_only_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(PreconditionError, match="is a CRIU option"):
        ckpt(RUNSC_2024, **options)


def test_work_path_is_reported_as_ignored_by_runsc() -> None:
    inv = ckpt(RUNSC_2024, work_path=Path("/w"))
    assert "--work-path" not in inv.argv
    assert any("runsc ignores --work-path" in note for note in inv.notes)


def test_gpu_container_on_a_runsc_without_cuda_checkpoint_is_refused_naming_the_version() -> None:
    with pytest.raises(PreconditionError, match=r"runsc 0\.0~20240729\.0 cannot checkpoint GPU state"):
        ckpt(RUNSC_2024, gpu=True, cuda_checkpoint_path="/usr/bin/cuda-checkpoint")


def test_gpu_container_on_2026_runsc_passes_cuda_checkpoint_path() -> None:
    inv = ckpt(RUNSC_2026, gpu=True, cuda_checkpoint_path="/usr/bin/cuda-checkpoint")
    assert inv.argv[inv.argv.index("checkpoint") + 1 :] == [
        "--image-path",
        "/ckpt/g",
        "--cuda-checkpoint-path=/usr/bin/cuda-checkpoint",
        "--",
        "g1",
    ]
    with pytest.raises(PreconditionError, match="needs the path of cuda-checkpoint"):
        ckpt(RUNSC_2026, gpu=True)


def test_cuda_checkpoint_sequential_passes_through_where_runsc_has_it() -> None:
    """gVisor's --cuda-checkpoint-sequential (runsc/cmd/checkpoint.go); before, crgpu had no way to it."""
    inv = ckpt(
        RUNSC_2026, gpu=True, cuda_checkpoint_path="/usr/bin/cuda-checkpoint", cuda_checkpoint_sequential=True
    )
    assert "--cuda-checkpoint-sequential" in inv.argv[inv.argv.index("checkpoint") + 1 : inv.argv.index("--")]
    with pytest.raises(PreconditionError, match="--cuda-checkpoint-sequential"):
        ckpt(RUNSC_2024, cuda_checkpoint_sequential=True)


def test_cuda_checkpoint_path_without_a_gpu_never_reaches_an_old_runsc() -> None:
    with pytest.raises(PreconditionError, match="--cuda-checkpoint-path cannot reach runsc"):
        ckpt(RUNSC_2024, cuda_checkpoint_path="/x")


@pytest.mark.parametrize("runsc", [RUNSC_2024, RUNSC_2026], ids=["2024", "2026"])
def test_restore_uses_the_stored_globals(runsc: RuntimeBinary) -> None:
    opts = RestoreOptions(image_path=IMG, pid_file=Path("/run/g1.pid"), direct=True)
    flags = [*GLOBALS, "--nvproxy=true"]
    inv = RunscAdapter(runsc).restore_invocation(opts, "g1", ROOT, Path("/srv/g"), Path("/w"), flags)
    assert inv.argv == [
        "/usr/bin/runsc",
        "--root=/run/gv",
        *flags,
        "restore",
        "--image-path",
        "/ckpt/g",
        "--bundle",
        "/srv/g",
        "--detach",
        "--pid-file",
        "/run/g1.pid",
        "--direct",
        "--",
        "g1",
    ]
    assert any("--nvproxy" in note for note in inv.notes)


def test_every_flag_passed_is_known_to_the_binary() -> None:
    everything = {
        "leave_running": True,
        "compression": "none",
        "direct": True,
        "exclude_committed_zero_pages": True,
        "skip_in_flight": True,
        "link_remap": True,
        "tcp_close": True,
    }
    for runsc in (RUNSC_2024, RUNSC_2026):
        inv = ckpt(runsc, **everything)
        verb_args = inv.argv[inv.argv.index("checkpoint") + 1 : -2]
        assert inv.argv[-2:] == ["--", "g1"]
        names = {arg.lstrip("-").split("=")[0] for arg in verb_args if arg.startswith("-")}
        assert names <= runsc.checkpoint_flags


def _fake_runsc_with_drivers(tmp_path: Path, drivers: list[str]) -> RuntimeBinary:
    script = tmp_path / "runsc"
    script.write_text("#!/bin/sh\n" + "".join(f"echo {d}\n" for d in drivers))
    script.chmod(0o755)
    base = RUNSC_2026
    return RuntimeBinary(
        "runsc",
        script,
        base.version,
        base.checkpoint_flags,
        base.restore_flags,
        base.global_flags,
        base.help_texts,
    )


def _driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    (tmp_path / "host" / "sys/module/nvidia").mkdir(parents=True)
    (tmp_path / "host" / "sys/module/nvidia/version").write_text(version + "\n")
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(tmp_path / "host"))


def test_gpu_restore_checks_the_host_driver_against_runsc_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _driver(tmp_path, monkeypatch, "580.65.06")
    supported = RunscAdapter(_fake_runsc_with_drivers(tmp_path, ["570.124.06", "580.65.06"]))
    assert supported.check_gpu_restore(force=False) == []
    unsupported = RunscAdapter(_fake_runsc_with_drivers(tmp_path, ["570.124.06"]))
    with pytest.raises(PreconditionError, match=r"host driver 580\.65\.06 is not among the drivers"):
        unsupported.check_gpu_restore(force=False)
    assert "--force" in unsupported.check_gpu_restore(force=True)[0]


def test_gpu_restore_without_a_driver_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PreconditionError, match="no NVIDIA driver"):
        RunscAdapter(_fake_runsc_with_drivers(tmp_path, [])).check_gpu_restore(force=False)


def test_debug_log_path_is_reported_when_the_sandbox_had_one() -> None:
    adapter = RunscAdapter(RUNSC_2024)
    assert adapter.log_paths("checkpoint", IMG, ["--debug-log=/var/log/runsc/%COMMAND%.log"]) == [
        Path("/var/log/runsc/*.log")
    ]
    assert adapter.log_paths("checkpoint", IMG, GLOBALS) == []


def test_console_socket_debug_and_parent_path_on_runsc() -> None:
    opts = RestoreOptions(image_path=IMG, console_socket=Path("/run/c.sock"), runtime_debug=True)
    inv = RunscAdapter(RUNSC_2024).restore_invocation(opts, "g1", ROOT, Path("/srv/g"), Path("/w"), GLOBALS)
    assert "--console-socket=/run/c.sock" in inv.argv and "--debug=true" in inv.argv
    assert inv.argv.index("--debug=true") < inv.argv.index("restore")
    with pytest.raises(PreconditionError, match="runsc has no pre-dumps"):
        ckpt(RUNSC_2026, parent_path="../p")


def test_lazy_checkpoint_and_page_server_are_refused_on_runsc() -> None:
    with pytest.raises(PreconditionError, match="runsc has no page server"):
        ckpt(RUNSC_2026, lazy_pages=True, page_server="127.0.0.1:9")
    opts = RestoreOptions(image_path=IMG, lazy_pages=True, page_server="127.0.0.1:9")
    with pytest.raises(PreconditionError, match="runsc has no page server"):
        RunscAdapter(RUNSC_2026).restore_invocation(opts, "g1", ROOT, Path("/srv/g"), Path("/w"), GLOBALS)


def test_the_sandboxs_nvproxy_driver_flags_are_honoured_by_the_guard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _driver(tmp_path, monkeypatch, "580.65.06")
    runsc = RunscAdapter(_fake_runsc_with_drivers(tmp_path, ["570.124.06"]))
    # pinned to a supported ABI: the host's own version is not what runsc uses
    notes = runsc.check_gpu_restore(False, ("--nvproxy-driver-version=570.124.06",))
    assert "pins the driver ABI 570.124.06" in notes[0]
    with pytest.raises(PreconditionError, match=r"--nvproxy-driver-version=575\.0\.0 is not among"):
        runsc.check_gpu_restore(False, ("--nvproxy-driver-version=575.0.0",))
    notes = runsc.check_gpu_restore(False, ("--nvproxy-allow-unsupported-driver=true",))
    assert "allows unsupported drivers" in notes[0]


def test_cuda_checkpoint_path_must_exist_in_the_containers_rootfs(tmp_path: Path) -> None:
    from dataclasses import replace

    rootfs = tmp_path / "rootfs"
    (rootfs / "usr/bin").mkdir(parents=True)
    opts = CheckpointOptions(
        container_id="g1", image_path=IMG, cuda_checkpoint_path="/usr/bin/cuda-checkpoint"
    )
    gpu_container = replace(info(gpu=True), rootfs=rootfs)
    with pytest.raises(PreconditionError, match="is not in the root filesystem of container 'g1'"):
        RunscAdapter(RUNSC_2026).checkpoint_invocation(opts, gpu_container, IMG)
    (rootfs / "usr/bin/cuda-checkpoint").write_text("")
    inv = RunscAdapter(RUNSC_2026).checkpoint_invocation(opts, gpu_container, IMG)
    assert "--cuda-checkpoint-path=/usr/bin/cuda-checkpoint" in inv.argv
