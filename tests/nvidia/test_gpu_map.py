"""The GPU map of a CUDA restore: every GPU of the image's host paired, the container's GPUs sent
to the GPUs the restored container was given, each pair of the same model."""

from __future__ import annotations

from typing import Any

import pytest

from crgpu.host.errors import PreconditionError
from crgpu.nvidia.gpu import Gpu
from crgpu.nvidia.gpu_map import given_gpus, plan_device_map


def _uuid(n: int) -> str:
    return f"GPU-00000000-0000-0000-0000-{n:012x}"


def _gpus(*models: str, base: int = 0) -> list[Gpu]:
    return [Gpu(name=m, uuid=_uuid(base + i), memory_mib=80_000, minor=i) for i, m in enumerate(models)]


H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"


def test_nothing_moves_on_the_same_gpus() -> None:
    node = _gpus(H100, H100)
    assert plan_device_map(node, [_uuid(0)], node, None) == (None, [])
    assert plan_device_map(node, [_uuid(0)], node, [_uuid(0)]) == (None, [])


def test_a_container_restored_onto_another_gpu_of_the_same_node_swaps_the_pair() -> None:
    node = _gpus(H100, H100)
    pairs, warnings = plan_device_map(node, [_uuid(0)], node, [_uuid(1)])
    assert pairs == {_uuid(0): _uuid(1), _uuid(1): _uuid(0)} and warnings == []


def test_every_gpu_of_the_image_host_is_paired_with_one_of_the_same_model() -> None:
    then = _gpus(H100, A100, H100)
    here = _gpus(A100, H100, H100, base=0x100)
    pairs, warnings = plan_device_map(then, [_uuid(2)], here, [_uuid(0x102)])
    assert pairs == {_uuid(2): _uuid(0x102), _uuid(0): _uuid(0x101), _uuid(1): _uuid(0x100)}
    assert warnings == []
    assert len(set(pairs.values())) == len(pairs)  # no GPU receives two


def test_a_used_gpu_without_a_target_of_its_model_is_refused_before_anything_runs() -> None:
    with pytest.raises(PreconditionError, match=r"no free GPU of that model.*A100"):
        plan_device_map(_gpus(H100), None, _gpus(A100, base=9), None)


def test_an_unused_gpu_the_new_host_lacks_is_a_warning_not_a_refusal() -> None:
    then = _gpus(H100, H100)  # the job used one of two
    here = _gpus(H100, base=0x100)
    pairs, warnings = plan_device_map(then, [_uuid(1)], here, None)
    assert pairs == {_uuid(1): _uuid(0x100)}
    assert len(warnings) == 1 and _uuid(0) in warnings[0] and "did not use" in warnings[0]


def _spec(
    env: list[str] | None = None, devices: list[str] | None = None, **annotations: str
) -> dict[str, Any]:
    return {
        "process": {"env": env or []},
        "linux": {"devices": [{"path": d} for d in devices or []]},
        "annotations": annotations,
    }


@pytest.mark.parametrize(
    ("spec", "given"),
    [
        (
            _spec(devices=["/dev/nvidiactl", "/dev/nvidia2", "/dev/nvidia-uvm"]),
            [_uuid(2)],
        ),  # CDI, device nodes
        (_spec(env=["NVIDIA_VISIBLE_DEVICES=1,3"]), [_uuid(1), _uuid(3)]),  # hook, --gpus '"device=1,3"'
        (_spec(env=[f"NVIDIA_VISIBLE_DEVICES={_uuid(3)}"]), [_uuid(3)]),
        (_spec(env=["NVIDIA_VISIBLE_DEVICES=all"]), [_uuid(i) for i in range(4)]),
        (_spec(env=["NVIDIA_VISIBLE_DEVICES=none"]), []),
        (_spec(**{"cdi.k8s.io/nvidia": "nvidia.com/gpu=0"}), [_uuid(0)]),
        (_spec(env=["NVIDIA_VISIBLE_DEVICES=MIG-1234"]), None),  # crgpu cannot tell: all of them
        (_spec(), None),
    ],
)
def test_the_gpus_a_spec_gives_its_container(spec: dict[str, Any], given: list[str] | None) -> None:
    assert given_gpus(spec, _gpus(H100, H100, H100, H100)) == given
