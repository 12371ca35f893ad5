"""CUDA without the plugin: the driver-API orchestration against a fake driver, fake /proc and a fake
runc; a failure injected at each phase must leave every process unlocked and running."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from crgpu.host.errors import PreconditionError
from crgpu.nvidia import cuda, gpu
from crgpu.nvidia.bindings_line import installed_bindings
from crgpu.nvidia.cuda_api import CudaError
from crgpu.nvidia.cuda_flow import select_mode
from crgpu.nvidia.cuda_processes import cuda_processes
from tests.fake_cuda import FAKE_GPU, FakeDriver, fake_gpu_use
from tests.fakes import RUNNING, write_fake_nvidia_smi, write_fake_runc
from tests.helpers import crgpu, without_a_gpu

NS = "pid:[4026532001]"
H100 = "NVIDIA H100 80GB HBM3"
SECOND_GPU = "GPU-00000000-1111-2222-3333-555555555555"
CUDA_PIDS = (101, 102)
GIB = 1 << 30
# The node's driver is one the installed cuda-bindings are documented for: 13.x on 580.65.06+,
# 12.x on the 570 line (CI runs these tests under both: scripts/cuda12-bindings.sh).
BINDINGS = installed_bindings() or "13"
NODE_DRIVER = "580.65.06" if BINDINGS.startswith("13") else "570.124.06"
LIBCUDA_MAP = (
    "7f5a1c000000-7f5a1c400000 r-xp 00000000 fd:01 2364712                    "
    "/usr/lib/x86_64-linux-gnu/libcuda.so.570.124.06\n"
)


@without_a_gpu
def test_no_environment_variable_chooses_the_cuda_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """crgpu runs as root: CRGPU_CUDA_DRIVER=python:MODULE:ATTR once made it import MODULE."""
    monkeypatch.setenv("CRGPU_CUDA_DRIVER", "python:tests.fake_cuda:FakeDriver")
    with pytest.raises(cuda.CudaError, match="cannot reach the CUDA driver"):
        cuda.load_driver()  # the real bindings, which find no driver here: not the named module


class Node:
    """A GPU node in miniature: driver files, a /proc with one container, a fake runc and driver."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, driver: str = NODE_DRIVER) -> None:
        self.tmp = tmp
        self.host = tmp / "host"
        self.state = tmp / "cuda.json"
        self.root = tmp / "root"
        monkeypatch.setenv("CRGPU_HOST_ROOT", str(self.host))
        monkeypatch.setattr(cuda, "DRIVER_FACTORY", FakeDriver)
        monkeypatch.setattr(gpu, "process_gpu_use", fake_gpu_use)
        monkeypatch.setenv("CRGPU_FAKE_CUDA", str(self.state))
        monkeypatch.setenv("CRGPU_RUNC_ROOTS", str(self.root))
        monkeypatch.setenv("CRGPU_RUNSC_ROOTS", str(tmp / "none"))
        (self.host / "sys/module/nvidia").mkdir(parents=True)
        (self.host / "sys/module/nvidia/version").write_text(driver + "\n")
        write_fake_nvidia_smi(tmp / "bin" / "nvidia-smi", driver, [(H100, FAKE_GPU), (H100, SECOND_GPU)])
        monkeypatch.setenv("PATH", f"{tmp / 'bin'}:{os.environ['PATH']}")
        self.process(100, NS, ns_pid=1, cuda=False, comm="init")
        self.process(101, NS, ns_pid=7, cuda=True, comm="train")
        self.process(102, NS, ns_pid=8, cuda=True, comm="serve", libcuda=True)
        self.process(103, NS, ns_pid=9, cuda=False, comm="sh")
        self.process(200, "pid:[4026531836]", ns_pid=200, cuda=True, comm="other-container")
        self.set_states("running")
        self.runc(checkpoint="exit 0")
        self.container()
        bundle = tmp / "bundle"
        bundle.mkdir()
        (bundle / "config.json").write_text("{}")

    def process(self, pid: int, ns: str, ns_pid: int, cuda: bool, comm: str, libcuda: bool = False) -> None:
        proc = self.host / "proc" / str(pid)
        (proc / "ns").mkdir(parents=True)
        (proc / "ns" / "pid").symlink_to(ns)
        (proc / "fd").mkdir()
        (proc / "fd" / "0").symlink_to("/dev/null")
        if cuda and not libcuda:
            (proc / "fd" / "5").symlink_to("/dev/nvidia0")
        # /proc/PID/maps as the kernel writes it: address perms offset dev inode, then the path
        (proc / "maps").write_text(LIBCUDA_MAP if libcuda else "")
        (proc / "status").write_text(f"Name:\t{comm}\nNSpid:\t{pid}\t{ns_pid}\n")
        (proc / "comm").write_text(comm + "\n")

    def set_states(self, state: str, fail: dict[str, dict[str, int]] | None = None) -> None:
        self.state.write_text(json.dumps({"procs": {str(p): state for p in CUDA_PIDS}, "fail": fail or {}}))

    def data(self) -> dict[str, Any]:
        return json.loads(self.state.read_text())  # type: ignore[no-any-return]

    def container(self) -> None:
        (self.root / "c1").mkdir(parents=True, exist_ok=True)
        state = {
            "init_process_pid": 100,
            "config": {"labels": [f"bundle={self.tmp / 'bundle'}"], "devices": [{"path": "/dev/nvidiactl"}]},
        }
        (self.root / "c1" / "state.json").write_text(json.dumps(state))

    def runc(self, checkpoint: str) -> None:
        state_json = self.root / "c1" / "state.json"
        script = write_fake_runc(
            self.tmp / "runc",
            state=f"if [ -f {state_json} ]; then {RUNNING}; else exit 1; fi",
            on_checkpoint=checkpoint,
            on_restore=(
                f"mkdir -p {self.root}/c1 && "
                f"""echo '{{"init_process_pid": 100, "config": {{}}}}' > {state_json}"""
            ),
            on_delete=f"rm -rf {self.root}/c1",
        )
        os.environ["CRGPU_RUNC"] = str(script)

    def checkpoint(self, *extra: str) -> tuple[int, dict[str, Any]]:
        result = crgpu("checkpoint", "--json", "-i", str(self.tmp / "img"), *extra, "c1")
        return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    monkeypatch.setenv("CRGPU_RUNC", "")
    return Node(tmp_path, monkeypatch)


