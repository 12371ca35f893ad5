"""gVisor runsc: one table per verb, one mapping function, the sandbox's global flags carried over.

runsc takes Go-style flags; global flags go before the verb and must match the ones the sandbox
was started with, so they are read back from the sandbox process's command line at checkpoint
and stored in crgpu.json for restore.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from crgpu.host.errors import PreconditionError
from crgpu.nvidia.gpu import driver_version
from crgpu.options.models import CheckpointOptions, RestoreOptions
from crgpu.options.runsc_flags import carried_globals, flag_key, has_nvproxy, set_global
from crgpu.options.table import OPTIONS, options_for
from crgpu.runtimes.base import BinaryAdapter, ContainerInfo, Invocation, RuntimeBinary, option_flag
from crgpu.runtimes.capabilities import binary_from_texts, cached_texts, resolve_binary, run_capture

# Options CRIU has and runsc does not (what crgpu tells the operator), and runsc's own verb flags.
HANDLED_IN_SANDBOX = {o.name: o.runsc.value for o in OPTIONS if o.runsc.kind == "sandbox"}
REFUSED = {o.name: o.runsc.value for o in OPTIONS if o.runsc.kind == "refused"}


def _verb_flags(verb: str) -> dict[str, str]:
    return {o.name: o.runsc.value for o in options_for(verb) if o.runsc.kind == "flag"}


def discover_runsc() -> RuntimeBinary:
    path = resolve_binary("runsc")
    texts = cached_texts(
        path,
        {
            "version": [str(path), "--version"],
            "checkpoint": [str(path), "checkpoint", "--help"],
            "restore": [str(path), "restore", "--help"],
            "flags": [str(path), "flags"],
            "help": [str(path), "--help"],
        },
    )
    return runsc_binary_from_texts(path, texts)


def runsc_binary_from_texts(path: Path, texts: dict[str, str]) -> RuntimeBinary:
    return binary_from_texts("runsc", path, texts)


class RunscAdapter(BinaryAdapter):
    name = "runsc"

    def _base(self, root: Path, global_flags: list[str]) -> list[str]:
        return [str(self.binary.path), f"--root={root}", *global_flags]

    def _tcp_globals(self, flags: list[str], wanted: bool) -> list[str]:
        if not wanted:
            return flags
        if "allow-connected-on-save" in self.binary.global_flags:
            return set_global(flags, "allow-connected-on-save", "true")
        if "net-disconnect-ok" in self.binary.global_flags:
            return set_global(flags, "net-disconnect-ok", "false")
        raise PreconditionError(
            f"--tcp-established cannot reach {self.label}: it has neither --allow-connected-on-save "
            "nor --net-disconnect-ok",
            hint="use a newer runsc, or drop --tcp-established",
        )

    def _common_notes(self, values: dict[str, object]) -> list[str]:
        for field, message in REFUSED.items():
            if values.get(field):
                raise PreconditionError(message, hint=f"drop {option_flag(field)} for runsc containers")
        notes = [message for field, message in HANDLED_IN_SANDBOX.items() if values.get(field)]
        if values.get("work_path"):
            notes.append("--work-path is crgpu's own log dir: runsc ignores --work-path")
        return notes

    def _verb_args(self, verb: str, values: dict[str, object], known: frozenset[str]) -> list[str]:
        """The options that are flags of runsc's verb, where this runsc has them; else refused."""
        args: list[str] = []
        for field, flag in _verb_flags(verb).items():
            value = values.get(field)
            if not value:
                continue
            if flag not in known:
                raise PreconditionError(
                    f"{option_flag(field)} cannot reach {self.label}: its {verb} has no --{flag}",
                    hint=f"use a newer runsc, or drop {option_flag(field)}",
                )
            args += [f"--{flag}"] if value is True else [f"--{flag}={value}"]
        return args

    def checkpoint_invocation(
        self, opts: CheckpointOptions, info: ContainerInfo, work_dir: Path, criu_extra: tuple[str, ...] = ()
    ) -> Invocation:
        values = opts.model_dump()
        notes = self._common_notes(values)
        args: list[str] = ["--image-path", str(opts.image_dir)]
        if opts.leave_running:
            args.append("--leave-running")
        cuda_path = opts.cuda_checkpoint_path
        if info.gpu and "cuda-checkpoint-path" not in self.binary.checkpoint_flags:
            raise PreconditionError(
                f"container {info.id!r} uses a GPU (nvproxy) and {self.label} cannot checkpoint GPU state: "
                "it has no --cuda-checkpoint-path (runsc release-20260608 or newer has)",
                hint="upgrade runsc on this node",
            )
        if info.gpu and not cuda_path:
            raise PreconditionError(
                f"container {info.id!r} uses a GPU: runsc needs the path of cuda-checkpoint inside the container",
                hint="give --cuda-checkpoint-path PATH or set CRGPU_CUDA_CHECKPOINT_PATH",
            )
        if info.gpu and cuda_path and info.rootfs is not None:
            inside = info.rootfs / cuda_path.lstrip("/")
            if not os.path.lexists(inside):
                raise PreconditionError(
                    f"--cuda-checkpoint-path {cuda_path} is not in the root filesystem of container {info.id!r} "
                    f"({info.rootfs}): gVisor would skip every CUDA process and save live GPU state",
                    hint="put NVIDIA's cuda-checkpoint into the container image, or give its path there",
                )
        args += self._verb_args("checkpoint", values, self.binary.checkpoint_flags)
        carried, dropped = carried_globals(
            info.global_flags,
            opts.runtime_flags,
            self.binary.global_flags,
            "the sandbox's command line",
        )
        notes += dropped
        global_flags = self._tcp_globals(carried, opts.tcp_established)
        if opts.runtime_debug:
            global_flags = set_global(global_flags, "debug", "true")
        argv = [*self._base(info.root, global_flags), "checkpoint", *args, "--", info.id]
        return Invocation(argv=argv, notes=notes, global_flags=global_flags)

    def restore_invocation(
        self,
        opts: RestoreOptions,
        container_id: str,
        root: Path,
        bundle: Path,
        work_dir: Path,
        global_flags: list[str],
        criu_extra: tuple[str, ...] = (),
    ) -> Invocation:
        notes = self._common_notes(opts.model_dump())
        args = ["--image-path", str(opts.image_dir), "--bundle", str(bundle)]
        if opts.detach:
            args.append("--detach")
        if opts.pid_file is not None:
            args += ["--pid-file", str(opts.pid_file)]
        if opts.lazy_pages:
            if "background" not in self.binary.restore_flags:
                raise PreconditionError(
                    f"--lazy-pages cannot reach {self.label}: its restore has no --background",
                    hint="use a newer runsc (with restore --background), or restore eagerly",
                )
            args.append("--background")
            notes.append(
                "--lazy-pages is runsc's --background: pages load after restore returns (uncompressed images)"
            )
        args += self._verb_args("restore", opts.model_dump(), self.binary.restore_flags)
        carried, dropped = carried_globals(
            global_flags, opts.runtime_flags, self.binary.global_flags, "the image"
        )
        notes += dropped
        flags = self._tcp_globals(carried, opts.tcp_established)
        if opts.runtime_debug:
            flags = set_global(flags, "debug", "true")
        if has_nvproxy(flags):
            notes.append("the sandbox ran with --nvproxy: kept for the restored sandbox")
        argv = [*self._base(root, flags), "restore", *args, "--", container_id]
        return Invocation(argv=argv, notes=notes, global_flags=flags)

    def check_gpu_restore(self, force: bool, global_flags: tuple[str, ...] = ()) -> list[str]:
        """The host driver must be one this runsc supports (`runsc nvproxy list-supported-drivers`),
        unless the sandbox's flags say otherwise: `--nvproxy-driver-version=V` makes runsc use V's
        ABI (V must be supported), `--nvproxy-allow-unsupported-driver` lets any driver through."""
        values = {flag_key(flag): flag.partition("=")[2] or "true" for flag in global_flags}
        pinned = values.get("nvproxy-driver-version")
        allow_any = values.get("nvproxy-allow-unsupported-driver", "false").lower() in ("true", "1", "t")
        if "nvproxy" not in self.binary.help_texts.get("help", ""):
            return [f"{self.label} cannot list its supported drivers: driver support not checked"]
        host = driver_version()
        if host is None:
            raise PreconditionError(
                "the image holds GPU state but this host has no NVIDIA driver",
                hint="restore it on a GPU node",
            )
        supported = run_capture([str(self.binary.path), "nvproxy", "list-supported-drivers"]).split()
        if pinned and pinned != "latest":
            if pinned in supported:
                return [
                    f"the sandbox pins the driver ABI {pinned} (--nvproxy-driver-version): host {host.version} not compared"
                ]
            message = f"the sandbox's --nvproxy-driver-version={pinned} is not among the drivers {self.label} supports"
        elif host.version in supported or pinned == "latest":
            return []
        elif allow_any:
            return [
                f"host driver {host.version} is not in {self.label}'s list; the sandbox allows unsupported drivers"
            ]
        else:
            message = f"host driver {host.version} is not among the drivers {self.label} supports"
        if force:
            return [f"--force: {message}"]
        raise PreconditionError(message, hint="install a supported driver or a newer runsc (or --force)")

    def status(self, container_id: str, root: Path) -> str | None:
        out = run_capture([str(self.binary.path), f"--root={root}", "state", "--", container_id])
        try:
            state = json.loads(out)
        except ValueError:
            return None
        # `runsc state` accepts an ID prefix: only an exact match counts.
        return str(state.get("status")) if state.get("id") == container_id else None

    def cleanup_after_checkpoint(self, container_id: str, root: Path) -> None:
        """runsc leaves the checkpointed sandbox's state behind; remove it so the ID can be restored."""
        self.delete(container_id, root)

    def pause(self, container_id: str, root: Path) -> None:
        run_capture([str(self.binary.path), f"--root={root}", "pause", "--", container_id])

    def resume(self, container_id: str, root: Path) -> None:
        run_capture([str(self.binary.path), f"--root={root}", "resume", "--", container_id])

    def delete(self, container_id: str, root: Path) -> None:
        run_capture([str(self.binary.path), f"--root={root}", "delete", "--force", "--", container_id])

    def log_paths(self, verb: str, work_dir: Path, global_flags: list[str]) -> list[Path]:
        for flag in global_flags:
            if flag_key(flag) == "debug-log" and "=" in flag:
                value = flag.split("=", 1)[1]
                return [Path(re.sub(r"%[A-Z]+%", "*", value))]
        return []
