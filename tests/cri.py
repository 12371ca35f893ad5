"""A small CRI client, driving containerd's CRI plugin as a kubelet does: gRPC calls to
`runtime.v1.RuntimeService`/`ImageService` with the request messages encoded by hand (field numbers
from k8s.io/cri-api's api.proto, v1), so the tests need grpcio and nothing generated."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

# tests/__init__.py turns grpc's fork support off before anything can load grpc; a module that
# loaded it first (a stray import, a plugin) would bring back runc's "exit -6": say so at once.
if os.environ.get("GRPC_ENABLE_FORK_SUPPORT") != "false":
    raise ImportError("grpc was loaded with its fork support on; tests/__init__.py must turn it off first")

from crgpu.criu.protobuf import iter_fields
from tests.criu_forge import Fields, encode

# NamespaceMode (api.proto): the kubelet's PID namespace choice; CONTAINER is the one CRIU can
# checkpoint here (a shared pod PID namespace failed `Can't fork for 51: File exists`).
NS_POD, NS_CONTAINER, NS_NODE = 0, 1, 2
# ContainerState (api.proto).
CONTAINER_CREATED, CONTAINER_RUNNING, CONTAINER_EXITED = 0, 1, 2


def _s(number: int, text: str) -> tuple[int, bytes]:
    return number, text.encode()


def _m(number: int, fields: Fields) -> tuple[int, bytes]:
    return number, encode(fields)


def _map(number: int, values: Mapping[str, str]) -> Fields:
    return [_m(number, [_s(1, key), _s(2, value)]) for key, value in values.items()]


# The kubelet's defaults (k8s.io/kubernetes pkg/securitycontext/util.go) for a container that is
# not privileged.
KUBELET_MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip
KUBELET_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def _repeated(number: int, values: Iterable[str]) -> Fields:
    return [_s(number, value) for value in values]


def _decode(data: bytes) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for number, value in iter_fields(data):
        out.setdefault(number, []).append(value)
    return out


def _text(fields: dict[int, list[Any]], number: int) -> str:
    values = fields.get(number)
    return values[-1].decode() if values else ""


def _int(fields: dict[int, list[Any]], number: int) -> int:
    values = fields.get(number)
    return int(values[-1]) if values else 0


def _decode_map(fields: dict[int, list[Any]], number: int) -> dict[str, str]:
    out = {}
    for entry in fields.get(number, []):
        parts = _decode(entry)
        out[_text(parts, 1)] = _text(parts, 2)
    return out


@dataclass
class Pod:
    """A pod sandbox as the kubelet describes it: its config goes with every CreateContainer."""

    name: str
    namespace: str = "default"
    uid: str = ""
    pid_mode: int = NS_CONTAINER
    id: str = ""

    def config(self) -> Fields:
        namespaces = _m(1, [(2, self.pid_mode)])
        return [
            _m(1, [_s(1, self.name), _s(2, self.uid or f"uid-{self.name}"), _s(3, self.namespace), (4, 0)]),
            _s(2, self.name),
            _m(8, [_m(2, [namespaces])]),
        ]


@dataclass
class ContainerStatus:
    id: str
    name: str
    state: int
    image: str
    image_ref: str
    exit_code: int
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


class CRI:
    """containerd's CRI over its socket; each call fails with grpc.RpcError as a kubelet would
    see it (the tests read `.details()`)."""

    def __init__(self, socket: str) -> None:
        self.channel = grpc.insecure_channel(f"unix://{socket}")

    def _call(self, service: str, method: str, request: Fields, timeout: float = 120) -> dict[int, list[Any]]:
        stub = self.channel.unary_unary(
            f"/runtime.v1.{service}/{method}",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        return _decode(stub(encode(request), timeout=timeout))

    def version(self) -> str:
        return _text(self._call("RuntimeService", "Version", [_s(1, "v1")]), 4)

    def pull(self, image: str) -> str:
        """PullImage, as the kubelet pulls a pod's image; the image's reference (its ID)."""
        return _text(self._call("ImageService", "PullImage", [_m(1, [_s(1, image)])]), 1)

    def run_pod(self, pod: Pod) -> str:
        pod.id = _text(self._call("RuntimeService", "RunPodSandbox", [_m(1, pod.config())]), 1)
        return pod.id

    def create(
        self,
        pod: Pod,
        name: str,
        image: str,
        command: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> str:
        security: Fields = [
            _m(3, [(2, pod.pid_mode)]),
            *_repeated(13, KUBELET_MASKED_PATHS),
            *_repeated(14, KUBELET_READONLY_PATHS),
            _m(15, []),
        ]
        config: Fields = [
            _m(1, [_s(1, name), (2, 0)]),
            _m(2, [_s(1, image), _s(18, image)]),
            *_repeated(3, command),
            *_map(9, labels or {}),
            *_map(10, annotations or {}),
            # security_context as a kubelet fills it: the pod's PID namespace mode, its default
            # masked and read-only paths (containerd takes an empty list as none), and seccomp
            # RuntimeDefault (an empty SecurityProfile: profile_type 0), as with SeccompDefault.
            _m(15, [_m(2, security)]),
        ]
        request = [_s(1, pod.id), _m(2, config), _m(3, pod.config())]
        return _text(self._call("RuntimeService", "CreateContainer", request), 1)

    def start(self, container_id: str) -> None:
        self._call("RuntimeService", "StartContainer", [_s(1, container_id)])

    def status(self, container_id: str) -> ContainerStatus:
        status = _decode(self._call("RuntimeService", "ContainerStatus", [_s(1, container_id)])[1][0])
        metadata = _decode(status[2][0]) if 2 in status else {}
        image = _decode(status[8][0]) if 8 in status else {}
        return ContainerStatus(
            id=_text(status, 1),
            name=_text(metadata, 1),
            state=_int(status, 3),
            image=_text(image, 1),
            image_ref=_text(status, 9),
            exit_code=_int(status, 7),
            labels=_decode_map(status, 12),
            annotations=_decode_map(status, 13),
        )

    def checkpoint(self, container_id: str, location: str) -> None:
        self._call("RuntimeService", "CheckpointContainer", [_s(1, container_id), _s(2, location)])

    def stop(self, container_id: str) -> None:
        self._call("RuntimeService", "StopContainer", [_s(1, container_id), (2, 0)])

    def remove(self, container_id: str) -> None:
        self._call("RuntimeService", "RemoveContainer", [_s(1, container_id)])

    def stop_pod(self, pod_id: str) -> None:
        self._call("RuntimeService", "StopPodSandbox", [_s(1, pod_id)])

    def remove_pod(self, pod_id: str) -> None:
        self._call("RuntimeService", "RemovePodSandbox", [_s(1, pod_id)])

    def close(self) -> None:
        self.channel.close()
