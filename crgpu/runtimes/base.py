"""What every runtime adapter shares: invocations, container facts, binaries and their flags."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from crgpu.errors import NotFoundError, RuntimeFailed
from crgpu.versions import version_tuple

if TYPE_CHECKING:
    from crgpu.options import CheckpointOptions, RestoreOptions

HELP_TIMEOUT_S = 10.0
CACHE_SCHEMA = 1


@dataclass(frozen=True)
class Invocation:
    """One runtime call, complete: what --dry-run prints and process.py runs."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    criu_config: str | None = None
    criu_config_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    # The runtime's global flags this call uses (runsc: the sandbox's, carried into crgpu.json).
    global_flags: list[str] = field(default_factory=list)
    # A helper crgpu runs beside the runtime: CRIU's lazy-pages daemon for a lazy restore.
    helper_argv: list[str] = field(default_factory=list)
    # Runs before `argv`, in order: pre-dump rounds.
    before: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class ContainerInfo:
    """A container as found in a runtime's state root."""

    id: str
    runtime: str
    root: Path
    state_path: Path
    pid: int | None = None
    bundle: Path | None = None
    gpu: bool = False
    status: str | None = None
    global_flags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RuntimeBinary:
    """A runtime executable and the flags its help texts say it accepts."""

    name: str
    path: Path
    version: str
    checkpoint_flags: frozenset[str]
    restore_flags: frozenset[str]
    global_flags: frozenset[str] = frozenset()
    help_texts: dict[str, str] = field(default_factory=dict)

    def version_tuple(self) -> tuple[int, ...]:
        return version_tuple(self.version)


def option_flag(field: str) -> str:
    """The crgpu flag of an options field: `link_remap` -> `--link-remap`."""
    return "--" + field.replace("_", "-")


class BinaryAdapter:
    """What both adapters share: the binary they drive, and how they name it to the operator."""

    name = ""

    def __init__(self, binary: RuntimeBinary) -> None:
        self.binary = binary

    @property
    def label(self) -> str:
        return f"{self.name} {self.binary.version}"


class RuntimeAdapter(Protocol):
    """What plan, checkpoint and restore need of a runtime; runc.py and runsc.py each implement it."""

    name: str
    binary: RuntimeBinary

    @property
    def label(self) -> str: ...

    def checkpoint_invocation(
        self, opts: CheckpointOptions, info: ContainerInfo, work_dir: Path
    ) -> Invocation: ...

    def restore_invocation(
        self,
        opts: RestoreOptions,
        container_id: str,
        root: Path,
        bundle: Path,
        work_dir: Path,
        global_flags: list[str],
    ) -> Invocation: ...

    def status(self, container_id: str, root: Path) -> str | None: ...

    def cleanup_after_checkpoint(self, container_id: str, root: Path) -> None: ...

    def resume(self, container_id: str, root: Path) -> None: ...

    def delete(self, container_id: str, root: Path) -> None: ...

    def check_gpu_restore(self, force: bool) -> list[str]: ...

    def log_paths(self, verb: str, work_dir: Path, global_flags: list[str]) -> list[Path]: ...


_OPTION_LINE = re.compile(r"^\s{1,8}(-{1,2}[A-Za-z0-9].*)$")
_OPTION_NAME = re.compile(r"(?:^|,\s*)-{1,2}([A-Za-z0-9][\w-]*)")


def parse_help_flags(text: str) -> frozenset[str]:
    """Flag names (no dashes) from a urfave/cli (runc) or Go `flag` (runsc) help text."""
    names: set[str] = set()
    for line in text.splitlines():
        match = _OPTION_LINE.match(line)
        if not match:
            continue
        # The spec ends where the description starts: a tab or a run of spaces.
        spec = re.split(r"\t|\s{2,}", match.group(1), maxsplit=1)[0]
        names.update(_OPTION_NAME.findall(spec))
    return frozenset(names)


def binary_from_texts(name: str, path: Path, texts: dict[str, str]) -> RuntimeBinary:
    """What a runtime binary accepts, from the outputs of `--version`, `checkpoint --help`,
    `restore --help` and (runsc) `flags`."""
    first = texts["version"].strip().splitlines()
    version = first[0].removeprefix(f"{name} version ").strip() if first else "unknown"
    return RuntimeBinary(
        name=name,
        path=path,
        version=version,
        checkpoint_flags=parse_help_flags(texts["checkpoint"]),
        restore_flags=parse_help_flags(texts["restore"]),
        global_flags=parse_help_flags(texts.get("flags", "")),
        help_texts=texts,
    )


def resolve_binary(name: str) -> Path:
    """The runtime binary: from $CRGPU_RUNC/$CRGPU_RUNSC or the node config when set, else PATH."""
    from crgpu import config

    chosen = config.get(name)
    if chosen.value:
        path = Path(chosen.value)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise NotFoundError(
                f"{name} = {chosen.value} from {chosen.source} is not an executable file",
                hint=f"point it at a {name} binary, or unset it to use the one on PATH",
            )
        return path.absolute()
    found = shutil.which(name)
    if not found:
        raise NotFoundError(
            f"{name} not found on PATH",
            hint=f"install {name} (Debian: apt-get install {name}) or set CRGPU_{name.upper()}",
        )
    return Path(found)


def run_capture(argv: list[str], timeout: float = HELP_TIMEOUT_S) -> str:
    """Run a short query command (help, version); its stdout and stderr together."""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeFailed(
            f"{' '.join(argv)} did not answer within {timeout:.0f} s",
            hint="the binary hangs: check it by hand",
        ) from exc
    except OSError as exc:
        raise NotFoundError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    return done.stdout + done.stderr


def _cache_file() -> Path:
    base = os.environ.get("CRGPU_CACHE_DIR")
    if base:
        return Path(base) / "capabilities.json"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "crgpu" / "capabilities.json"


def _cache_key(path: Path) -> str:
    stat = path.stat()
    return f"{path}|{stat.st_mtime_ns}|{stat.st_size}"


def _load_cache() -> dict[str, dict[str, str]]:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != CACHE_SCHEMA:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _store_cache(entries: dict[str, dict[str, str]]) -> None:
    target = _cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"schema": CACHE_SCHEMA, "entries": entries}))
        os.replace(tmp, target)
    except OSError:
        pass  # a cache that cannot be written only costs the next run a few help calls


def cached_texts(path: Path, queries: dict[str, list[str]]) -> dict[str, str]:
    """The output of each query argv for this binary, cached per binary path, mtime and size."""
    key = _cache_key(path)
    entries = _load_cache()
    entry = entries.get(key)
    if entry is not None and set(queries) <= set(entry):
        return {name: entry[name] for name in queries}
    texts = {name: run_capture(argv) for name, argv in queries.items()}
    # Drop stale entries of this same binary path (an upgrade changes mtime).
    prefix = f"{path}|"
    entries = {k: v for k, v in entries.items() if not k.startswith(prefix)}
    entries[key] = texts
    _store_cache(entries)
    return texts
