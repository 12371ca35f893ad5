"""Start-up imports, flat memory under a chatty runtime, pre-dump mapping and refusal, lazy pages."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crgpu.errors import PreconditionError
from crgpu.options import CheckpointOptions, RestoreOptions
from crgpu.runtimes.runc import RuncAdapter
from tests import testbed
from tests.fakes import install_fake_runc
from tests.helpers import crgpu, crgpu_json
from tests.test_runc_mapping import INFO, RUNC_11, RUNC_13, WORK

HEAVY = ("pydantic", "rich", "crgpu.plan", "crgpu.doctor", "crgpu.runtimes", "crgpu.options")


def _imported(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "crgpu", *args], capture_output=True, text=True, timeout=60
    )
    return {m.group(1) for m in re.finditer(r"\|\s+([\w.]+)\s*$", done.stderr, re.M)}


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_start_up_imports_nothing_heavy(args: list[str]) -> None:
    loaded = _imported(*args)
    assert "typer" in loaded  # the probe sees imports at all
    assert not {m for m in loaded if m.startswith(HEAVY)}


def test_completion_request_loads_neither_typer_nor_pydantic() -> None:
    loaded = _imported("__complete", "ids")
    assert "crgpu.roots" in loaded
    assert not {m for m in loaded if m.startswith(("typer", *HEAVY))}


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
    from tests.test_runsc_mapping import RUNSC_2024, RUNSC_2026, ckpt

    with pytest.raises(PreconditionError, match="runsc has no pre-dumps"):
        ckpt(RUNSC_2026, pre_dump=1)
    from crgpu.runtimes.runsc import RunscAdapter

    opts = RestoreOptions(image_path=Path("/i"), lazy_pages=True)
    inv = RunscAdapter(RUNSC_2026).restore_invocation(opts, "g1", Path("/r"), Path("/b"), Path("/w"), [])
    assert "--background" in inv.argv
    with pytest.raises(PreconditionError, match="has no --background"):
        RunscAdapter(RUNSC_2024).restore_invocation(opts, "g1", Path("/r"), Path("/b"), Path("/w"), [])


def test_pre_dump_is_refused_here_with_the_reason(runc_container, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    criu = shutil.which("criu") or ""
    out = subprocess.run(
        [criu, "check", "--feature", "mem_dirty_track"], capture_output=True, text=True
    ).stderr
    if "OFF" not in out:
        pytest.skip("this kernel tracks dirty memory: pre-dumps would run")
    container = runc_container()
    result = crgpu(
        "checkpoint",
        "--pre-dump",
        "2",
        "--root",
        str(container.root),
        "-i",
        str(short_tmp / "i"),
        container.id,
    )
    assert result.exit_code == 4
    assert "soft-dirty memory tracking" in result.stderr and "Dirty tracking is OFF" in result.stderr
    assert not (short_tmp / "i").exists()
    doctor = {c["id"]: c for c in crgpu_json("doctor")[1]["checks"]}
    assert doctor["criu.dirty_tracking"]["status"] == "warn"


def test_lazy_restore_runs_first_and_every_page_arrives(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    testbed.require_root()
    runc = testbed.require_binary(shutil.which("runc"), "runc")
    bundle = testbed.make_hog_bundle(short_tmp / "hog", 64)
    container = testbed.RuncContainer(runc, short_tmp / "root", bundle, f"crgpu-lazy-{os.getpid()}").start()
    try:
        testbed.wait_counter_above(bundle, 1)
        image = short_tmp / "img"
        code, doc = crgpu_json("checkpoint", "--root", str(container.root), "-i", str(image), container.id)
        assert code == 0, doc
        code, doc = crgpu_json("restore", "--lazy-pages", "-i", str(image))
        assert code == 0, doc
        assert "--lazy-pages" in doc["argv"] and doc["helper_argv"][1] == "lazy-pages"
        assert 0 < doc["stats"]["time_to_running"] <= doc["stats"]["lazy_pages_complete"]
        assert container.status() == "running"
        # The hog reads all 64 MiB back: every lazily served page arrived intact.
        assert testbed.verify_hog_memory(bundle) == f"ok {64 << 20}"
        assert (
            subprocess.run(
                ["pgrep", "-f", f"lazy-pages --images-dir {image}"], capture_output=True
            ).returncode
            == 1
        )
    finally:
        container.delete()
