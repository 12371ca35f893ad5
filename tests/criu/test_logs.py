"""CRIU's and runc's log lines: the errors found, the headline, the hints."""

from __future__ import annotations

from pathlib import Path

import pytest

from crgpu.criu.logs import criu_log_errors, headline, hint_for

LOG = """(00.000225) Version: 4.1.1 (gitid 0)
(00.024809) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.135198) Error (criu/files-reg.c:1122): Can't create link remap for /tmp/a. Use link-remap option.
(00.135217) Error (criu/cr-dump.c:1681): Dump files (pid: 8129) failed with -1
(00.192454) Error (criu/cr-dump.c:2111): Dumping FAILED.
"""


def test_criu_log_errors_and_hint(tmp_path: Path) -> None:
    log = tmp_path / "dump.log"
    log.write_text(LOG)
    errors = criu_log_errors(log)
    assert errors == [
        "Can't create link remap for /tmp/a. Use link-remap option.",
        "Dump files (pid: 8129) failed with -1",
        "Dumping FAILED.",
    ]
    assert headline(errors) == errors[0]
    assert "--link-remap" in (hint_for(errors) or "")
    assert criu_log_errors(tmp_path / "missing.log") == []


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("Connected TCP socket, consider using --tcp-established option.", "--tcp-established"),
        ("Can't dump ghost file /tmp/big of 3145728 size, increase limit", "ghost"),
        ('execvp("iptables-restore", ...) failed: No such file or directory', "apt-get install iptables"),
        ("vdso: Unexpected rt vDSO area bounds", "CRIU 4.1"),
        ("Can't lookup mount=27 for fd=1 path=pipe:[1234]", "stdio"),
        ("container is not running", "not running"),
        ("Need to set the --tcp-close options.", "--tcp-close"),
        # CRIU 4.1's restore lines (files.c, files-reg.c); before, no hint at all
        (
            "(00.012345)     38: Error (criu/files-reg.c:2153): File tmp/out has bad size 42 (expect 35)",
            "--rootfs",
        ),
        (
            "(00.012345)     38: Error (criu/files-reg.c:2196): Can't open file tmp/gone on restore: No such file",
            "--rootfs",
        ),
    ],
)
def test_known_failures_have_hints(line: str, needle: str) -> None:
    assert needle in (hint_for([line]) or "")


def test_the_headline_is_the_cause_not_runcs_generic_wrapper() -> None:
    from crgpu.criu.logs import runtime_error_lines

    # Captured from runc 1.1.15 and 1.3.6 with a CRIU config file CRIU rejects.
    real = (
        'time="2026-11-29T18:20:29Z" level=error msg="CRIU version check failed: read criu-xprt-cln: '
        'connection reset by peer\\ncriu swrk failed: exit status 1"'
    )
    lines = runtime_error_lines([real])
    assert lines == [
        "CRIU version check failed: read criu-xprt-cln: connection reset by peer",
        "criu swrk failed: exit status 1",
    ]
    assert headline(lines) == lines[0]
    assert "criu check" in (hint_for(lines) or "")
    wrapped = 'time="x" level=error msg="container still running\\nconfig file: unknown option \\"bogus\\""'
    assert headline(runtime_error_lines([wrapped])) == 'config file: unknown option "bogus"'


def test_go_runtimes_lower_case_errors_get_their_hints() -> None:
    # runc (Go) prints syscall errors in lower case.
    assert "full" in (hint_for(["write /ckpt/x/dump.log: no space left on device"]) or "")
    assert "read-only" in (hint_for(["open /ckpt/x: read-only file system"]) or "")