def test_cuda_processes_are_the_containers_holding_the_gpu(node: Node) -> None:
    found = cuda_processes(100)
    assert [(p.host_pid, p.ns_pid, p.comm) for p in found] == [(101, 7, "train"), (102, 8, "serve")]


def test_mode_selection(node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_mode("auto", True, "runc", "c1")[0] == "driver-api"
    assert select_mode("auto", False, "runc", "c1")[0] == "off"
    with pytest.raises(PreconditionError, match=r"cuda_plugin\.so is missing"):
        select_mode("plugin", True, "runc", "c1")
    with pytest.raises(PreconditionError, match="is for runc"):
        select_mode("driver-api", True, "runsc", "c1")
    (node.host / "usr/lib/criu").mkdir(parents=True)
    (node.host / "usr/lib/criu/cuda_plugin.so").write_bytes(b"")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "cuda-checkpoint").write_text("#!/bin/sh\n")
    (bin_dir / "cuda-checkpoint").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert select_mode("auto", True, "runc", "c1")[0] == "plugin"
    assert select_mode("driver-api", True, "runc", "c1")[0] == "driver-api"


def test_old_driver_and_no_plugin_refuses_a_gpu_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRGPU_RUNC", "")
    node = Node(tmp_path, monkeypatch, driver="550.54.15")
    code, doc = node.checkpoint()
    assert code == 4
    assert "neither through CRIU's plugin" in doc["error"] and "driver 550.54.15 is below 570" in doc["error"]


def test_checkpoint_locks_and_checkpoints_every_cuda_process_then_dumps(node: Node) -> None:
    code, doc = node.checkpoint()
    assert code == 0, doc
    calls = node.data()["calls"]
    assert calls == [["lock", 101], ["lock", 102], ["checkpoint", 101], ["checkpoint", 102]]
    manifest = json.loads((node.tmp / "img" / "crgpu.json").read_text())
    assert manifest["cuda"] == {
        "mode": "driver-api",
        "processes": [
            {
                "ns_pid": 7,
                "comm": "train",
                "gpus": [FAKE_GPU],
                "gpu_bytes": GIB,
                "gpu_memory": {FAKE_GPU: GIB},
            },
            {
                "ns_pid": 8,
                "comm": "serve",
                "gpus": [FAKE_GPU],
                "gpu_bytes": GIB,
                "gpu_memory": {FAKE_GPU: GIB},
            },
        ],
    }
    stats = doc["stats"]
    assert stats["gpu_bytes"] == 2 << 30 and stats["gpu_checkpoint_gbps"] > 0
    assert {"cuda_lock_time", "cuda_checkpoint_time", "runtime_checkpoint_duration"} <= set(stats)


def test_leave_running_gives_every_process_back(node: Node) -> None:
    code, doc = node.checkpoint("--leave-running")
    assert code == 0, doc
    assert node.data()["procs"] == {"101": "running", "102": "running"}
    assert {"cuda_restore_time", "cuda_unlock_time"} <= set(doc["stats"])


@pytest.mark.parametrize(
    ("phase", "fail", "runtime"),
    [
        ("lock", {"lock": {"102": 1}}, "exit 0"),
        ("gpu checkpoint", {"checkpoint": {"102": 1}}, "exit 0"),
        ("runtime dump", {}, "echo 'Error (criu/cr-dump.c:1): Dumping FAILED.' >&2; exit 1"),
    ],
)
def test_a_failure_at_any_phase_leaves_every_process_unlocked_and_running(
    node: Node, phase: str, fail: dict[str, dict[str, int]], runtime: str
) -> None:
    node.set_states("running", fail)
    node.runc(checkpoint=runtime)
    code, doc = node.checkpoint()
    assert code == 1, (phase, doc)
    assert node.data()["procs"] == {"101": "running", "102": "running"}, phase
    assert not (node.tmp / "img").exists(), phase


def test_a_transient_failure_while_giving_back_is_retried(node: Node) -> None:
    node.set_states("running", {"restore": {"101": 1}, "unlock": {"102": 1}})
    code, doc = node.checkpoint("--leave-running")
    assert code == 0, doc
    assert node.data()["procs"] == {"101": "running", "102": "running"}


def test_a_process_that_cannot_be_given_back_is_named(node: Node) -> None:
    node.set_states("running", {"unlock": {"102": 5}})
    code, doc = node.checkpoint("--leave-running")
    assert code == 1
    assert "pid 102 (serve): unlock failed" in doc["error"]
    assert node.data()["procs"]["101"] == "running"


def test_restore_puts_gpu_state_back_and_unlocks(node: Node) -> None:
    code, _ = node.checkpoint()
    assert code == 0
    (node.root / "c1" / "state.json").unlink()  # the checkpointed container is gone
    node.set_states("checkpointed")
    result = crgpu("restore", "--json", "-i", str(node.tmp / "img"))
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, doc
    assert node.data()["procs"] == {"101": "running", "102": "running"}
    assert [c[:2] for c in node.data()["calls"]] == [
        ["restore", 101],
        ["restore", 102],
        ["unlock", 101],
        ["unlock", 102],
    ]
    assert {"cuda_restore_time", "cuda_unlock_time", "runtime_restore_duration"} <= set(doc["stats"])


