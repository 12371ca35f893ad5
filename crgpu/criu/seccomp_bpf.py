"""Running a seccomp filter as the kernel does (classic BPF over `struct seccomp_data`), to learn
whether the filter CRIU would restore refuses the system calls every engine refuses. A filter's
presence says nothing: a one-instruction `return ALLOW` is a filter too. Standard library only."""

from __future__ import annotations

import struct
from typing import NoReturn

# System calls that the engines' default seccomp profiles refuse whatever the capabilities
# (podman 5.4's containers-common profile, read off a real spec.dump).
REFUSED_SYSCALLS = frozenset({
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "create_module",
    "query_module", "get_kernel_syms", "open_by_handle_at", "bpf", "iopl", "ioperm", "acct", "swapon",
    "swapoff", "settimeofday", "clock_settime", "stime", "quotactl", "lookup_dcookie", "fanotify_init",
    "perf_event_open", "add_key", "request_key", "userfaultfd", "vm86", "vm86old", "uselib",
    "nfsservctl", "_sysctl", "kcmp",
})  # fmt: skip

# Their numbers per ABI, from the kernel's headers (Debian's linux-libc-dev: asm/unistd_64.h,
# asm/unistd_32.h, asm-generic/unistd.h); a call an ABI lacks is absent. AUDIT_ARCH_* from
# linux/audit.h.
AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64 = 0xC000003E, 0x40000003, 0xC00000B7
SYSCALL_NUMBERS: dict[int, dict[str, int]] = {
    AUDIT_ARCH_X86_64: {
        "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
        "delete_module": 176, "create_module": 174, "query_module": 178, "get_kernel_syms": 177,
        "open_by_handle_at": 304, "bpf": 321, "iopl": 172, "ioperm": 173, "acct": 163, "swapon": 167,
        "swapoff": 168, "settimeofday": 164, "clock_settime": 227, "quotactl": 179,
        "lookup_dcookie": 212, "fanotify_init": 300, "perf_event_open": 298, "add_key": 248,
        "request_key": 249, "userfaultfd": 323, "uselib": 134, "nfsservctl": 180, "_sysctl": 156,
        "kcmp": 312,
    },
    AUDIT_ARCH_I386: {
        "kexec_load": 283, "init_module": 128, "finit_module": 350, "delete_module": 129,
        "create_module": 127, "query_module": 167, "get_kernel_syms": 130, "open_by_handle_at": 342,
        "bpf": 357, "iopl": 110, "ioperm": 101, "acct": 51, "swapon": 87, "swapoff": 115,
        "settimeofday": 79, "clock_settime": 264, "stime": 25, "quotactl": 131, "lookup_dcookie": 253,
        "fanotify_init": 338, "perf_event_open": 336, "add_key": 286, "request_key": 287,
        "userfaultfd": 374, "vm86": 166, "vm86old": 113, "uselib": 86, "nfsservctl": 169,
        "_sysctl": 149, "kcmp": 349,
    },
    AUDIT_ARCH_AARCH64: {
        "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
        "delete_module": 106, "bpf": 280, "acct": 89, "swapon": 224, "swapoff": 225,
        "settimeofday": 170, "clock_settime": 112, "quotactl": 60, "lookup_dcookie": 18,
        "fanotify_init": 262, "perf_event_open": 241, "add_key": 217, "request_key": 218,
        "userfaultfd": 282, "nfsservctl": 42, "kcmp": 272,
    },
}  # fmt: skip
# The ABIs a process of this machine can call the kernel with (i386 through IA-32 emulation).
MACHINE_ARCHES = {"x86_64": (AUDIT_ARCH_X86_64, AUDIT_ARCH_I386), "aarch64": (AUDIT_ARCH_AARCH64,)}

# Actions that let a call through (linux/seccomp.h); every other one refuses it (TRACE and
# USER_NOTIF without a tracer or listener fail the call with ENOSYS).
RET_ACTION_FULL = 0xFFFF0000
LETS_THROUGH = {0x7FFF0000, 0x7FFC0000}  # SECCOMP_RET_ALLOW, SECCOMP_RET_LOG
BPF_MAXINSNS = 4096
SECCOMP_DATA_BYTES = 64  # nr, arch, instruction_pointer, args[6]
U32 = 0xFFFFFFFF

