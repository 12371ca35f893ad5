"""What a runtime binary accepts: its help texts parsed for flags, cached per binary path, mtime
and size; the binary itself resolved from the settings or PATH; short query commands run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from crgpu.host.errors import NotFoundError, RuntimeFailed

if TYPE_CHECKING:
    pass
from crgpu.runtimes.base import RuntimeBinary

HELP_TIMEOUT_S = 10.0


CACHE_SCHEMA = 1


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
    from crgpu.host import config

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
