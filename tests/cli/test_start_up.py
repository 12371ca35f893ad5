"""Start-up imports, flat memory under a chatty runtime, the pre-dump and lazy-pages mappings."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from crgpu.host.errors import PreconditionError
from crgpu.options.models import CheckpointOptions, RestoreOptions
from crgpu.runtimes.runc import RuncAdapter
from tests.fakes import install_fake_runc
from tests.runtimes.test_runc import INFO, RUNC_11, RUNC_13, WORK

# The runtimes package's adapters, detection and engines, and the options' pydantic models (its
# roots and the option table are light: completion and help read them).
HEAVY = ("pydantic", "rich", "crgpu.core.plan", "crgpu.doctor", "crgpu.options.models", "crgpu.options.runsc_flags",
         *(f"crgpu.runtimes.{name}" for name in ("base", "capabilities", "detect", "engines", "runc", "runsc", "state")))  # fmt: skip
NO_PLUGINS = "pydantic.plugin._loader"  # crgpu's stand-in for pydantic's loader: no pydantic code


def _heavy(loaded: set[str], also: tuple[str, ...] = ()) -> set[str]:
    return {m for m in loaded if m.startswith((*HEAVY, *also))} - {NO_PLUGINS}


# `python -m crgpu ARGS` that writes the modules it ended with to $MODULES_OUT. (-X importtime
# misses modules loaded through importlib.import_module.)
_PROBE = """
import atexit, os, runpy, sys
out = os.environ.pop("MODULES_OUT")
atexit.register(lambda: open(out, "w").write("\\n".join(sys.modules)))
runpy.run_module("crgpu", run_name="__main__", alter_sys=True)
"""


def _imported(*args: str) -> set[str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "modules"
        subprocess.run(
            [sys.executable, "-c", _PROBE, *args],
            env={**os.environ, "MODULES_OUT": str(out)}, capture_output=True, timeout=60,
        )  # fmt: skip
        return set(out.read_text().splitlines())


@pytest.mark.parametrize("args", [["--help"], ["checkpoint", "--help"], ["restore", "--help"]])
def test_start_up_imports_nothing_heavy(args: list[str]) -> None:
    """Help through Typer (`python -m crgpu` is not the pre-rendered help's program name)."""
    loaded = _imported(*args)
    assert "typer" in loaded  # the probe sees imports at all
    assert not _heavy(loaded)
    others = {
        f"crgpu.cli.{name}" for name in ("checkpoint", "restore", "doctor", "export", "inspect", "cuda")
    }
    # the command asked for only; the top-level help lists them all
    assert loaded & others == ({f"crgpu.cli.{name}" for name in args[:-1]} or others)


def test_version_loads_no_cli_stack() -> None:
    loaded = _imported("--version")
    assert "crgpu" in loaded  # the probe sees imports at all
    assert not _heavy(loaded, ("typer", "crgpu.cli"))


def test_completion_request_loads_neither_typer_nor_pydantic() -> None:
    loaded = _imported("__complete", "ids")
    assert "crgpu.runtimes.roots" in loaded
    assert not _heavy(loaded, ("typer",))


def test_parsing_builds_no_pydantic_adapter_per_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Typer 0.29 builds a pydantic TypeAdapter for every option while parsing (0.2 s a call)."""
    install_fake_runc(tmp_path, monkeypatch)
    loaded = _imported("checkpoint", "--dry-run", "--json", "-i", str(tmp_path / "img"), "c1")
    assert "crgpu.core.plan" in loaded  # it really planned
    assert "typer._adapters" not in loaded


def test_a_checkpoint_reads_no_installed_package_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pydantic's plugin loader imports importlib.metadata (zipfile, email) before it reads
    PYDANTIC_DISABLE_PLUGINS: 40-60 ms of every call here."""
    install_fake_runc(tmp_path, monkeypatch)
    loaded = _imported("checkpoint", "--json", "-i", str(tmp_path / "img"), "c1")
    assert "crgpu.image" in loaded  # it really wrote a manifest
    assert "importlib.metadata" not in loaded


def _plugin_on_path(site: Path, marker: Path) -> dict[str, str]:
    """A distribution that registers a pydantic plugin which, once loaded, writes `marker`."""
    dist = site / "evil_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evil-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pydantic]\nevil = evil_plugin:plugin\n")
    (site / "evil_plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\nplugin = object()\n")
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}  # crgpu set it here
    return {**env, "PYTHONPATH": str(site)}


