"""Which runsc global flags crgpu passes on: from a sandbox's command line into a checkpoint and
its image, and from an image into a restore.

Both sources are untrusted: an image is data from anywhere, and the sandbox process runs the
Sentry, which gVisor's threat model assumes may be compromised. What they offer passes an
allow-list of flags that only change how the sandbox runs, each with the values it may take: never
a verb or a positional argument, never `--root`, never a path (logs, sockets, profiles), never a
flag that reaches into the host. The operator passes anything else on the command line
(`--runtime-flag`), where it is the operator's own choice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from crgpu.host.errors import PreconditionError, UsageError

_FLAG = re.compile(r"--?([A-Za-z0-9][A-Za-z0-9_-]*)(?:=(.*))?", re.DOTALL)
_BOOL = re.compile(r"true|false|1|0|t|f|TRUE|FALSE|True|False")


def _choice(*values: str) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(value) for value in values))


# name -> the values an untrusted source may give it (a bool may also stand alone: `--name`).
ALLOWED: dict[str, re.Pattern[str]] = {
    "network": _choice("sandbox", "none"),
    "ignore-cgroups": _BOOL,
    "systemd-cgroup": _BOOL,
    "platform": _choice("systrap", "ptrace", "kvm"),
    "file-access": _choice("exclusive", "shared"),
    "file-access-mounts": _choice("exclusive", "shared"),
    "overlay2": re.compile(r"none|(?:root|all):(?:memory|self)"),
    "directfs": _BOOL,
    "allow-connected-on-save": _BOOL,
    "net-disconnect-ok": _BOOL,
    "allow-live-tcp-migration": _BOOL,
    "nvproxy": _BOOL,
    "nvproxy-allow-unsupported-driver": _BOOL,
    "nvproxy-driver-version": re.compile(r"latest|\d{1,4}\.\d{1,4}(?:\.\d{1,4})?"),
    "tpuproxy": _BOOL,
    "restore-spec-validation": _choice("enforce", "warning"),
    "gso": _BOOL,
    "software-gso": _BOOL,
    "tx-checksum-offload": _BOOL,
    "rx-checksum-offload": _BOOL,
    "qdisc": _choice("none", "fifo"),
    "num-network-channels": re.compile(r"\d{1,3}"),
    "buffer-pooling": _BOOL,
    "rootless": _BOOL,
    "oci-seccomp": _BOOL,
    "cpu-num-from-quota": _BOOL,
    "debug": _BOOL,
    "log-format": _choice("text", "json", "json-k8s"),
    "debug-log-format": _choice("text", "json", "json-k8s"),
    "watchdog-action": _choice("log", "panic"),
}
# Where diagnostics go (paths): dropped, said, and kept only when the operator passes them again.
DIAGNOSTIC = frozenset(
    {
        "log",
        "debug-log",
        "panic-log",
        "coverage-report",
        "debug-command",
        "log-packets",
        "strace",
        "strace-syscalls",
        "strace-log-size",
        "strace-event",
        "profile",
        "profile-block",
        "profile-cpu",
        "profile-heap",
        "profile-mutex",
        "trace",
        "metric-server",
        "final-metrics",
        "profiling-metrics",
        "profiling-metrics-log",
    }
)
# Set by runsc itself or given by crgpu: never from a sandbox, an image or --runtime-flag.
RESERVED = frozenset({"root"})


@dataclass(frozen=True)
class Flag:
    text: str
    name: str
    value: str | None


def parse_flag(text: str) -> Flag | None:
    match = _FLAG.fullmatch(text)
    if match is None:
        return None
    return Flag(text, match.group(1), match.group(2))


def is_boot_only(name: str) -> bool:
    """File descriptors the sandbox got from its parent (`--log-fd`, `--debug-log-fd`, ...):
    they mean nothing to another runsc process and break checkpoint and restore."""
    return name.endswith(("-fd", "-fds"))


def flag_key(flag: str) -> str:
    return flag.lstrip("-").split("=", 1)[0]


def check_operator_flag(value: str) -> str:
    """One `--runtime-flag` value, checked for form (ValueError): `--name` or `--name=value`."""
    flag = parse_flag(value)
    if flag is None or not value.startswith("-"):
        raise ValueError(f"{value!r} is not a runtime global flag: write it as --name=value")
    if flag.name in RESERVED:
        raise ValueError(f"it cannot set --{flag.name}: use crgpu's own --{flag.name}")
    if is_boot_only(flag.name):
        raise ValueError(
            f"--{flag.name} is a file descriptor of the sandbox's boot: no other runsc call takes it"
        )
    return value


def carried_globals(
    offered: list[str], given: Iterable[str], known: frozenset[str], source: str
) -> tuple[list[str], list[str]]:
    """The global flags for a runsc call: what `source` (the sandbox, or the image) offered that
    passes the allow-list, replaced or added to by the operator's `given` flags. Returns the flags
    and notes on what was left out; refuses (exit 4) what may not be left out silently."""
    given_flags = [flag for flag in (parse_flag(text) for text in given) if flag is not None]
    unknown = sorted({flag.name for flag in given_flags if known and flag.name not in known})
    if unknown:
        raise UsageError(
            f"--runtime-flag --{unknown[0]} is not a global flag of this runsc",
            hint="`runsc flags` lists them",
        )
    overridden = {flag.name for flag in given_flags}
    kept: list[str] = []
    notes: list[str] = []
    refused: list[str] = []
    for text in offered:
        flag = parse_flag(text)
        if flag is None or not text.startswith("-"):
            raise PreconditionError(
                f"the runtime flags from {source} hold {text!r}, which is not a flag: "
                "crgpu takes no verbs or arguments from there",
                hint="the image is damaged or hostile: do not restore it",
            )
        if is_boot_only(flag.name) or flag.name in RESERVED or flag.name in overridden:
            continue
        pattern = ALLOWED.get(flag.name)
        if pattern is not None and (
            pattern.fullmatch(flag.value) if flag.value is not None else pattern is _BOOL
        ):
            kept.append(text)
        elif flag.name in DIAGNOSTIC:
            notes.append(
                f"{text} from {source} is not used (a path crgpu does not take from there); "
                f"pass --runtime-flag={text} to keep it"
            )
        else:
            refused.append(text)
    if refused:
        fix = " ".join(f"--runtime-flag={text}" for text in refused)
        raise PreconditionError(
            f"{source} asks for runsc global flags crgpu does not take from there: {' '.join(refused)}",
            hint=f"if you want them, pass them yourself: {fix}",
        )
    return [*kept, *(flag.text for flag in given_flags)], notes


def sandbox_global_flags(cmdline: list[str]) -> list[str]:
    """The global flags of a `runsc-sandbox <globals> boot ...` command line, minus --root and the
    boot-only file descriptors. Still untrusted: carried_globals judges them before any use."""
    if "boot" not in cmdline:
        return []
    flags = cmdline[1 : cmdline.index("boot")]
    return [flag for flag in flags if not is_boot_only(flag_key(flag)) and flag_key(flag) not in RESERVED]


def set_global(flags: list[str], name: str, value: str | None) -> list[str]:
    """Replace (or add) one `--name[=value]` among global flags."""
    kept = [flag for flag in flags if flag_key(flag) != name]
    return [*kept, f"--{name}" if value is None else f"--{name}={value}"]


def has_nvproxy(flags: list[str]) -> bool:
    return any(flag_key(flag) == "nvproxy" and not flag.endswith("=false") for flag in flags)