def test_restore_sends_the_gpu_state_to_the_gpu_the_restored_container_was_given(node: Node) -> None:
    code, _ = node.checkpoint()  # both processes on FAKE_GPU, as NVML saw them
    assert code == 0
    (node.root / "c1" / "state.json").unlink()
    node.set_states("checkpointed")
    (node.tmp / "bundle" / "config.json").write_text(
        json.dumps({"process": {"env": ["NVIDIA_VISIBLE_DEVICES=1"]}})  # --gpus '"device=1"'
    )
    if not BINDINGS.startswith("13"):
        # 12.x bindings (the 570 line) have no GPU pairs: refused before the runtime runs, where
        # before crgpu planned the swap, runc restored, and the processes stayed checkpointed.
        result = crgpu("restore", "--json", "-i", str(node.tmp / "img"))
        doc = json.loads(result.stdout)
        assert result.exit_code == 4 and f"({FAKE_GPU} -> {SECOND_GPU})" in doc["error"], doc
        assert "needs driver 580.65.06+ and cuda-bindings 13.x" in doc["error"]
        assert not (node.root / "c1" / "state.json").exists()  # runc never restored it
        return
    dry = json.loads(crgpu("restore", "--dry-run", "--json", "-i", str(node.tmp / "img")).stdout)
    assert any(f"{FAKE_GPU} -> {SECOND_GPU}" in note for note in dry["notes"]), dry["notes"]
    result = crgpu("restore", "--json", "-i", str(node.tmp / "img"))
    assert result.exit_code == 0, result.stdout
    swap = {FAKE_GPU: SECOND_GPU, SECOND_GPU: FAKE_GPU}  # every GPU of the node, each once
    assert [c for c in node.data()["calls"] if c[0] == "restore"] == [
        ["restore", 101, swap],
        ["restore", 102, swap],
    ]


def _checkpointed_image(node: Node) -> None:
    code, doc = node.checkpoint()
    assert code == 0, doc
    (node.root / "c1" / "state.json").unlink()  # the checkpointed container is gone
    node.set_states("checkpointed")


