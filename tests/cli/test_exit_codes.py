"""Every documented exit code, produced by at least one case; and no traceback for any input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crgpu.host.errors import EXIT_CODE_MEANINGS, ExitCode
from crgpu.host.locks import container_lock
from tests.fakes import install_fake_runc
from tests.helpers import crgpu


def test_readme_and_help_document_every_code() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    help_text = crgpu("--help").stdout
    for code in EXIT_CODE_MEANINGS:
        assert f"| {int(code)} |" in readme
        assert f"{int(code):>3}  " in help_text


def _checkpoint(tmp_path: Path, *extra: str) -> int:
    return crgpu("checkpoint", "-i", str(tmp_path / "img"), *extra, "c1").exit_code


def test_code_0_and_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_runc(tmp_path, monkeypatch, on_checkpoint="exit 0")
    assert _checkpoint(tmp_path) == ExitCode.OK
    install_fake_runc(tmp_path, monkeypatch, on_checkpoint="echo 'criu failed' >&2; exit 1")
    assert crgpu("checkpoint", "-i", str(tmp_path / "img2"), "c1").exit_code == ExitCode.RUNTIME_FAILED
    assert not (tmp_path / "img2").exists()  # the partial image went; nothing half-written stays


def test_code_2_3_4_5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    assert crgpu("checkpoint", "-i", str(tmp_path / "i"), "bad/id").exit_code == ExitCode.USAGE
    assert crgpu("checkpoint", "--bogus-flag", "c1").exit_code == ExitCode.USAGE
    assert crgpu("checkpoint", "-i", str(tmp_path / "i"), "absent").exit_code == ExitCode.NOT_FOUND
    assert _checkpoint(tmp_path, "--direct") == ExitCode.PRECONDITION
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "x").write_text("x")
    assert _checkpoint(tmp_path) == ExitCode.IMAGE_PATH


def test_code_6_busy_then_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    root = tmp_path / "root"
    with container_lock("runc", root, "c1"):
        result = crgpu("checkpoint", "-i", str(tmp_path / "img"), "c1")
        assert result.exit_code == ExitCode.BUSY
        assert f"crgpu (pid {os.getpid()})" in result.stderr
        assert not (tmp_path / "img").exists()
        started = time.monotonic()
        assert (
            crgpu("checkpoint", "--wait", "0.3", "-i", str(tmp_path / "img"), "c1").exit_code == ExitCode.BUSY
        )
        assert time.monotonic() - started >= 0.3
    assert _checkpoint(tmp_path) == ExitCode.OK


def test_code_4_not_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(tmp_path / "host"))  # no capabilities either
    result = crgpu("checkpoint", "-i", str(tmp_path / "img"), "c1")
    assert result.exit_code == ExitCode.PRECONDITION
    assert "needs root" in result.stderr


def test_code_130_interrupt_is_forwarded_and_cleaned_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "runtime-got-signal"
    install_fake_runc(
        tmp_path,
        monkeypatch,
        on_checkpoint=f"trap 'echo INT > {marker}; exit 130' INT; echo dumping; while true; do sleep 0.05; done",
    )
    image = tmp_path / "img"
    child = subprocess.Popen(
        [sys.executable, "-m", "crgpu", "checkpoint", "-i", str(image), "c1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 20
    while (
        not (image / "crgpu-checkpoint-output.log").exists()
        or "dumping" not in (image / "crgpu-checkpoint-output.log").read_text()
    ):
        assert time.monotonic() < deadline, child.communicate()
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=20)
    assert child.returncode == ExitCode.INTERRUPTED, err
    assert marker.read_text().strip() == "INT"  # forwarded to the runtime
    assert "interrupted by signal 2" in err and "Traceback" not in err
    assert not image.exists()


IDS = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
PATHS = st.one_of(
    st.just(""), st.text(max_size=30), st.sampled_from(["/", "/proc", "/dev/null", "rel/x", "~/x"])
)
FLAGS = st.lists(
    st.sampled_from(
        [
            "--leave-running",
            "--tcp-established",
            "--tcp-close",
            "--link-remap",
            "--skip-in-flight",
            "--file-locks",
            "--ext-unix-sk",
            "--shell-job",
            "--direct",
            "--exclude-committed-zero-pages",
            "--dry-run",
            "--json",
            "--keep-failed",
        ]
    ),
    max_size=6,
)
VALUED = st.lists(
    st.tuples(
        st.sampled_from(
            ["--manage-cgroups-mode", "--runtime", "--compression", "--wait", "--root", "--work-path"]
        ),
        st.text(max_size=12),
    ),
    max_size=3,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(container_id=IDS, image=PATHS, flags=FLAGS, valued=VALUED)
def test_random_input_never_gives_a_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    container_id: str,
    image: str,
    flags: list[str],
    valued: list[tuple[str, str]],
) -> None:
    monkeypatch.setenv("CRGPU_RUNC_ROOTS", str(tmp_path / "no-runc"))
    monkeypatch.setenv("CRGPU_RUNSC_ROOTS", str(tmp_path / "no-runsc"))
    args = ["checkpoint", *flags, *(part for pair in valued for part in pair)]
    if image:
        args += ["--image-path", image]
    args += ["--", container_id] if container_id else []
    result = crgpu(*args)
    assert result.exit_code in {int(code) for code in ExitCode}, result.output
    assert "Traceback" not in result.output
    restore = crgpu("restore", "--dry-run", "--image-path", image or "/nonexistent", *flags[:2])
    assert restore.exit_code in {int(code) for code in ExitCode}
    assert "Traceback" not in restore.output


def test_a_runtime_left_paused_after_a_failure_is_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = tmp_path / "status"
    status.write_text("running")
    calls = install_fake_runc(
        tmp_path,
        monkeypatch,
        on_checkpoint=f"echo paused > {status}; echo 'criu failed' >&2; exit 1",
        state=f'echo "{{\\"id\\": \\"c1\\", \\"status\\": \\"$(cat {status})\\"}}"',
        on_resume=f"echo running > {status}",
    )
    result = crgpu("checkpoint", "--json", "-i", str(tmp_path / "img"), "c1")
    assert result.exit_code == 1
    assert " resume -- c1" in calls.read_text()
    assert '"container_status": "running"' in result.stdout


def test_restore_with_a_bundle_without_config_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crgpu.image.manifest import ContainerRecord, Manifest, RuntimeRecord, write_manifest

    install_fake_runc(tmp_path, monkeypatch)
    (tmp_path / "bundle").mkdir()
    (tmp_path / "img").mkdir()
    manifest = Manifest(
        runtime=RuntimeRecord(name="runc", version="1.1.15", path="/usr/sbin/runc", root=str(tmp_path / "r")),
        container=ContainerRecord(id="c9", bundle=str(tmp_path / "bundle")),
    )
    write_manifest(tmp_path / "img", manifest)
    result = crgpu("restore", "-i", str(tmp_path / "img"))
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "has no config.json" in result.stderr


def test_a_hung_runtime_is_stopped_after_its_timeout(tmp_path: Path) -> None:
    from crgpu.host.process import run_streaming

    started = time.monotonic()
    run = run_streaming(["sleep", "30"], lambda _line: None, tmp_path / "out.log", timeout_s=0.3)
    assert run.exit_code != 0 and time.monotonic() - started < 5


def test_an_interrupted_restore_says_its_image_is_unchanged_and_how_to_try_again() -> None:
    """Before: "the partial image is kept" of a complete image, and `runc state` of a container
    that is gone."""
    from pathlib import Path

    from crgpu.core.result import OperationResult, raise_if_interrupted
    from crgpu.host.errors import Interrupted

    class Adapter:
        name = "runc"

    result = OperationResult(
        verb="restore", ok=False, runtime="runc", runtime_version="1.3", container_id="web",
        image_path="/ckpt/web", work_path="/w", argv=[], env={}, criu_config=None, notes=[],
        interrupted_by=2, container_status=None,
    )  # fmt: skip
    try:
        raise_if_interrupted(result, Adapter(), Path("/run/runc"))  # type: ignore[arg-type]
    except Interrupted as exc:
        assert "the image is unchanged" in exc.message and "partial" not in exc.message
        assert exc.hint == "restore it again: `crgpu restore -i /ckpt/web web`"
    else:
        raise AssertionError("not raised")
