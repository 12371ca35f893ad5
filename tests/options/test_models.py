"""The options model: container IDs and references, one line per bad field, contradicting options."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from crgpu.options.models import CheckpointOptions, check_container_id, validation_messages


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../x", "a b", "x;rm", "é", "a\x00"])
def test_container_ids_outside_runc_rule_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid container ID"):
        check_container_id(bad)


def test_validation_gives_one_line_per_bad_field() -> None:
    with pytest.raises(ValidationError) as info:
        CheckpointOptions.model_validate(
            {"container_id": "a/b", "runtime": "docker", "manage_cgroups_mode": "x", "image_path": "rel"}
        )
    lines = validation_messages(info.value)
    assert len(lines) == 3
    # Named as typed (a positional as its metavar), in crgpu's words; before: `--container-id`,
    # "Input should be 'auto', 'runc' or 'runsc'".
    assert any(line.startswith("CONTAINER_ID: invalid container ID") for line in lines), lines
    assert "--runtime: 'docker' is not one of 'auto', 'runc' or 'runsc'" in lines
    assert any(line.startswith("--manage-cgroups-mode: 'x' is not one of") for line in lines)
    assert not any("Input should" in line for line in lines)


def test_messages_name_flags_not_model_fields() -> None:
    with pytest.raises(ValidationError) as info:
        CheckpointOptions.model_validate(
            {"container_id": "a", "image_path": "/x", "cuda_lock_timeout_ms": -1}
        )
    assert validation_messages(info.value) == ["--cuda-lock-timeout: -1 is below the least allowed, 0"]
    with pytest.raises(ValidationError) as info:
        CheckpointOptions.model_validate(
            {"container_id": "a", "image_path": "/x", "tcp_established": True, "tcp_close": True}
        )
    # A rule of the whole model: no "options:" prefix, the flags by their names (before: field names).
    assert validation_messages(info.value) == [
        "--tcp-established and --tcp-close contradict each other: choose one"
    ]
    with pytest.raises(ValidationError) as info:
        CheckpointOptions.model_validate({"container_id": "a"})
    assert validation_messages(info.value)[0].startswith("give --image-path DIR")


@pytest.mark.parametrize("ref", ["default/web-0/app", "kube-system/coredns-5d78c9869d-abcde/coredns"])
def test_a_kubernetes_namespace_pod_container_is_a_container_reference(ref: str) -> None:
    assert CheckpointOptions(container_id=ref, image_path=Path("/x")).container_id == ref


@pytest.mark.parametrize("ref", ["a/b", "default/web/../x", "-x/y/z", "default/Web/app", "ns/pod/app/extra"])
def test_anything_else_with_a_slash_is_refused(ref: str) -> None:
    with pytest.raises(ValidationError, match="invalid container ID"):
        CheckpointOptions(container_id=ref, image_path=Path("/x"))


def test_tcp_established_and_tcp_close_contradict() -> None:
    with pytest.raises(ValidationError, match="contradict"):
        CheckpointOptions(container_id="a", image_path=Path("/x"), tcp_established=True, tcp_close=True)