def test_a_map_onto_other_gpus_on_the_570_line_is_refused_before_the_runtime_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Driver 570 with 12.x bindings (what NVIDIA documents for it) has no GPU pairs. Before, crgpu
    planned the swap, runc restored the container, and its CUDA processes stayed checkpointed."""
    monkeypatch.setenv("CRGPU_RUNC", "")
    node = Node(tmp_path, monkeypatch, driver="570.124.06")
    _checkpointed_image(node)
    monkeypatch.setattr("crgpu.nvidia.restore_preflight.installed_bindings", lambda: "12.9.10")
    (node.tmp / "bundle" / "config.json").write_text(
        json.dumps({"process": {"env": ["NVIDIA_VISIBLE_DEVICES=1"]}})
    )
    result = crgpu("restore", "--json", "-i", str(node.tmp / "img"))
    doc = json.loads(result.stdout)
    assert result.exit_code == 4 and f"({FAKE_GPU} -> {SECOND_GPU})" in doc["error"], doc
    assert "this node has driver 570.124.06 and cuda-bindings 12.9.10" in doc["error"]
    assert not (node.root / "c1" / "state.json").exists()
    assert not any(c[0] == "restore" for c in node.data().get("calls", []))


@pytest.mark.parametrize(
    ("driver", "bindings", "words"),
    [
        ("580.65.06", None, "cuda-bindings does not import"),
        ("570.124.06", "13.5.0", "documented for driver 580.65.06 or newer"),
    ],
)
def test_a_driver_api_restore_the_node_cannot_finish_is_refused_before_the_runtime_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, driver: str, bindings: str | None, words: str
) -> None:
    """Before, runc restored the container first and crgpu then failed, leaving every CUDA call in
    it blocked, with an empty result document. (A node without the driver is refused by the image's
    guard: the driver that made it is not here.)"""
    monkeypatch.setenv("CRGPU_RUNC", "")
    node = Node(tmp_path, monkeypatch, driver=driver)
    _checkpointed_image(node)
    monkeypatch.setattr("crgpu.nvidia.restore_preflight.installed_bindings", lambda: bindings)
    result = crgpu("restore", "--json", "-i", str(node.tmp / "img"))
    doc = json.loads(result.stdout)
    assert result.exit_code == 4 and words in doc["error"], doc
    assert doc["verb"] == "restore" and doc["container_id"] == "c1" and doc["gpu"] is True
    assert not (node.root / "c1" / "state.json").exists()


def test_a_restore_that_would_run_the_target_gpu_out_of_memory_is_refused_before_the_runtime_runs(
    node: Node,
) -> None:
    """An out-of-memory restore loses the GPU state for good (cuda-checkpoint #44). Two processes
    of 1 GiB each go back to FAKE_GPU, which has 1536 MiB free."""
    _checkpointed_image(node)
    write_fake_nvidia_smi(
        node.tmp / "bin" / "nvidia-smi", NODE_DRIVER, [(H100, FAKE_GPU), (H100, SECOND_GPU)], free_mib=1536
    )
    result = crgpu("restore", "--json", "-i", str(node.tmp / "img"))
    doc = json.loads(result.stdout)
    assert result.exit_code == 4, doc
    assert f"GPU {FAKE_GPU} has 1.5 GiB free" in doc["error"] and "put 2.0 GiB there" in doc["error"]
    assert not (node.root / "c1" / "state.json").exists()


def test_a_restore_given_no_gpu_of_the_model_is_refused_before_the_runtime_runs(node: Node) -> None:
    code, _ = node.checkpoint()
    assert code == 0
    (node.root / "c1" / "state.json").unlink()
    a100 = "NVIDIA A100-SXM4-80GB"
    write_fake_nvidia_smi(
        node.tmp / "bin" / "nvidia-smi", NODE_DRIVER, [(H100, FAKE_GPU), (a100, SECOND_GPU)]
    )
    (node.tmp / "bundle" / "config.json").write_text(
        json.dumps({"process": {"env": ["NVIDIA_VISIBLE_DEVICES=1"]}})  # given the A100 only
    )
    result = crgpu("restore", "--json", "-i", str(node.tmp / "img"))
    doc = json.loads(result.stdout)
    assert result.exit_code == 4 and "no free GPU of that model" in doc["error"], doc
    assert not (node.root / "c1" / "state.json").exists()  # runc never restored it


def test_cuda_verbs_drive_the_fake_driver(node: Node) -> None:
    assert crgpu("cuda", "state", "--pid", "101").stdout.strip() == "running"
    assert crgpu("cuda", "lock", "--pid", "101").stdout.strip() == "locked"
    doc = json.loads(crgpu("cuda", "checkpoint", "--pid", "101", "--json").stdout)
    assert doc == {"ok": True, "pid": 101, "action": "checkpoint", "state": "checkpointed"}
    bad = crgpu("cuda", "unlock", "--pid", "101")
    assert bad.exit_code == 1 and "CUDA_ERROR_ILLEGAL_STATE" in bad.stderr
    assert crgpu("cuda", "restore", "--pid", "101").stdout.strip() == "locked"
    assert crgpu("cuda", "unlock", "--pid", "101").stdout.strip() == "running"


@without_a_gpu
def test_cuda_state_without_a_driver_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # the real loader: cuda-bindings, which finds no driver here
    result = crgpu("cuda", "state", "--pid", "1")
    assert result.exit_code != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("crgpu: error:")]
    assert len(errors) == 1 and "CUDA driver" in errors[0]
    assert "Traceback" not in result.output


def test_cuda_restore_with_a_device_map_calls_the_driver_with_it(node: Node) -> None:
    old, new = "GPU-00000000-0000-0000-0000-0000000000a1", "GPU-00000000-0000-0000-0000-0000000000b1"
    crgpu("cuda", "lock", "--pid", "101")
    crgpu("cuda", "checkpoint", "--pid", "101")
    result = crgpu("cuda", "restore", "--pid", "101", "--device-map", f"{old}={new}", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["state"] == "locked"
    calls = json.loads(node.state.read_text())["calls"]
    assert calls[-1] == ["restore", 101, {old: new}]
    for nonsense in ("nonsense", f"{old}=GPU-1", f"--root=/x={new}"):
        bad = crgpu("cuda", "restore", "--pid", "101", "--device-map", nonsense)
        assert bad.exit_code == 2 and "OLD-UUID=NEW-UUID" in bad.stderr, nonsense
    assert json.loads(node.state.read_text())["calls"] == calls  # the driver never saw them


def _install_plugin(node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    plugin_dir = node.host / "usr/lib/criu"
    plugin_dir.mkdir(parents=True)
    (plugin_dir / "cuda_plugin.so").write_bytes(b"")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "cuda-checkpoint").write_text("#!/bin/sh\n")
    (bin_dir / "cuda-checkpoint").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return plugin_dir


def test_plugin_mode_tells_criu_where_the_plugin_is_and_its_lock_timeout(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_dir = _install_plugin(node, tmp_path, monkeypatch)
    result = crgpu(
        "checkpoint", "--dry-run", "--json", "--cuda", "plugin", "--cuda-lock-timeout", "2500",
        "-i", str(tmp_path / "img"), "c1",
    )  # fmt: skip
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, doc
    assert f"libdir {plugin_dir}\ntimeout 3\n" in doc["criu_config"]  # runc sends neither over RPC
    assert doc["env"]["CRIU_CONFIG_FILE"].endswith("crgpu-criu-dump.conf")
    refused = crgpu(
        "checkpoint", "--dry-run", "--cuda", "plugin", "--pre-dump", "1", "-i", str(tmp_path / "i"), "c1"
    )
    assert refused.exit_code == 4 and "disables itself on pre-dumps" in refused.stderr


def test_a_plugin_image_restores_only_where_the_plugin_can_resume_it(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_dir = _install_plugin(node, tmp_path, monkeypatch)
    code, doc = node.checkpoint("--cuda", "plugin")
    assert code == 0, doc
    (node.root / "c1" / "state.json").unlink()
    restore = crgpu("restore", "--dry-run", "--json", "-i", str(node.tmp / "img"))
    doc = json.loads(restore.stdout)
    assert restore.exit_code == 0, doc
    assert f"libdir {plugin_dir}" in doc["criu_config"]
    (tmp_path / "bin" / "cuda-checkpoint").unlink()
    refused = crgpu("restore", "--dry-run", "-i", str(node.tmp / "img"))
    assert refused.exit_code == 4 and "cuda-checkpoint is not on PATH" in refused.stderr


def test_a_driver_api_image_is_not_restored_attached(node: Node) -> None:
    code, _ = node.checkpoint()
    assert code == 0
    (node.root / "c1" / "state.json").unlink()
    refused = crgpu("restore", "--no-detach", "-i", str(node.tmp / "img"))
    assert refused.exit_code == 4 and "restore detached" in refused.stderr
    assert not any(call[0] == "restore" for call in node.data()["calls"])  # refused before any driver call


def test_the_driver_decides_which_processes_are_cuda_processes(node: Node) -> None:
    # A forked DataLoader-like child: maps libcuda, holds no device, the driver does not know it.
    node.process(105, NS, ns_pid=11, cuda=True, comm="worker", libcuda=True)
    code, doc = node.checkpoint()
    assert code == 0, doc
    assert [c for c in node.data()["calls"] if c[1] == 105] == []  # never locked
    assert any("not checkpointed by the driver: pid 11 (worker)" in note for note in doc["notes"])
    manifest = json.loads((node.tmp / "img" / "crgpu.json").read_text())
    assert [p["ns_pid"] for p in manifest["cuda"]["processes"]] == [7, 8]
    assert manifest["cuda"]["not_checkpointed"][0]["ns_pid"] == 11


def test_a_device_holder_the_driver_cannot_take_refuses_the_checkpoint_up_front(node: Node) -> None:
    # An NVML-only monitoring sidecar: holds /dev/nvidiactl, has no CUDA context.
    node.process(104, NS, ns_pid=10, cuda=True, comm="nvml-sidecar")
    code, doc = node.checkpoint()
    assert code == 4
    assert "pid 10 (nvml-sidecar)" in doc["error"] and "CUDA_ERROR_INVALID_VALUE" in doc["error"]
    assert node.data().get("calls", []) == []  # nothing locked
    assert not (node.tmp / "img").exists()


def test_an_out_of_memory_is_not_retried_and_stays_the_first_error(node: Node) -> None:
    oom = {"count": 5, "error": "CUDA_ERROR_OUT_OF_MEMORY"}
    node.set_states("running", {"restore": {"101": oom}, "unlock": {"101": 5}})
    code, doc = node.checkpoint("--leave-running")
    assert code == 1
    restores = [c for c in node.data()["calls"] if c[:2] == ["restore", 101]]
    assert len(restores) == 1  # NVIDIA: after an out-of-memory the restore keeps failing
    # the out-of-memory is what the operator reads, not a later unlock error it would cause
    assert (
        "pid 101 (train): GPU restore failed: cuCheckpointProcessRestore failed: CUDA_ERROR_OUT_OF_MEMORY"
        in doc["error"]
    )
    assert "unlock failed" not in doc["error"]
    assert node.data()["procs"]["102"] == "running"


def test_any_failure_while_suspending_gives_every_process_back(node: Node) -> None:
    from crgpu.nvidia.cuda_flow import DriverApiSession
    from crgpu.nvidia.cuda_processes import cuda_processes

    class Crashing(FakeDriver):
        def checkpoint(self, pid: int) -> None:
            if pid == 102:
                raise RuntimeError("driver call crashed")  # not the bindings' error type
            super().checkpoint(pid)

    session = DriverApiSession(Crashing(), cuda_processes(100), 1000)
    with pytest.raises(RuntimeError, match="crashed"):
        session.suspend()
    assert node.data()["procs"] == {"101": "running", "102": "running"}


def test_gpu_memory_the_host_cannot_hold_is_refused_before_any_lock(node: Node) -> None:
    (node.host / "proc" / "meminfo").write_text("MemTotal: 4000000 kB\nMemAvailable: 1048576 kB\n")
    code, doc = node.checkpoint()  # two processes of 1 GiB each; 1 GiB available
    assert code == 4 and "2.0 GiB of GPU memory" in doc["error"] and "1.0 GiB available" in doc["error"]
    assert "calls" not in node.data() or not any(c[0] == "lock" for c in node.data()["calls"])
    assert not (node.tmp / "img").exists()


def _cgroup_v2(node: Node, path: str, **files: int | str) -> None:
    """The container's processes in cgroup v2 PATH; `files` the cgroup's memory files by name."""
    for pid in (100, *CUDA_PIDS, 103):
        (node.host / "proc" / str(pid) / "cgroup").write_text(f"0::{path}\n")
    where = node.host / "sys/fs/cgroup" / path.strip("/")
    where.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        (where / name).write_text(f"{value}\n")


def _locked(node: Node) -> bool:
    return "calls" in node.data() and any(c[0] == "lock" for c in node.data()["calls"])


def test_gpu_memory_the_containers_cgroup_cannot_take_is_refused_before_any_lock(node: Node) -> None:
    """Two processes of 1 GiB each, a pod limit of 3 GiB with 1.5 GiB in use (of which 0.5 GiB is
    inactive file cache the kernel reclaims first) and no swap: 2 GiB do not fit in 2 GiB less 0.5.
    Before, only the host's MemAvailable was compared, and the kernel killed them mid-checkpoint."""
    (node.host / "proc" / "meminfo").write_text(
        "MemTotal: 400000000 kB\nMemAvailable: 300000000 kB\nSwapFree: 0 kB\n"
    )
    pod = "/kubepods.slice/kubepods-pod1.slice"
    _cgroup_v2(
        node,
        pod,
        **{
            "memory.max": 3 * GIB,
            "memory.current": 2 * GIB,
            "memory.stat": f"anon 1\ninactive_file {GIB // 2}\n",
        },
    )
    _cgroup_v2(node, pod + "/cri-containerd-c1.scope", **{"memory.max": "max", "memory.current": GIB})
    code, doc = node.checkpoint()
    assert code == 4, doc
    assert "would copy 2.0 GiB" in doc["error"] and "leaves 1.5 GiB" in doc["error"]
    assert "kubepods-pod1.slice: limit 3.0 GiB, in use 1.5 GiB" in doc["error"]
    assert "by 0.5 GiB or more" in doc["hint"] and "nothing was locked" in doc["hint"]
    assert doc["verb"] == "checkpoint" and doc["container_id"] == "c1" and doc["gpu"] is True
    assert not _locked(node) and not (node.tmp / "img").exists()


def test_room_in_swap_counts_as_the_kernel_counts_it(node: Node) -> None:
    """cgroup v2: memory.swap.max bounds what swap takes; with swap not accounted, the host's free swap."""
    (node.host / "proc" / "meminfo").write_text(
        "MemTotal: 400000000 kB\nMemAvailable: 300000000 kB\nSwapFree: 4194304 kB\n"
    )
    ctr = "/system.slice/c1.scope"
    _cgroup_v2(
        node,
        ctr,
        **{"memory.max": GIB, "memory.current": 0, "memory.swap.max": GIB // 2, "memory.swap.current": 0},
    )
    code, doc = node.checkpoint()
    assert code == 4 and "leaves 1.5 GiB" in doc["error"] and "swap room 0.5 GiB" in doc["error"], doc
    (
        node.host / "sys/fs/cgroup/system.slice/c1.scope/memory.swap.max"
    ).unlink()  # swap not accounted: 4 GiB free
    code, doc = node.checkpoint()
    assert code == 0, doc
    assert _locked(node)


def test_cgroup_v1_memory_and_memsw_limits_are_counted(node: Node) -> None:
    (node.host / "proc" / "meminfo").write_text(
        "MemTotal: 400000000 kB\nMemAvailable: 300000000 kB\nSwapFree: 8388608 kB\n"
    )
    for pid in (100, *CUDA_PIDS, 103):
        (node.host / "proc" / str(pid) / "cgroup").write_text(
            "12:memory:/docker/c1\n11:cpu,cpuacct:/docker/c1\n0::/\n"
        )
    where = node.host / "sys/fs/cgroup/memory/docker/c1"
    where.mkdir(parents=True)
    for name, value in {
        "memory.limit_in_bytes": 2 * GIB,
        "memory.usage_in_bytes": GIB,
        "memory.memsw.limit_in_bytes": 2 * GIB + GIB // 2,  # memory and swap together
        "memory.memsw.usage_in_bytes": GIB,
    }.items():
        (where / name).write_text(f"{value}\n")
    (where / "memory.stat").write_text("total_inactive_file 0\n")
    code, doc = node.checkpoint()  # 1 GiB of memory and 0.5 GiB of swap left: 1.5 < 2
    assert (
        code == 4 and "cgroup /docker/c1: limit 2.0 GiB" in doc["error"] and "leaves 1.5 GiB" in doc["error"]
    ), doc
    (where / "memory.limit_in_bytes").write_text(f"{9223372036854771712}\n")  # v1's "no limit"
    (where / "memory.memsw.limit_in_bytes").write_text(f"{9223372036854771712}\n")
    code, doc = node.checkpoint()
    assert code == 0, doc


def test_a_plugin_restore_that_left_cuda_checkpointed_is_a_failure(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_plugin(node, tmp_path, monkeypatch)
    code, doc = node.checkpoint("--cuda", "plugin")
    assert code == 0, doc
    (node.root / "c1" / "state.json").unlink()
    node.set_states("checkpointed")  # the plugin disabled itself: CRIU "succeeded" anyway
    result = crgpu("restore", "--json", "-i", str(node.tmp / "img"))
    doc = json.loads(result.stdout)
    assert result.exit_code == 1
    assert "plugin left processes not running: pid 7 (train) is checkpointed" in doc["error"]
    (node.root / "c1" / "state.json").unlink()
    node.set_states("running")  # the plugin did its work
    result = crgpu("restore", "--json", "-i", str(node.tmp / "img"))
    assert result.exit_code == 0, result.stdout


def test_processes_already_running_after_the_runtime_restore_are_not_restored_twice(node: Node) -> None:
    code, _ = node.checkpoint()
    assert code == 0
    (node.root / "c1" / "state.json").unlink()
    node.set_states("running")  # e.g. CRIU's plugin on this node resumed them already
    result = crgpu("restore", "--json", "-i", str(node.tmp / "img"))
    assert result.exit_code == 0, result.stdout
    assert [c for c in node.data().get("calls", []) if c[0] in ("restore", "unlock")] == []


class SignalledDuringCheckpoint(FakeDriver):
    """A supervisor's SIGTERM (or a closed terminal's SIGHUP) reaches crgpu while the driver
    checkpoints the second process; the call runs in the helper, crgpu's child."""

    signum = signal.SIGTERM

    def checkpoint(self, pid: int) -> None:
        super().checkpoint(pid)
        if pid == 102:
            os.kill(os.getppid(), self.signum)
            time.sleep(0.5)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_during_the_cuda_checkpoint_gives_every_process_back(
    node: Node, monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    """Before, SIGTERM and SIGHUP killed crgpu outright there: both processes stayed checkpointed."""
    monkeypatch.setattr(SignalledDuringCheckpoint, "signum", signum)
    monkeypatch.setattr(cuda, "DRIVER_FACTORY", SignalledDuringCheckpoint)
    result = crgpu("checkpoint", "--json", "-i", str(node.tmp / "img"), "c1")
    assert result.exit_code == 130, result.output
    assert node.data()["procs"] == {"101": "running", "102": "running"}
    assert not (node.tmp / "img").exists()


def _frozen_runc(node: Node, frozen: Path, on_checkpoint: str) -> None:
    """The fake runc with a freezer: `state` says paused while FROZEN exists, `resume` thaws."""
    paused = """echo '{"id": "c1", "status": "paused"}'"""
    script = write_fake_runc(
        node.tmp / "runc",
        state=f"if [ -f {frozen} ]; then {paused}; else {RUNNING}; fi",
        on_checkpoint=on_checkpoint,
        on_resume=f"rm -f {frozen}",
    )
    os.environ["CRGPU_RUNC"] = str(script)


def test_a_paused_gpu_container_is_refused_before_any_lock(node: Node, tmp_path: Path) -> None:
    """Before, it was accepted and each lock waited out its timeout on a frozen process."""
    frozen = tmp_path / "frozen"
    frozen.touch()
    _frozen_runc(node, frozen, "exit 0")
    code, doc = node.checkpoint()
    assert code == 4 and "is paused" in doc["error"] and "resume c1" in doc["hint"], doc
    assert "calls" not in node.data()


class AnswersOnlyThawed(FakeDriver):
    """A frozen process answers no CUDA call: here one fails at once where the driver would hang."""

    frozen: Path

    def restore(self, pid: int, device_map: dict[str, str] | None = None) -> None:
        if self.frozen.exists():
            raise CudaError("cuCheckpointProcessRestore failed: CUDA_ERROR_TIMEOUT (the process is frozen)")
        super().restore(pid, device_map)


def test_after_a_failed_dump_left_it_frozen_the_container_is_thawed_before_the_gpu_give_back(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, crgpu gave the GPU state back first, to processes CRIU had left frozen: every call
    waited out its deadline and the processes stayed checkpointed."""
    frozen = tmp_path / "frozen"
    _frozen_runc(node, frozen, f"touch {frozen}; echo 'Error: criu failed' >&2; exit 1")
    monkeypatch.setattr(AnswersOnlyThawed, "frozen", frozen, raising=False)
    monkeypatch.setattr(cuda, "DRIVER_FACTORY", AnswersOnlyThawed)
    code, doc = node.checkpoint()
    assert code == 1, doc
    assert "left behind" not in doc["error"], doc["error"]
    assert node.data()["procs"] == {"101": "running", "102": "running"}
    assert not frozen.exists() and doc["container_status"] == "running"


POD = "/kubepods.slice/kubepods-pod1.slice"


def _in_cgroup(node: Node, cgroup: str, *pids: int) -> None:
    for pid in pids:
        (node.host / "proc" / str(pid) / "cgroup").write_text(f"0::{cgroup}\n")


def test_a_sibling_container_sharing_the_pid_namespace_is_not_the_containers(node: Node) -> None:
    """A pod with shareProcessNamespace: pid 104 is the sidecar's, in the pod's PID namespace but
    its own cgroup. Before, it was locked, recorded and left to the container's checkpoint."""
    node.process(104, NS, ns_pid=10, cuda=True, comm="sidecar")
    _in_cgroup(node, POD + "/cri-containerd-c1.scope", 100, 101, 102, 103)
    _in_cgroup(node, POD + "/cri-containerd-sidecar.scope", 104)
    assert [p.host_pid for p in cuda_processes(100)] == [101, 102]
    data = node.data()
    data["procs"]["104"] = "running"
    node.state.write_text(json.dumps(data))
    code, doc = node.checkpoint()
    assert code == 0, doc
    assert all(call[1] != 104 for call in node.data()["calls"])
    assert node.data()["procs"]["104"] == "running"


def test_a_forked_worker_holding_the_device_mapped_is_refused_before_any_lock(node: Node) -> None:
    """A PyTorch DataLoader worker: forked, no CUDA context (the driver does not know it), its
    parent's /dev/nvidia* mappings inherited, no descriptor open. Before, it was not seen: all
    GPU memory was copied out, CRIU failed on the mapping, and it was copied back."""
    node.process(105, NS, ns_pid=11, cuda=False, comm="pt_data_worker")
    (node.host / "proc/105/maps").write_text(
        "7f5a10000000-7f5a10200000 rw-s 00000000 00:05 1034                       /dev/nvidia0\n"
        "7f5a10200000-7f5a10400000 rw-s 00000000 00:05 1031                       /dev/nvidiactl\n"
    )
    code, doc = node.checkpoint()
    assert code == 4, doc
    assert "pid 11 (pt_data_worker)" in doc["error"] and "DataLoader" in doc["hint"]
    assert "calls" not in node.data() or not any(c[0] == "lock" for c in node.data()["calls"])


def test_a_process_that_starts_cuda_between_the_plan_and_the_lock_is_taken_too(node: Node) -> None:
    """Before, the set was taken once at plan time: a process that started CUDA meanwhile was not
    locked, and CRIU met its device."""
    from crgpu.core.checkpoint import execute_checkpoint
    from crgpu.core.plan_checkpoint import plan_checkpoint
    from crgpu.options.models import CheckpointOptions

    plan = plan_checkpoint(CheckpointOptions(container_id="c1", image_path=node.tmp / "img"))
    assert [p.host_pid for p in plan.cuda_processes] == [101, 102]
    node.process(106, NS, ns_pid=12, cuda=True, comm="late")
    data = node.data()
    data["procs"]["106"] = "running"
    node.state.write_text(json.dumps(data))
    result = execute_checkpoint(plan, lambda line: None)
    assert result.ok, result.error
    locked = [call[1] for call in node.data()["calls"] if call[0] == "lock"]
    assert locked == [101, 102, 106]
    assert any("pid 12 (late) started CUDA since the plan" in note for note in result.notes)
    manifest = json.loads((node.tmp / "img" / "crgpu.json").read_text())
    assert [p["ns_pid"] for p in manifest["cuda"]["processes"]] == [7, 8, 12]


def test_in_driver_api_mode_criu_loads_no_plugin_from_its_default_libdir(node: Node) -> None:
    """CRIU loads every .so of its libdir: its cuda_plugin.so would lock or restore in place
    before crgpu (or fail "Missing required plugin"). Before, driver-API mode left it to load."""
    (node.host / "usr/lib/criu").mkdir(parents=True)
    (node.host / "usr/lib/criu/cuda_plugin.so").write_bytes(b"")
    empty, seen = node.tmp / "img" / "criu-no-plugins", node.tmp / "seen"
    # What CRIU finds there while runc runs: an empty directory, crgpu's own.
    node.runc(checkpoint=f"stat -c '%a' {empty} > {seen}; ls -A {empty} >> {seen}")
    code, doc = node.checkpoint("--cuda", "driver-api")
    assert code == 0, doc
    assert f"libdir {empty}" in (doc["criu_config"] or "").splitlines()
    assert seen.read_text() == "700\n"
    assert not empty.exists()  # CRIU's for the call only: not left in the image


def test_without_nvml_the_per_process_gpu_memory_comes_from_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memory checks depend on it; before, without nvidia-ml-py it was empty and every check
    passed unseen. Rows as `nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory` prints them."""
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(
        "#!/bin/sh\n"
        'case "$*" in *query-compute-apps=pid,gpu_uuid,used_memory*)\n'
        f'  echo "101, {FAKE_GPU}, 40960"; echo "101, {SECOND_GPU}, 1024"; echo "999, {FAKE_GPU}, 5";;\n'
        "esac\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("CRGPU_HOST_ROOT", str(tmp_path))  # no NVML: a fixture tree
    use = gpu.process_gpu_use([101, 102])
    assert set(use) == {101}
    assert use[101].bytes == 41984 * 2**20
    assert use[101].on() == {FAKE_GPU: 40960 * 2**20, SECOND_GPU: 1024 * 2**20}


def test_without_the_bindings_a_plugin_restore_is_verified_with_cuda_checkpoint(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CRIU ignores the plugin's late restore errors; before, without cuda-bindings crgpu only
    warned, though `cuda-checkpoint --get-state` is on PATH in exactly this mode."""
    _install_plugin(node, tmp_path, monkeypatch)
    code, doc = node.checkpoint("--cuda", "plugin")
    assert code == 0, doc
    (node.root / "c1" / "state.json").unlink()

    def no_bindings() -> FakeDriver:
        raise CudaError("cannot reach the CUDA driver API: the cuda-bindings package is not installed")

    monkeypatch.setattr(cuda, "DRIVER_FACTORY", no_bindings)
    asked = tmp_path / "asked"
    # NVIDIA's tool: one word per process, an error for one that is no CUDA process.
    (tmp_path / "bin" / "cuda-checkpoint").write_text(
        f'#!/bin/sh\necho "$*" >> {asked}\n'
        'case "$*" in "--get-state --pid 101") echo checkpointed;; "--get-state --pid 102") echo running;;\n'
        '  *) echo "Could not get process state" >&2; exit 1;; esac\n'
    )
    result = crgpu("restore", "--json", "-i", str(node.tmp / "img"))
    doc = json.loads(result.stdout)
    assert result.exit_code == 1, doc
    assert "plugin left processes not running: pid 7 (train) is checkpointed" in doc["error"]
    assert "--get-state --pid 101" in asked.read_text()


@pytest.mark.skipif(not BINDINGS.startswith("13"), reason="a move onto other GPUs needs the 13.x bindings")
@pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes needs root")
def test_a_move_onto_another_gpu_brings_the_bundles_device_node_before_the_gpu_state(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CRIU restores /dev from the image (nvidia0); the state moves to the bundle's GPU 1. Before,
    the restored process found no /dev/nvidia1 (and a denied nvidia0): the restore failed late."""
    import stat as stat_

    _checkpointed_image(node)
    ctr_root = tmp_path / "ctr-root"
    (ctr_root / "dev").mkdir(parents=True)
    os.mknod(ctr_root / "dev/nvidia0", stat_.S_IFCHR | 0o666, os.makedev(195, 0))
    (node.host / "proc/100/root").symlink_to(ctr_root)
    (node.tmp / "bundle" / "config.json").write_text(
        json.dumps(
            {
                "process": {"env": ["NVIDIA_VISIBLE_DEVICES=1"]},
                "linux": {"devices": [{"path": "/dev/nvidia1", "type": "c", "major": 195, "minor": 1}]},
            }
        )
    )

    class NeedsItsNode(FakeDriver):
        def restore(self, pid: int, device_map: dict[str, str] | None = None) -> None:
            if not (ctr_root / "dev/nvidia1").exists() or (ctr_root / "dev/nvidia0").exists():
                raise CudaError("cuCheckpointProcessRestore failed: CUDA_ERROR_NO_DEVICE")
            super().restore(pid, device_map)

    monkeypatch.setattr(cuda, "DRIVER_FACTORY", NeedsItsNode)
    result = crgpu("restore", "--json", "-i", str(node.tmp / "img"))
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, doc
    assert (
        "/dev/nvidia1 made (195:1)" in doc["notes"]
        and "/dev/nvidia0 removed (not the bundle's)" in doc["notes"]
    )
    assert node.data()["procs"] == {"101": "running", "102": "running"}


class RecordsLockTimeout(FakeDriver):
    def lock(self, pid: int, timeout_ms: int) -> None:
        data = self._load()
        data.setdefault("timeouts", []).append(timeout_ms)
        self._save(data)
        super().lock(pid, timeout_ms)


def test_a_lock_timeout_of_0_means_no_deadline_in_driver_api_mode_and_is_refused_for_the_plugin(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, 0 meant "for ever" through the driver API and 1 s through CRIU's plugin."""
    monkeypatch.setattr(cuda, "DRIVER_FACTORY", RecordsLockTimeout)
    _install_plugin(node, tmp_path, monkeypatch)
    code, doc = node.checkpoint("--cuda", "plugin", "--cuda-lock-timeout", "0")
    assert code == 4 and "is the driver API's" in doc["error"], doc
    code, doc = node.checkpoint("--cuda", "driver-api", "--cuda-lock-timeout", "0")
    assert code == 0, doc
    assert node.data()["timeouts"] == [0, 0]  # the driver's "no timeout", for each process


def test_a_container_on_a_mig_gpu_is_refused_before_any_lock(node: Node) -> None:
    """cuda-checkpoint #42: MIG fails "out of memory" mid-way. Before, neither detected nor refused."""
    smi = node.tmp / "bin" / "nvidia-smi"
    write_fake_nvidia_smi(smi, NODE_DRIVER, [(H100, FAKE_GPU), (H100, SECOND_GPU)], mig=(FAKE_GPU,))

    def checkpoint(env: list[str], image: str) -> tuple[int, dict[str, Any]]:
        (node.tmp / "bundle" / "config.json").write_text(json.dumps({"process": {"env": env}}))
        result = crgpu("checkpoint", "--json", "-i", str(node.tmp / image), "c1")
        return result.exit_code, json.loads(result.stdout)

    code, doc = checkpoint([], "a")  # the spec names no GPU: it sees them all, FAKE_GPU among them
    assert code == 4 and f"MIG-enabled GPUs ({FAKE_GPU})" in doc["error"], doc
    mig = "MIG-4b1c4e1d-5e61-5e4a-9a0e-0d4a4c2d6c1f"
    code, doc = checkpoint([f"NVIDIA_VISIBLE_DEVICES={mig}"], "b")
    assert code == 4 and f"MIG devices ({mig})" in doc["error"], doc
    assert "calls" not in node.data()
    code, doc = checkpoint(["NVIDIA_VISIBLE_DEVICES=1"], "c")  # given the GPU without MIG only
    assert code == 0, doc


def test_the_plugin_is_for_x86_64_only(node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_plugin(node, tmp_path, monkeypatch)
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    with pytest.raises(PreconditionError, match="x86-64 only, and this node is aarch64"):
        select_mode("plugin", True, "runc", "c1")
    assert select_mode("auto", True, "runc", "c1")[0] == "driver-api"  # the driver API instead


def test_a_plugin_image_is_not_restored_where_persistence_mode_is_off(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cuda-checkpoint never calls cuInit; without persistence mode its restore fails and CRIU still
    reports success. Before, crgpu let runc run."""
    _install_plugin(node, tmp_path, monkeypatch)
    code, doc = node.checkpoint("--cuda", "plugin")
    assert code == 0, doc
    (node.root / "c1" / "state.json").unlink()
    write_fake_nvidia_smi(
        node.tmp / "bin" / "nvidia-smi",
        NODE_DRIVER,
        [(H100, FAKE_GPU), (H100, SECOND_GPU)],
        persistence="Disabled",
    )
    result = crgpu("restore", "--json", "-i", str(node.tmp / "img"))
    doc = json.loads(result.stdout)
    assert (
        result.exit_code == 4
        and "persistence mode is off" in doc["error"]
        and "nvidia-smi -pm 1" in doc["hint"]
    ), doc
    assert not (node.root / "c1" / "state.json").exists()


class SignalledDuringRestore(FakeDriver):
    def restore(self, pid: int, device_map: dict[str, str] | None = None) -> None:
        super().restore(pid, device_map)
        if pid == 101:
            os.kill(os.getppid(), signal.SIGTERM)
            time.sleep(0.3)


def test_a_stop_signal_during_the_gpu_restore_waits_until_every_process_runs(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, SIGTERM during the GPU restore killed crgpu with the second process checkpointed."""
    _checkpointed_image(node)
    monkeypatch.setattr(cuda, "DRIVER_FACTORY", SignalledDuringRestore)
    result = crgpu("restore", "--json", "-i", str(node.tmp / "img"))
    assert result.exit_code == 130, result.output
    assert node.data()["procs"] == {"101": "running", "102": "running"}
    assert f"signal {int(signal.SIGTERM)}" in json.loads(result.stdout)["error"]
