"""The seccomp filter CRIU would restore, run as the kernel runs it: podman 5.4's real filter
(from a real `podman container checkpoint --export` on this machine) refuses every call the
engines refuse; forged filters that let them through are found."""

from __future__ import annotations

from pathlib import Path

import pytest

from crgpu.criu.images import SECCOMP_MAGIC, _entries
from crgpu.criu.protobuf import repeated_bytes
from crgpu.criu.seccomp_bpf import (
    AUDIT_ARCH_I386,
    AUDIT_ARCH_X86_64,
    REFUSED_SYSCALLS,
    SYSCALL_NUMBERS,
    Program,
    let_through,
    parse,
    run,
)

PODMAN = Path(__file__).parent.parent / "fixtures" / "criu" / "seccomp-podman-5.4.img"
ALLOW, ERRNO_EPERM, KILL = 0x7FFF0000, 0x00050001, 0
RET_K, LD_ABS, JEQ_K = 0x06, 0x20, 0x15
ALL_X86 = set(SYSCALL_NUMBERS[AUDIT_ARCH_X86_64]) | set(SYSCALL_NUMBERS[AUDIT_ARCH_I386])


def _podman() -> Program:
    (entry,) = _entries(PODMAN, SECCOMP_MAGIC)
    return parse(repeated_bytes(repeated_bytes(entry, 1)[0], 1)[0])


def _refusing(nr: int) -> Program:
    """Allow everything but system call `nr` (any ABI): what an attacker's filter looks like."""
    return [(LD_ABS, 0, 0, 0), (JEQ_K, 0, 1, nr), (RET_K, 0, 0, ERRNO_EPERM), (RET_K, 0, 0, ALLOW)]


def test_podmans_real_filter_refuses_what_the_engines_refuse_and_allows_the_rest() -> None:
    program = _podman()
    assert let_through([program], "x86_64") == set()
    for nr in (0, 1, 39, 60):  # read, write, getpid, exit
        assert run(program, nr, AUDIT_ARCH_X86_64) == ALLOW
    assert run(program, SYSCALL_NUMBERS[AUDIT_ARCH_X86_64]["bpf"], AUDIT_ARCH_X86_64) == ERRNO_EPERM
    assert run(program, 3, 0x1234) == KILL  # an ABI the profile does not name


def test_an_allow_all_filter_lets_every_refused_call_through() -> None:
    assert let_through([[(RET_K, 0, 0, ALLOW)]], "x86_64") == ALL_X86
    assert let_through([[(RET_K, 0, 0, 0x7FFC0000)]], "x86_64") == ALL_X86  # SECCOMP_RET_LOG


def test_a_filter_refusing_one_call_lets_the_others_through() -> None:
    through = let_through([_refusing(SYSCALL_NUMBERS[AUDIT_ARCH_X86_64]["kexec_load"])], "x86_64")
    assert "bpf" in through and "init_module" in through
    assert "kexec_load" in through  # i386's kexec_load (283) is another number: let through there
    assert through == ALL_X86


def test_a_chain_takes_the_strictest_answer() -> None:
    assert let_through([[(RET_K, 0, 0, ALLOW)], _podman()], "x86_64") == set()


def test_an_unknown_machine_runs_nothing() -> None:
    assert let_through([[(RET_K, 0, 0, ALLOW)]], "riscv64") == set()


@pytest.mark.parametrize(
    "program",
    [
        [(0x28, 0, 0, 0)],  # LD H ABS: the kernel refuses it in a seccomp filter
        [(LD_ABS, 0, 0, 64), (RET_K, 0, 0, ALLOW)],  # past struct seccomp_data
        [(LD_ABS, 0, 0, 2), (RET_K, 0, 0, ALLOW)],  # unaligned
        [(LD_ABS, 0, 0, 0)],  # runs past its end
        [(0x05, 0, 0, 5), (RET_K, 0, 0, ALLOW)],  # jumps past its end
    ],
    ids=["ld-half", "past-data", "unaligned", "no-return", "jump-out"],
)
def test_what_the_kernel_would_refuse_is_an_error(program: Program) -> None:
    with pytest.raises(ValueError):
        run(program, 0, AUDIT_ARCH_X86_64)


@pytest.mark.parametrize("raw", [b"", b"\x06\x00\x00\x00", b"\x00" * (8 * 4097)])
def test_a_filter_that_is_no_program_is_an_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse(raw)


def test_the_numbers_are_of_the_refused_calls_and_each_has_one() -> None:
    named = set().union(*(set(table) for table in SYSCALL_NUMBERS.values()))
    assert named == REFUSED_SYSCALLS
