"""runc + CRIU: one flag table per verb, one mapping function, as runc's checkpoint.go reads.

An option goes to a runc flag when this runc has it; else to a CRIU config file handed over
through CRIU_CONFIG_FILE, but only for options runc does not send over RPC itself (CRIU reads
CRIU_CONFIG_FILE before the RPC options, so an RPC field would override it); else it is refused.
crgpu never writes /etc/criu/runc.conf: it is global to the node.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from crgpu.criu.binary import config_text, require_criu
from crgpu.host.errors import PreconditionError
from crgpu.options.models import CheckpointOptions, RestoreOptions
from crgpu.options.table import OPTIONS, options_for
from crgpu.runtimes.base import (
    RUNTIME_STATUS_FD,
    BinaryAdapter,
    ContainerInfo,
    Invocation,
    RuntimeBinary,
    option_flag,
)
from crgpu.runtimes.capabilities import binary_from_texts, cached_texts, resolve_binary, run_capture

CRIU_CONFIG_ENV = "CRIU_CONFIG_FILE"

DUMP_CONFIG_NAME = "crgpu-criu-dump.conf"
RESTORE_CONFIG_NAME = "crgpu-criu-restore.conf"


@dataclass(frozen=True)
class OptionRoute:
    """How one boolean option reaches CRIU: a runc flag, or a CRIU config key when runc lacks it."""

    field: str
    flag: str | None
    criu_key: str | None


def _routes(verb: str) -> tuple[OptionRoute, ...]:
    return tuple(
        OptionRoute(option.name, option.runc_flag, option.criu_key)
        for option in options_for(verb)
        if option.runc_flag or option.criu_key
    )


CHECKPOINT_ROUTES = _routes("checkpoint")
RESTORE_ROUTES = _routes("restore")
RUNSC_ONLY = tuple(option.name for option in OPTIONS if option.runc_refused)


def discover_runc() -> RuntimeBinary:
    path = resolve_binary("runc")
    texts = cached_texts(
        path,
        {
            "version": [str(path), "--version"],
            "checkpoint": [str(path), "checkpoint", "--help"],
            "restore": [str(path), "restore", "--help"],
        },
    )
    return runc_binary_from_texts(path, texts)


def runc_binary_from_texts(path: Path, texts: dict[str, str]) -> RuntimeBinary:
    return binary_from_texts("runc", path, texts)


def _no_runsc_options(values: dict[str, object]) -> None:
    for field in RUNSC_ONLY:
        if values.get(field):
            raise PreconditionError(
                f"{option_flag(field)} is a runsc option; runc (CRIU) has no such setting",
                hint=f"drop {option_flag(field)} for runc containers",
            )


def _no_runtime_flags(flags: tuple[str, ...]) -> None:
    if flags:
        raise PreconditionError(
            "--runtime-flag is for runsc's global flags; crgpu passes no global flags to runc",
            hint="drop --runtime-flag for runc containers",
        )


class RuncAdapter(BinaryAdapter):
    name = "runc"

    def _base(self, root: Path, debug: bool = False) -> list[str]:
        return [str(self.binary.path), *(["--debug"] if debug else []), "--root", str(root)]

    def _map_routes(
        self,
        routes: tuple[OptionRoute, ...],
        values: dict[str, object],
        flags: frozenset[str],
        verb: str,
    ) -> tuple[list[str], list[str], list[str]]:
        args: list[str] = []
        config: list[str] = []
        notes: list[str] = []
        for route in routes:
            value = values.get(route.field)
            if not value:
                continue
            if route.flag and route.flag in flags:
                args += [f"--{route.flag}"] if value is True else [f"--{route.flag}", str(value)]
            elif route.criu_key:
                config.append(route.criu_key)
                why = (
                    f"{self.label} has no --{route.flag} flag" if route.flag else "no runc has a flag for it"
                )
                notes.append(
                    f"{option_flag(route.field)} reaches CRIU as `{route.criu_key}` in a CRIU config file: {why}"
                )
            else:
                raise PreconditionError(
                    f"{option_flag(route.field)} cannot reach CRIU through {self.label}: "
                    f"its `{verb}` has no --{route.flag} flag",
                    hint=f"use a runc that has `{verb} --{route.flag}`, or drop the option",
                )
        return args, config, notes

    def _cgroups_args(self, mode: str | None, flags: frozenset[str], verb: str) -> list[str]:
        if mode is None:
            return []
        if "manage-cgroups-mode" not in flags:
            raise PreconditionError(f"--manage-cgroups-mode is not accepted by {self.label} {verb}")
        if mode == "ignore" and "ignore" not in self.binary.help_texts.get(verb, ""):
            raise PreconditionError(
                f"--manage-cgroups-mode ignore needs runc 1.2 or newer; this is {self.label}",
                hint="use soft, full or strict, or a newer runc",
            )
        return ["--manage-cgroups-mode", mode]

    def _config(
        self, entries: list[str], work_dir: Path, name: str, purpose: str, notes: list[str]
    ) -> tuple[dict[str, str], str | None, Path | None]:
        if not entries:
            return {}, None, None
        path = work_dir / name
        if os.environ.get(CRIU_CONFIG_ENV):
            notes.append(f"{CRIU_CONFIG_ENV} from the environment is replaced by {path} for this call")
        return {CRIU_CONFIG_ENV: str(path)}, config_text(entries, purpose), path

    def checkpoint_invocation(
        self, opts: CheckpointOptions, info: ContainerInfo, work_dir: Path, criu_extra: tuple[str, ...] = ()
    ) -> Invocation:
        _no_runtime_flags(opts.runtime_flags)
        _no_runsc_options(opts.model_dump())
        flags = self.binary.checkpoint_flags
        args, config, notes = self._map_routes(CHECKPOINT_ROUTES, opts.model_dump(), flags, "checkpoint")
        config += criu_extra
        args += self._cgroups_args(opts.manage_cgroups_mode, flags, "checkpoint")
        env, text, path = self._config(config, work_dir, DUMP_CONFIG_NAME, f"checkpoint of {info.id}", notes)
        before: list[list[str]] = []
        if opts.pre_dump:
            if "pre-dump" not in flags:
                raise PreconditionError(f"--pre-dump is not accepted by {self.label} checkpoint")
            # Round k dumps into IMAGE/predump-k against round k-1; the final dump against the last.
            # CRIU wants --parent-path relative to the image dir it is given.
            for k in range(1, opts.pre_dump + 1):
                parent = ["--parent-path", f"../predump-{k - 1}"] if k > 1 else []
                before.append(
                    [
                        *self._base(info.root, opts.runtime_debug),
                        "checkpoint",
                        "--pre-dump",
                        "--image-path",
                        str(opts.image_dir / f"predump-{k}"),
                        "--work-path",
                        str(work_dir / f"predump-{k}"),
                        *parent,
                        *[a for a in args if a != "--leave-running"],
                        "--",
                        info.id,
                    ]
                )
            args = [*args, "--parent-path", f"predump-{opts.pre_dump}"]
        if opts.lazy_pages:
            if "lazy-pages" not in flags or "status-fd" not in flags:
                raise PreconditionError(f"--lazy-pages is not accepted by {self.label} checkpoint")
            assert opts.page_server is not None  # the options model requires it
            # CRIU writes a NUL byte to crgpu's pipe, which the runtime sees as STATUS_FD, once it
            # serves the pages; crgpu then writes crgpu.json and tells --status-fd.
            args += ["--lazy-pages", "--page-server", opts.page_server, "--status-fd", str(RUNTIME_STATUS_FD)]
            notes.append(
                f"the pages stay in this container's memory and are served at {opts.page_server} until a "
                "lazy restore has them all; crgpu.json is written as soon as the image can be restored"
            )
        argv = [
            *self._base(info.root, opts.runtime_debug),
            "checkpoint",
            "--image-path",
            str(opts.image_dir),
            "--work-path",
            str(work_dir),
            *args,
            "--",
            info.id,
        ]
        return Invocation(
            argv=argv, env=env, criu_config=text, criu_config_path=path, notes=notes, before=before
        )

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
        _no_runtime_flags(opts.runtime_flags)
        _no_runsc_options(opts.model_dump())
        if global_flags:
            notes_before = [
                f"the image's runtime global flags are not used (runc takes none from an image): {' '.join(global_flags)}"
            ]
        else:
            notes_before = []
        flags = self.binary.restore_flags
        args, config, notes = self._map_routes(RESTORE_ROUTES, opts.model_dump(), flags, "restore")
        config += criu_extra
        notes = notes_before + notes
        args += self._cgroups_args(opts.manage_cgroups_mode, flags, "restore")
        if opts.detach:
            args.append("--detach")
        if opts.pid_file is not None:
            args += ["--pid-file", str(opts.pid_file)]
        helper: list[str] = []
        if opts.lazy_pages:
            if "lazy-pages" not in flags:
                raise PreconditionError(f"--lazy-pages is not accepted by {self.label} restore")
            args.append("--lazy-pages")
            remote: list[str] = []
            if opts.page_server:
                address, _, port = opts.page_server.rpartition(":")
                remote = ["--page-server", "--address", address, "--port", port]
            # CRIU's restore finds the daemon through lazy-pages.socket in the work dir.
            helper = [
                require_criu(),
                "lazy-pages",
                "--images-dir",
                str(opts.image_dir),
                "--work-dir",
                str(work_dir),
                *remote,
                "-o",
                "lazy-pages.log",
                "-v4",
            ]
            notes.append("memory pages arrive after the container runs, served by CRIU's lazy-pages daemon")
        env, text, path = self._config(
            config, work_dir, RESTORE_CONFIG_NAME, f"restore of {container_id}", notes
        )
        argv = [
            *self._base(root, opts.runtime_debug),
            "restore",
            "--image-path",
            str(opts.image_dir),
            "--work-path",
            str(work_dir),
            "--bundle",
            str(bundle),
            *args,
            "--",
            container_id,
        ]
        return Invocation(
            argv=argv, env=env, criu_config=text, criu_config_path=path, notes=notes, helper_argv=helper
        )

    def status(self, container_id: str, root: Path) -> str | None:
        """runc's own view (`running`, `paused`, `stopped`, ...), or None when it has none."""
        out = run_capture([*self._base(root), "state", "--", container_id])
        try:
            return str(json.loads(out).get("status"))
        except ValueError:
            return None

    def cleanup_after_checkpoint(self, container_id: str, root: Path) -> None:
        """runc removes a container it checkpointed without --leave-running itself."""

    def pause(self, container_id: str, root: Path) -> None:
        run_capture([*self._base(root), "pause", "--", container_id])

    def resume(self, container_id: str, root: Path) -> None:
        run_capture([*self._base(root), "resume", "--", container_id])

    def delete(self, container_id: str, root: Path) -> None:
        run_capture([*self._base(root), "delete", "--force", "--", container_id])

    def check_gpu_restore(self, force: bool, global_flags: tuple[str, ...] = ()) -> list[str]:
        return []

    def log_paths(self, verb: str, work_dir: Path, global_flags: list[str]) -> list[Path]:
        return [work_dir / ("dump.log" if verb == "checkpoint" else "restore.log")]