def test_no_installed_pydantic_plugin_runs_in_crgpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_runc(tmp_path, monkeypatch)
    marker = tmp_path / "plugin-ran"
    env = _plugin_on_path(tmp_path / "site", marker)
    model = "from pydantic import BaseModel\nclass M(BaseModel):\n    x: int\n"
    subprocess.run([sys.executable, "-c", model], env=env, capture_output=True, timeout=60)
    assert marker.exists()  # pydantic on its own loads it
    marker.unlink()
    done = subprocess.run(
        [sys.executable, "-m", "crgpu", "checkpoint", "--json", "-i", str(tmp_path / "img"), "c1"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not marker.exists()


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


# /proc/PID/stat of a running `sleep` as the kernel writes it (fields 3 and 22: state, start time).
_STAT = "4242 (sleep (x) 1) S 4230 4242 4242 0 -1 4194560 109 0 0 0 0 0 0 0 20 0 1 0 {start} 2322432 161 ..."


def _runc_state_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, start: int = 1810499, state: str = "S", **cgroup: str
) -> list[str]:
    """Plan a checkpoint of c1, whose state.json (written as runc 1.1 writes it) names init 4242
    started at tick 1810499 and the cgroup files in `cgroup` (path -> content) under a fake host
    root; returns the `runc state` calls crgpu made."""
    import json

    from crgpu.core.plan_checkpoint import plan_checkpoint
    from crgpu.options.models import CheckpointOptions

    tmp_path.mkdir(parents=True, exist_ok=True)
    calls = install_fake_runc(tmp_path, monkeypatch)
    host = tmp_path / "host"
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(host))
    (host / "proc" / "4242").mkdir(parents=True)
    (host / "proc" / "4242" / "stat").write_text(_STAT.replace("S", state, 1).format(start=start))
    for path, text in cgroup.items():
        (host / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (host / path.lstrip("/")).write_text(text)
    paths = {("freezer" if p.endswith("freezer.state") else ""): p.rsplit("/", 1)[0] for p in cgroup}
    state_json = tmp_path / "root" / "c1" / "state.json"
    state_json.write_text(
        json.dumps(
            {
                "init_process_pid": 4242,
                "init_process_start": 1810499,
                "cgroup_paths": paths,
                "config": {"labels": ["bundle=/b"]},
            }
        )
    )
    plan_checkpoint(CheckpointOptions(container_id="c1", image_path=tmp_path / "img"))
    return (
        [line for line in calls.read_text().splitlines() if " state " in f" {line} "]
        if calls.exists()
        else []
    )


V1 = "/sys/fs/cgroup/freezer/c1/freezer.state"
V2 = "/sys/fs/cgroup/c1/cgroup.freeze"


def test_a_running_runc_container_is_read_from_its_state_not_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`runc state` is 10-15 ms of Go start-up; it reads the same files."""
    assert _runc_state_said(tmp_path / "v1", monkeypatch, **{V1: "THAWED\n"}) == []
    assert _runc_state_said(tmp_path / "v2", monkeypatch, **{V2: "0\n"}) == []


@pytest.mark.parametrize(
    ("why", "kwargs"),
    [
        ("paused (v1)", {V1: "FROZEN\n"}),
        ("paused (v2)", {V2: "1\n"}),
        ("another process has the PID now", {"start": 99, V1: "THAWED\n"}),
        ("the init process is a zombie", {"state": "Z", V1: "THAWED\n"}),
        ("no freezer to read", {}),
        ("a cgroup path outside /sys/fs/cgroup", {"/etc/c1/cgroup.freeze": "0\n"}),
    ],
)
def test_runc_is_asked_where_its_state_leaves_the_status_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str, kwargs: dict[str, Any]
) -> None:
    assert len(_runc_state_said(tmp_path, monkeypatch, **kwargs)) == 1, why


def test_a_created_runc_container_is_asked_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "root" / "c1").mkdir(parents=True)
    os.mkfifo(tmp_path / "root" / "c1" / "exec.fifo")  # runc's mark of `created`
    assert len(_runc_state_said(tmp_path, monkeypatch, **{V1: "THAWED\n"})) == 1


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
    from crgpu.nvidia import gpu
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
