"""Node settings: flag, then environment, then /etc/crgpu/config.toml, then the built-in default.

Flags are applied by their callers; this module resolves the rest and says where each value
came from (`crgpu doctor` shows it). Standard library only: shell completion imports it.
"""

from __future__ import annotations

import os
import stat as statmod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crgpu.host.errors import PreconditionError, UsageError

DEFAULT_CONFIG = Path("/etc/crgpu/config.toml")
CONFIG_ENV = "CRGPU_CONFIG"


@dataclass(frozen=True)
class Setting:
    env: str
    default: str | list[str] | None
    is_list: bool = False
    help: str = ""


SETTINGS: dict[str, Setting] = {
    "runtime": Setting("CRGPU_RUNTIME", "auto", help="runc, runsc or auto"),
    "runc": Setting("CRGPU_RUNC", None, help="the runc binary (default: runc on PATH)"),
    "runsc": Setting("CRGPU_RUNSC", None, help="the runsc binary (default: runsc on PATH)"),
    "runc_roots": Setting(
        "CRGPU_RUNC_ROOTS",
        ["/run/runc", "/run/containerd/runc/*", "/run/docker/runtime-runc/moby"],
        is_list=True,
        help="runc state roots to search (globs allowed)",
    ),
    "runsc_roots": Setting(
        "CRGPU_RUNSC_ROOTS",
        ["/var/run/runsc", "/run/containerd/runsc/*"],
        is_list=True,
        help="runsc state roots",
    ),
    "cuda_checkpoint_path": Setting(
        "CRGPU_CUDA_CHECKPOINT_PATH", None, help="cuda-checkpoint's path inside runsc GPU containers"
    ),
    "node_key": Setting(
        "CRGPU_NODE_KEY",
        "/var/lib/crgpu/node.key",
        help="this node's key for signing manifests (made 0600 on first checkpoint)",
    ),
    "docker_data_root": Setting(
        "CRGPU_DOCKER_DATA_ROOT",
        "/var/lib/docker",
        help="Docker's data root: container names (config.v2.json) and --hand-off checkpoints "
        "(unset: the running dockerd's --data-root, else its daemon.json's data-root)",
    ),
    "work_root": Setting(
        "CRGPU_WORK_ROOT", "/var/lib/crgpu/work", help="where restore and failed-checkpoint work dirs go"
    ),
}

_override: Path | None = None
_cache: dict[tuple[str, int], dict[str, Any]] = {}


@dataclass(frozen=True)
class Resolved:
    name: str
    value: Any
    source: str


def set_config_file(path: Path | None) -> None:
    """`--config PATH`: wins over $CRGPU_CONFIG and the default location."""
    global _override
    _override = path


def config_file() -> tuple[Path, str]:
    if _override is not None:
        return _override, "--config"
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env), f"environment ({CONFIG_ENV})"
    return DEFAULT_CONFIG, "default"


def _load() -> dict[str, Any]:
    path, source = config_file()
    try:
        stat = path.stat()
    except FileNotFoundError:
        if source != "default":
            raise UsageError(
                f"config file {path} does not exist", hint=f"fix {source} or create the file"
            ) from None
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from exc
    key = (str(path), stat.st_mtime_ns)
    if key not in _cache:
        _require_private(path, source)
        import tomllib  # only where a config file exists: 3 ms of every call otherwise

        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"config file {path} is not valid TOML: {exc}", hint="fix the file") from exc
        for name, value in data.items():
            setting = SETTINGS.get(name)
            if setting is None:
                known = ", ".join(SETTINGS)
                raise UsageError(f"unknown setting {name!r} in {path}", hint=f"known settings: {known}")
            good = (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
                if setting.is_list
                else isinstance(value, str)
            )
            if not good:
                kind = "a list of strings" if setting.is_list else "a string"
                raise UsageError(f"setting {name!r} in {path} must be {kind}", hint="fix the file")
        _cache[key] = data
    return _cache[key]


def _require_private(path: Path, source: str) -> None:
    """A config file names the binaries crgpu runs as root: read only when nobody but root (or
    the user running crgpu) can change it, the file itself and every directory above it, as
    sshd's StrictModes and sudo check theirs. A sticky directory (/tmp) may be writable by all."""
    allowed = {0, os.geteuid()}
    given = Path(os.path.abspath(path))
    for place in dict.fromkeys(
        [given, *given.parents, Path(os.path.realpath(path)), *Path(os.path.realpath(path)).parents]
    ):
        try:
            st = os.lstat(place)
        except OSError as exc:
            raise PreconditionError(f"cannot check the config file {path}: {exc.strerror}") from exc
        sticky_dir = statmod.S_ISDIR(st.st_mode) and st.st_mode & statmod.S_ISVTX
        writable = st.st_mode & 0o022 and not statmod.S_ISLNK(st.st_mode) and not sticky_dir
        if st.st_uid not in allowed or writable:
            what = (
                "the config file" if place == given else f"{place}, a directory above the config file {path},"
            )
            owner = "owned by uid " + str(st.st_uid) if st.st_uid not in allowed else "writable by others"
            raise PreconditionError(
                f"{what} is {owner}: crgpu does not read settings others can change ({source})",
                hint=f"chown root {place} && chmod go-w {place}",
            )


def get(name: str) -> Resolved:
    """The value of a setting and where it came from (environment, config file, default)."""
    setting = SETTINGS[name]
    env = os.environ.get(setting.env)
    if env is not None and env != "":
        value: Any = [part for part in env.split(":") if part] if setting.is_list else env
        return Resolved(name, value, f"environment ({setting.env})")
    data = _load()
    if name in data:
        return Resolved(name, data[name], f"config ({config_file()[0]})")
    return Resolved(name, setting.default, "default")


def effective() -> list[Resolved]:
    return [get(name) for name in SETTINGS]
