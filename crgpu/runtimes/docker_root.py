"""Where Docker keeps its containers (`config.v2.json`: their names) and the checkpoints
`docker start --checkpoint` reads: the running dockerd's own `--data-root`, else the data root its
daemon.json names, else /var/lib/docker. CRGPU_DOCKER_DATA_ROOT (or the config file) wins."""

from __future__ import annotations

import json
import os
from pathlib import Path

from crgpu.host import config
from crgpu.host.go_flags import go_flag
from crgpu.host.root import host_path, read_host_text

DAEMON_JSON = "/etc/docker/daemon.json"
DAEMON_JSON_MAX_BYTES = 1 << 20
MAX_PROCESSES = 100_000


def docker_data_root() -> Path:
    setting = config.get("docker_data_root")
    if setting.source != "default":
        return Path(setting.value)
    argv = _dockerd_argv()
    named = go_flag(argv, "--data-root") or go_flag(argv, "--graph") or go_flag(argv, "-g")
    if named is None:
        named = _daemon_json_root(go_flag(argv, "--config-file") or DAEMON_JSON)
    return host_path(named) if named else Path(setting.value)


def _dockerd_argv() -> list[str]:
    """The command line of the running dockerd (the first found), or []."""
    try:
        pids = [name for name in os.listdir(host_path("/proc")) if name.isdigit()][:MAX_PROCESSES]
    except OSError:
        return []
    for pid in sorted(pids, key=int):
        if (read_host_text(f"/proc/{pid}/comm") or "").strip() == "dockerd":
            raw = read_host_text(f"/proc/{pid}/cmdline") or ""
            return [part for part in raw.split("\0") if part]
    return []


def _daemon_json_root(path: str) -> str | None:
    try:
        with open(host_path(path), "rb") as handle:
            data = json.loads(handle.read(DAEMON_JSON_MAX_BYTES))
    except (OSError, ValueError):
        return None
    value = (data.get("data-root") or data.get("graph")) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value.startswith("/") else None
