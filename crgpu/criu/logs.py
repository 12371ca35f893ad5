"""CRIU's and runc's logs: the error lines, the one that explains a failure, and what each known failure needs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LOG_TAIL_BYTES = 4 * 1024 * 1024
MAX_ERROR_LINES = 12

# `(00.012345) Error (criu/files-reg.c:1046): Can't create link remap ...`; newer CRIU adds a pid.
_CRIU_ERROR = re.compile(r"^\(\s*[\d.]+\)\s+(?:\d+:\s+)?Error\s+\(([^)]*)\):\s*(.*)$")


@dataclass(frozen=True)
class FailureHint:
    pattern: re.Pattern[str]
    hint: str


# Error lines CRIU logs on every run here that never explain a failure.
BENIGN_ERRORS = (re.compile(r"rlimit: Can't setup RLIMIT_NOFILE"),)
# Error lines that only say that something above failed (CRIU's, and runc's own wrappers).
GENERIC_ERRORS = (
    re.compile(r"Dumping FAILED|Restoring FAILED|\(pid: \d+\) failed with|^Dump files"),
    re.compile(
        r"(?i)^container (?:is )?still running$|^criu swrk failed: exit status \d+$|^exit status \d+$"
        r"|^criu failed: type \w+ errno \d+"
    ),
)
# runc logs through logrus: `time=".." level=error msg="first\nsecond"`, one line holding several.
_LOGRUS_MSG = re.compile(r'\blevel=(?:error|fatal)\s+msg="((?:[^"\\]|\\.)*)"')

KNOWN_FAILURES: tuple[FailureHint, ...] = (
    FailureHint(
        re.compile(r"CRIU version check failed"),
        "CRIU did not start under runc: run `criu check`, and check any CRIU config file it reads "
        "(CRIU_CONFIG_FILE, /etc/criu/runc.conf, /etc/criu/default.conf) for an option it rejects",
    ),
    FailureHint(
        re.compile(r"Can't create link remap|Use link-remap option"),
        "a process holds a deleted file open: checkpoint again with --link-remap",
    ),
    FailureHint(
        re.compile(r"Connected TCP socket|consider using --tcp-established"),
        "the container has established TCP connections: checkpoint with --tcp-established "
        "to keep them, or --tcp-close to drop them (then restore with --tcp-close too)",
    ),
    FailureHint(
        re.compile(r"Need to set the --tcp-close"),
        "the image was dumped with --tcp-close: restore with --tcp-close as well",
    ),
    FailureHint(
        re.compile(r"Can't dump ghost file .* increase limit"),
        "a deleted-but-open file is bigger than CRIU's ghost limit: remove or truncate it in the "
        "container, or raise the limit (a `ghost-limit 64M` line in /etc/criu/runc.conf)",
    ),
    FailureHint(
        re.compile(r'execvp\("?(iptables-restore|ip6tables-restore|nft)'),
        "CRIU's network lock needs iptables: apt-get install iptables",
    ),
    FailureHint(
        re.compile(r"vdso: Unexpected rt vDSO area bounds"),
        "this CRIU is too old for the kernel (6.13+ needs CRIU 4.1 or newer): upgrade criu",
    ),
    FailureHint(
        re.compile(r"Can't lookup mount=\d+ for fd=|External (?:file|pipe|tty)|unix socket.*external"),
        "a process holds a file descriptor from outside the container (host-side stdio or "
        "socket): start the container with its stdio redirected inside it, or use --ext-unix-sk "
        "for external unix sockets",
    ),
    FailureHint(
        re.compile(r"File .* has bad size"),
        "a file the processes had open changed size since the checkpoint: the root filesystem is not "
        "the one they were checkpointed on (a wrong --rootfs, or the container wrote on after a "
        "--leave-running checkpoint); restore onto the root it was checkpointed with",
    ),
    FailureHint(
        re.compile(r"Can't open file .* on restore|Can't open file"),
        "a file the processes had open is missing from the root filesystem: restore with the bundle "
        "and --rootfs the container was checkpointed with (an archive carries its writable layer)",
    ),
    FailureHint(
        re.compile(r"Tracking memory is not available|Dirty tracking is OFF"),
        "the kernel has no soft-dirty memory tracking: pre-dumps and --parent-path cannot work on "
        "this node (crgpu doctor shows criu.dirty_tracking)",
    ),
    FailureHint(
        re.compile(r"is not running|container .* does not exist|not running"),
        "the container is not running: check it with `runc state ID` / `runsc state ID`",
    ),
    FailureHint(
        re.compile(r"(?i)no space left on device|ENOSPC"),  # Go (runc) writes it lower-case
        "the filesystem under the image or work path is full: free space or choose another --image-path",
    ),
    FailureHint(
        re.compile(r"(?i)read-only file system|EROFS"),
        "the image or work path is on a read-only filesystem: choose a writable --image-path",
    ),
    FailureHint(
        re.compile(r"flag provided but not defined"),
        "the runtime rejected a flag: report this, crgpu should have mapped the option",
    ),
    FailureHint(
        re.compile(r"(?i)file exists.*(?:image|checkpoint)|can't restore: .*exists"),
        "a container with this ID exists: delete it first or restore under another ID",
    ),
)


def criu_log_errors(log_path: Path) -> list[str]:
    """The `Error (...)` lines of a CRIU log, without timestamps; the last ones if many."""
    try:
        with log_path.open("rb") as handle:
            size = log_path.stat().st_size
            if size > LOG_TAIL_BYTES:
                handle.seek(size - LOG_TAIL_BYTES)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    errors: list[str] = []
    for line in text.splitlines():
        match = _CRIU_ERROR.match(line.strip())
        if match and not any(p.search(match.group(2)) for p in BENIGN_ERRORS):
            errors.append(match.group(2).strip())
    return errors[-MAX_ERROR_LINES:]


def hint_for(lines: list[str]) -> str | None:
    """The hint of the first known failure signature found in the given lines."""
    for known in KNOWN_FAILURES:
        for line in lines:
            if known.pattern.search(line):
                return known.hint
    return None


def runtime_error_lines(lines: list[str]) -> list[str]:
    """The error messages in a runtime's output, one per line: a logrus line's `msg` is unquoted
    and split where runc joined several errors with newlines."""
    found: list[str] = []
    for line in lines:
        match = _LOGRUS_MSG.search(line)
        if match is None:
            found.append(line)
            continue
        text = match.group(1).replace('\\"', '"').replace("\\t", " ")
        found += [part.strip() for part in text.split("\\n") if part.strip()]
    return found


def headline(lines: list[str]) -> str | None:
    """The line that best explains a failure: a known signature, else the first specific error."""
    for known in KNOWN_FAILURES:
        for line in lines:
            if known.pattern.search(line):
                return line
    specific = [line for line in lines if not any(p.search(line) for p in GENERIC_ERRORS)]
    chosen = specific or lines
    return chosen[0] if chosen else None
