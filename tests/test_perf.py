"""Start-up imports, flat memory under a chatty runtime, the pre-dump and lazy-pages mappings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crgpu.errors import PreconditionError
from crgpu.options import CheckpointOptions, RestoreOptions
from crgpu.runtimes.runc import RuncAdapter
from tests.fakes import install_fake_runc
from tests.runtimes.test_runc import INFO, RUNC_11, RUNC_13, WORK

HEAVY = ("pydantic", "rich", "crgpu.plan", "crgpu.doctor", "crgpu.runtimes", "crgpu.options")


def _imported(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "crgpu", *args], capture_output=True, text=True, timeout=60
    )
    return {m.group(1) for m in re.finditer(r"\|\s+([\w.]+)\s*$", done.stderr, re.M)}


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["checkpoint", "--help"], ["restore", "--help"]])
def test_start_up_imports_nothing_heavy(args: list[str]) -> None:
    loaded = _imported(*args)
    assert "typer" in loaded  # the probe sees imports at all
    assert not {m for m in loaded if m.startswith(HEAVY)}


def test_completion_request_loads_neither_typer_nor_pydantic() -> None:
    loaded = _imported("__complete", "ids")
    assert "crgpu.roots" in loaded
    assert not {m for m in loaded if m.startswith(("typer", *HEAVY))}


def test_parsing_builds_no_pydantic_adapter_per_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Typer 0.29 builds a pydantic TypeAdapter for every option while parsing (0.2 s a call)."""
    install_fake_runc(tmp_path, monkeypatch)
    loaded = _imported("checkpoint", "--dry-run", "--json", "-i", str(tmp_path / "img"), "c1")
    assert "crgpu.plan" in loaded  # it really planned
    assert "typer._adapters" not in loaded


def test_a_checkpoint_asks_the_runtime_for_the_state_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = install_fake_runc(tmp_path, monkeypatch)
    result = subprocess.run(
        [sys.executable, "-m", "crgpu", "checkpoint", "--json", "-i", str(tmp_path / "img"), "c1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len([line for line in calls.read_text().splitlines() if " state " in f" {line} "]) == 1


def test_every_result_says_where_its_time_went(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    install_fake_runc(tmp_path, monkeypatch, on_checkpoint="sleep 0.3")
    done = subprocess.run(
        [sys.executable, "-m", "crgpu", "checkpoint", "--json", "-i", str(tmp_path / "img"), "c1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    timings = json.loads(done.stdout)["timings"]
    assert set(timings) == {"startup_s", "plan_s", "runtime_s", "post_s"}
    assert 0.3 <= timings["runtime_s"] < 2  # the runtime's own 0.3 s, counted as the runtime's
    assert 0 < timings["startup_s"] < 10 and timings["plan_s"] >= 0 and timings["post_s"] >= 0
    plain = subprocess.run(
        [sys.executable, "-m", "crgpu", "checkpoint", "-i", str(tmp_path / "img2"), "c1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "timings: start-up" in plain.stderr and "runtime 3" in plain.stderr
    dry = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "crgpu",
                "checkpoint",
                "--dry-run",
                "--json",
                "-i",
                str(tmp_path / "i3"),
                "c1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )
    assert set(dry["timings"]) == {"startup_s", "plan_s"}


def _max_rss_kib(argv: list[str]) -> int:
    child = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy()
    )
    _, status, usage = os.wait4(child.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss


def test_memory_stays_flat_under_100_mb_of_runtime_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chatty = "head -c {n} /dev/zero | tr '\\\\0' 'x' | fold -w 100"
    install_fake_runc(tmp_path, monkeypatch, on_checkpoint=chatty.format(n=1_000_000))
    small = _max_rss_kib([sys.executable, "-m", "crgpu", "checkpoint", "-i", str(tmp_path / "a"), "c1"])
    install_fake_runc(tmp_path, monkeypatch, on_checkpoint=chatty.format(n=100_000_000))
    big = _max_rss_kib([sys.executable, "-m", "crgpu", "checkpoint", "-i", str(tmp_path / "b"), "c1"])
    assert (tmp_path / "b" / "crgpu-checkpoint-output.log").stat().st_size >= 100_000_000
    assert big - small < 16 * 1024, (small, big)  # KiB: 100 MB more output, under 16 MiB more memory


def test_pre_dump_mapping() -> None:
    opts = CheckpointOptions(container_id="c1", image_path=Path("/ckpt/img"), pre_dump=2, leave_running=True)
    for runc in (RUNC_11, RUNC_13):
        inv = RuncAdapter(runc).checkpoint_invocation(opts, INFO, WORK)
        base = ["/usr/sbin/runc", "--root", "/run/runc", "checkpoint"]
        assert inv.before == [
            [
                *base,
                "--pre-dump",
                "--image-path",
                "/ckpt/img/predump-1",
                "--work-path",
                "/ckpt/work/predump-1",
                "--",
                "c1",
            ],
            [
                *base,
                "--pre-dump",
                "--image-path",
                "/ckpt/img/predump-2",
                "--work-path",
                "/ckpt/work/predump-2",
                "--parent-path",
                "../predump-1",
                "--",
                "c1",
            ],
        ]
        assert inv.argv[-5:] == ["--leave-running", "--parent-path", "predump-2", "--", "c1"]


def test_pre_dump_and_lazy_pages_on_runsc_are_handled() -> None:
    from tests.runtimes.test_runsc import RUNSC_2024, RUNSC_2026, ckpt

    with pytest.raises(PreconditionError, match="runsc has no pre-dumps"):
        ckpt(RUNSC_2026, pre_dump=1)
    from crgpu.runtimes.runsc import RunscAdapter

    opts = RestoreOptions(image_path=Path("/i"), lazy_pages=True)
    inv = RunscAdapter(RUNSC_2026).restore_invocation(opts, "g1", Path("/r"), Path("/b"), Path("/w"), [])
    assert "--background" in inv.argv
    with pytest.raises(PreconditionError, match="has no --background"):
        RunscAdapter(RUNSC_2024).restore_invocation(opts, "g1", Path("/r"), Path("/b"), Path("/w"), [])


def test_a_host_without_the_nvidia_module_asks_neither_nvml_nor_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every checkpoint records the driver version: without the kernel module there is none, and
    looking for it through NVML and nvidia-smi cost 14 ms a call."""
    from crgpu import gpu
    from tests.fakes import write_fake_nvidia_smi

    (tmp_path / "host").mkdir()
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(tmp_path / "host"))
    calls = tmp_path / "smi-calls"
    write_fake_nvidia_smi(tmp_path / "bin" / "nvidia-smi", "580.65.06", [], log=calls)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    asked = []
    monkeypatch.setattr(gpu, "nvml_query", lambda query: asked.append(query))
    assert gpu.driver_version() is None
    assert not asked and not calls.exists()
