"""Docker's containers, with dockerd from docker.io: found by their Docker names (the data root
from the daemon's own flags, no setting), never stopped behind Docker's back, kept running with
--leave-running, and handed to Docker, which restores them as its own checkpoints."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

from crgpu.host.errors import ExitCode
from tests.dockerhost import DockerHost
from tests.helpers import crgpu

_names = itertools.count()


def _name() -> str:
    return f"crgpu-d{os.getpid()}-{next(_names)}"


def test_a_stop_checkpoint_by_docker_name_is_refused_with_dockers_command(
    docker: DockerHost, tmp_path: Path
) -> None:
    name = _name()
    docker.run(name)
    result = crgpu("checkpoint", "-i", str(tmp_path / "img"), name)
    assert result.exit_code == ExitCode.PRECONDITION, result.output
    assert (
        f"belongs to Docker ({name})" in result.stderr and f"docker checkpoint create {name}" in result.stderr
    )
    assert docker.state(name) == ("running", 0) and not (tmp_path / "img").exists()


def test_a_leave_running_checkpoint_by_docker_name_keeps_docker_right(
    docker: DockerHost, tmp_path: Path
) -> None:
    name = _name()
    docker.run(name)
    before = docker.wait_count_above(name, 3)
    result = crgpu("checkpoint", "--json", "--leave-running", "-i", str(tmp_path / "img"), name)
    assert result.exit_code == 0, result.output
    engine = json.loads((tmp_path / "img" / "crgpu.json").read_text())["container"]["engine"]
    assert (engine["kind"], engine["name"], engine["image"]) == ("docker", name, "crgpu-busybox:1")
    assert docker.state(name) == ("running", 0)
    docker.wait_count_above(name, before + 5)


def test_a_hand_off_is_started_by_docker_from_the_saved_state_as_its_own_checkpoint(
    docker: DockerHost,
) -> None:
    """After the hand-off Docker shows the container as after `docker checkpoint create` (Exited
    (137): CRIU's dump ends the task), and `docker start --checkpoint` resumes it."""
    own, handed = _name(), _name()
    docker.run(own)
    docker.run(handed)
    docker.wait_count_above(own, 3)
    docker("checkpoint", "create", own, "theirs")
    saved = docker.wait_count_above(handed, 5)
    result = crgpu("checkpoint", "--hand-off", "--json", handed)
    assert result.exit_code == 0, result.output
    note = next(n for n in json.loads(result.stdout)["notes"] if "docker start --checkpoint" in n)
    checkpoint = note.split("--checkpoint ")[1].split()[0]
    assert docker.wait_state(handed, "exited") == docker.wait_state(own, "exited") == ("exited", 137)
    assert checkpoint in str(docker("checkpoint", "ls", handed))  # Docker lists it as its own

    docker("start", "--checkpoint", checkpoint, handed)
    assert docker.state(handed)[0] == "running"
    after = docker.wait_count_above(handed, saved - 1)
    assert after < saved + 200  # from the checkpoint's count on, not from 1