Program = list[tuple[int, int, int, int]]


def parse(raw: bytes) -> Program:
    """A filter as CRIU stores it: `struct sock_filter` (u16 code, u8 jt, u8 jf, u32 k) each."""
    if not raw or len(raw) % 8 or len(raw) > 8 * BPF_MAXINSNS:
        raise ValueError("a seccomp filter that is no BPF program")
    return [struct.unpack_from("<HBBI", raw, offset) for offset in range(0, len(raw), 8)]


def run(program: Program, nr: int, arch: int) -> int:
    """The filter's return value for system call `nr` of `arch`, its arguments zero. Only the
    instructions the kernel's seccomp_check_filter admits run; anything else is a ValueError
    (the kernel would refuse the filter, and CRIU's restore with it)."""
    data = struct.pack("<iI7Q", nr, arch, 0, 0, 0, 0, 0, 0, 0)
    a = x = 0
    mem = [0] * 16
    pc = 0
    while 0 <= pc < len(program):  # cBPF jumps only forward: at most len(program) steps
        code, jt, jf, k = program[pc]
        pc += 1
        kind = code & 0x07
        if kind == 0x06:  # RET
            return k if code == 0x06 else a if code == 0x16 else _bad(code)
        if code == 0x20:  # LD W ABS
            if k % 4 or k >= SECCOMP_DATA_BYTES:
                _bad(code)
            a = int.from_bytes(data[k : k + 4], "little")
        elif code in (0x00, 0x01):  # LD IMM, LDX IMM
            a, x = (k, x) if code == 0x00 else (a, k)
        elif code in (0x80, 0x81):  # LD W LEN, LDX W LEN
            a, x = (SECCOMP_DATA_BYTES, x) if code == 0x80 else (a, SECCOMP_DATA_BYTES)
        elif code in (0x60, 0x61, 0x02, 0x03):  # LD MEM, LDX MEM, ST, STX
            if k >= 16:
                _bad(code)
            if code == 0x60:
                a = mem[k]
            elif code == 0x61:
                x = mem[k]
            else:
                mem[k] = a if code == 0x02 else x
        elif kind == 0x04:  # ALU
            a = _alu(code, a, x if code & 0x08 else k)
        elif kind == 0x05:  # JMP
            operand = x if code & 0x08 else k
            op = code & 0xF0
            if op == 0x00:
                pc += k
                continue
            taken = {0x10: a == operand, 0x20: a > operand, 0x30: a >= operand, 0x40: bool(a & operand)}
            if op not in taken:
                _bad(code)
            pc += jt if taken[op] else jf
        elif code in (0x07, 0x87):  # TAX, TXA
            a, x = (a, a) if code == 0x07 else (x, x)
        else:
            _bad(code)
    raise ValueError("a seccomp filter that runs past its end")


def _alu(code: int, a: int, operand: int) -> int:
    op = code & 0xF0
    if op == 0x80:
        return -a & U32
    if op in (0x30, 0x90) and operand == 0:
        raise ValueError("a seccomp filter that divides by zero")
    ops = {
        0x00: a + operand, 0x10: a - operand, 0x20: a * operand, 0x30: a // max(operand, 1),
        0x40: a | operand, 0x50: a & operand, 0x60: a << operand if operand < 32 else 0,
        0x70: a >> operand if operand < 32 else 0, 0x90: a % max(operand, 1), 0xA0: a ^ operand,
    }  # fmt: skip
    if op not in ops:
        _bad(code)
    return ops[op] & U32


def _bad(code: int) -> NoReturn:
    raise ValueError(f"a seccomp filter with instruction {code:#06x}, which the kernel refuses")


def let_through(chain: list[Program], machine: str) -> set[str]:
    """The engines' always-refused calls that a task under every filter of `chain` may make
    (the kernel runs them all and takes the strictest answer)."""
    through = set()
    for arch in MACHINE_ARCHES.get(machine, ()):
        for name, nr in SYSCALL_NUMBERS[arch].items():
            if all(run(program, nr, arch) & RET_ACTION_FULL in LETS_THROUGH for program in chain):
                through.add(name)
    return through
