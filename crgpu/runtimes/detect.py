"""Find which runtime and state root hold a container ID, and what its state says."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crgpu.host import config
from crgpu.host.errors import NotFoundError, PreconditionError, UsageError
from crgpu.host.root import host_path, read_host_text, stat_fields
from crgpu.nvidia.evidence import gpu_verdict
from crgpu.options.models import RuntimeChoice, check_container_id
from crgpu.options.runsc_flags import has_nvproxy, sandbox_global_flags
from crgpu.runtimes.base import ContainerInfo
from crgpu.runtimes.engines import engine_of, resolve_name
from crgpu.runtimes.roots import known_roots
from crgpu.runtimes.state import (
    SPEC_MAX_BYTES,
    bundle_rootfs,
    read_bundle_spec,
    read_small_json,
    state_labels,
)


@dataclass(frozen=True)
class StateLocation:
    runtime: str
    root: Path
    state_path: Path


def runc_state_file(root: Path, container_id: str) -> Path | None:
    path = root / check_container_id(container_id) / "state.json"
    return path if path.is_file() else None


def runsc_state_file(root: Path, container_id: str) -> Path | None:
    pattern = str(root / f"{glob.escape(check_container_id(container_id))}_sandbox:*.state")
    matches = sorted(glob.glob(pattern))
    return Path(matches[0]) if matches else None


def locate(
    container_id: str, runtime: RuntimeChoice = "auto", root: Path | None = None
) -> list[StateLocation]:
    """Every (runtime, root) that holds the ID."""
    check_container_id(container_id)
    runtimes = ["runc", "runsc"] if runtime == "auto" else [runtime]
    found: list[StateLocation] = []
    for name in runtimes:
        roots = [root] if root is not None else known_roots(name)
        finder = runc_state_file if name == "runc" else runsc_state_file
        for candidate in roots:
            state = finder(candidate, container_id)
            if state is not None:
                found.append(StateLocation(name, candidate, state))
    return found


def bundle_holder(bundle: Path, extra_roots: list[Path]) -> tuple[str, Path] | None:
    """The live runc container (ID, state root) whose bundle is `bundle` (its init process alive:
    running, paused or created), searched under the known state roots and `extra_roots`: a
    restore into its bundle would share its root filesystem, cgroup and namespaces. A container
    whose processes are gone (a lazy migration's source, serving its pages) holds nothing."""
    try:
        wanted = bundle.resolve()
    except OSError:
        return None
    roots = dict.fromkeys([*known_roots("runc"), *extra_roots])
    for root in roots:
        for state in sorted(glob.glob(str(glob.escape(str(root)) + "/*/state.json")))[:100_000]:
            data = read_small_json(Path(state), SPEC_MAX_BYTES)
            held = state_labels(data.get("config") or {}).get("bundle")
            if held and Path(held).resolve() == wanted and _init_alive(data):
                return Path(state).parent.name, root
    return None


def check_container_id_ok(value: str) -> bool:
    try:
        check_container_id(value)
    except ValueError:
        return False
    return True


def choose_runtime(cli_value: RuntimeChoice) -> RuntimeChoice:
    """The flag wins; else `$CRGPU_RUNTIME`; else auto."""
    if cli_value != "auto":
        return cli_value
    chosen = config.get("runtime")
    value = str(chosen.value).strip() or "auto"
    if value not in ("auto", "runc", "runsc"):
        raise UsageError(
            f"runtime {value!r} from {chosen.source} is not a runtime",
            hint="set it to runc, runsc or auto",
        )
    return value  # type: ignore[return-value]


def find_container(
    container_id: str, runtime: RuntimeChoice = "auto", root: Path | None = None
) -> ContainerInfo:
    """The container an operator names: a runtime ID, else an engine's name for one."""
    runtime = choose_runtime(runtime)
    found = locate(container_id, runtime, root) if check_container_id_ok(container_id) else []
    if not found:
        resolved = resolve_name(container_id)
        if resolved and resolved != container_id:
            return find_container(resolved, runtime, root)
    if not found:
        searched = (
            [str(root)]
            if root
            else [
                str(r)
                for name in (["runc", "runsc"] if runtime == "auto" else [runtime])
                for r in known_roots(name)
            ]
        )
        where = ", ".join(searched) or "no state root exists"
        raise NotFoundError(
            f"container {container_id!r} not found ({'searched ' + where if searched else where})",
            hint="check the ID with `runc list` / `runsc list` (or the name with `podman ps`, `docker ps`, "
            "`crictl ps`), or give --root and --runtime",
        )
    if len(found) > 1:
        holders = "; ".join(f"{loc.runtime} under {loc.root}" for loc in found)
        raise PreconditionError(
            f"container {container_id!r} is held more than once: {holders}",
            hint="choose one with --runtime and --root",
        )
    loc = found[0]
    reader = _read_runc_state if loc.runtime == "runc" else _read_runsc_state
    return reader(container_id, loc)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PreconditionError(
            f"cannot read the runtime state {path}: {exc}",
            hint="the container's state is damaged or being written: retry, or inspect it by hand",
        ) from exc
    if not isinstance(data, dict):
        raise PreconditionError(f"the runtime state {path} is not a JSON object")
    return data


def _proc_start_and_state(pid: int) -> tuple[int, str] | None:
    """A process's start time (clock ticks after boot, /proc/PID/stat field 22) and state letter."""
    stat = read_host_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat_fields(stat)
    try:
        return int(fields[19]), fields[0]
    except (IndexError, ValueError):
        return None


def _read_small(path: str) -> str | None:
    if not path.startswith("/sys/fs/cgroup/") or "/../" in path:
        return None  # only a cgroup file, whatever the state says
    text = read_host_text(path)
    return None if text is None else text.strip()


def _init_alive(data: dict[str, Any]) -> bool:
    """runc's init process of this state still exists (the PID with the start time runc recorded)."""
    pid, start = data.get("init_process_pid"), data.get("init_process_start")
    if not (isinstance(pid, int) and pid > 0 and isinstance(start, int)):
        return False
    proc = _proc_start_and_state(pid)
    return proc is not None and proc[0] == start and proc[1] not in ("Z", "X", "x")


def _runc_running(state_dir: Path, data: dict[str, Any]) -> bool:
    """Whether runc would call the container `running`, read where runc itself reads it
    (libcontainer's refreshState): its cgroup not frozen, its init process alive with the start
    time runc recorded, and no exec.fifo (that is `created`). False wherever that is not plain:
    the caller then asks `runc state`."""
    pid, start = data.get("init_process_pid"), data.get("init_process_start")
    if not (isinstance(pid, int) and pid > 0 and isinstance(start, int)):
        return False
    cgroups = data.get("cgroup_paths")
    if not isinstance(cgroups, dict):
        return False
    # cgroup v1 (alone or beside v2) has a freezer hierarchy; pure v2 has the one path "".
    if isinstance(cgroups.get("freezer"), str):
        thawed = _read_small(cgroups["freezer"] + "/freezer.state") == "THAWED"
    else:
        thawed = isinstance(cgroups.get(""), str) and _read_small(cgroups[""] + "/cgroup.freeze") == "0"
    return thawed and not os.path.lexists(state_dir / "exec.fifo") and _init_alive(data)


def _read_runc_state(container_id: str, loc: StateLocation) -> ContainerInfo:
    data = _load_json(loc.state_path)
    config = data.get("config") or {}
    labels = state_labels(config)
    devices = [d for d in config.get("devices") or [] if isinstance(d, dict)]
    pid = data.get("init_process_pid")
    bundle = labels.get("bundle")
    # runc keeps the spec's devices and annotations (as labels) in its state; hooks and env are
    # only in the bundle's config.json.
    spec = read_bundle_spec(bundle)
    verdict = gpu_verdict(_with_state(spec, devices, labels))
    return ContainerInfo(
        engine=engine_of(container_id, loc.root, spec, labels),
        id=container_id,
        runtime="runc",
        root=loc.root,
        state_path=loc.state_path,
        pid=pid if isinstance(pid, int) and pid > 0 else None,
        bundle=Path(bundle) if bundle else None,
        rootfs=bundle_rootfs(bundle, spec),
        gpu=verdict.gpu,
        gpu_evidence=verdict.evidence,
        gpu_note=verdict.note,
        status="running" if _runc_running(loc.state_path.parent, data) else None,
    )


def _with_state(
    spec: dict[str, Any], devices: list[dict[str, Any]], labels: dict[str, str]
) -> dict[str, Any]:
    """The bundle's spec with what runc's state adds: its devices, its annotations (as labels)."""
    linux = spec.get("linux")
    linux = linux if isinstance(linux, dict) else {}
    known = linux.get("devices")
    known = known if isinstance(known, list) else []
    annotations = spec.get("annotations")
    annotations = annotations if isinstance(annotations, dict) else {}
    return {
        **spec,
        "linux": {**linux, "devices": [*known, *devices]},
        "annotations": {**labels, **annotations},
    }


def _read_runsc_state(container_id: str, loc: StateLocation) -> ContainerInfo:
    data = _load_json(loc.state_path)
    if data.get("id") != container_id:
        raise NotFoundError(f"container {container_id!r} not found under {loc.root}")
    spec = data.get("spec")
    sandbox = data.get("sandbox") or {}
    pid = sandbox.get("pid")
    bundle = data.get("bundleDir")
    global_flags = sandbox_global_flags(_cmdline(pid)) if isinstance(pid, int) and pid > 0 else []
    verdict = gpu_verdict(
        spec if isinstance(spec, dict) else {}, ["nvproxy-flag"] if has_nvproxy(global_flags) else []
    )
    return ContainerInfo(
        id=container_id,
        runtime="runsc",
        root=loc.root,
        state_path=loc.state_path,
        pid=pid if isinstance(pid, int) and pid > 0 else None,
        bundle=Path(bundle) if bundle else None,
        rootfs=bundle_rootfs(
            bundle if isinstance(bundle, str) else None, spec if isinstance(spec, dict) else {}
        ),
        gpu=verdict.gpu,
        gpu_evidence=verdict.evidence,
        gpu_note=verdict.note,
        status=str(data.get("status")) if data.get("status") else None,
        global_flags=global_flags,
    )


def _cmdline(pid: int) -> list[str]:
    """A process's argv from /proc (under CRGPU_HOST_ROOT in tests); empty when it is gone."""
    try:
        raw = host_path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
