"""The doctor's checks of CRIU: its binary and version for this kernel, network locking, dirty memory tracking."""

from __future__ import annotations

import os
import shutil

from crgpu.core.hostinfo import criu_version, kernel_release
from crgpu.criu.binary import dirty_tracking
from crgpu.doctor.facts import Check, Facts, capture
from crgpu.host.versions import version_tuple

NEW_KERNEL = (6, 13)
CRIU_FOR_NEW_KERNEL = (4, 1)


def check_criu_binary(facts: Facts) -> Check:
    if not facts.criu_path:
        return Check(
            "criu.binary",
            "CRIU",
            "runc and CRIU",
            "fail",
            "criu not found on PATH",
            fix="apt-get install criu (Debian 12: from trixie, for CRIU 4.1+)",
        )
    version = criu_version() or "unknown"
    facts.criu_version = version_tuple(version)
    if os.geteuid() != 0:
        return Check(
            "criu.binary",
            "CRIU",
            "runc and CRIU",
            "warn",
            f"{facts.criu_path}, version {version}; `criu check` needs root and was not run",
            fix="run crgpu doctor as root",
        )
    verdict = capture([facts.criu_path, "check"])
    if "Looks good" in verdict:
        return Check(
            "criu.binary",
            "CRIU",
            "runc and CRIU",
            "ok",
            f"{facts.criu_path}, version {version}; criu check: looks good",
        )
    errors = [line.strip() for line in verdict.splitlines() if "Error" in line or "error" in line]
    return Check(
        "criu.binary",
        "CRIU",
        "runc and CRIU",
        "fail",
        f"{facts.criu_path}, version {version}; criu check: {(errors or verdict.splitlines() or ['failed'])[0]}",
        fix="run `criu check` as root and fix what it reports",
    )


def check_criu_kernel(facts: Facts) -> Check:
    release = kernel_release()
    kernel = version_tuple(release)
    if facts.criu_version is None:
        return Check(
            "criu.kernel", "CRIU vs kernel", "runc and CRIU", "skip", f"kernel {release}; no CRIU to judge"
        )
    criu = ".".join(map(str, facts.criu_version))
    if kernel >= NEW_KERNEL and facts.criu_version < CRIU_FOR_NEW_KERNEL:
        return Check(
            "criu.kernel",
            "CRIU vs kernel",
            "runc and CRIU",
            "fail",
            f"kernel {release} needs CRIU 4.1 or newer; CRIU {criu} fails every dump "
            "(vdso: Unexpected rt vDSO area bounds)",
            fix="apt-get install -t trixie criu (CRIU 4.1+)",
        )
    return Check("criu.kernel", "CRIU vs kernel", "runc and CRIU", "ok", f"kernel {release}, CRIU {criu}")


def check_netlock(_facts: Facts) -> Check:
    for tool in ("iptables-restore", "nft"):
        path = shutil.which(tool)
        if path:
            return Check("criu.netlock", "CRIU network lock", "runc and CRIU", "ok", f"{path}")
    return Check(
        "criu.netlock",
        "CRIU network lock",
        "runc and CRIU",
        "fail",
        "neither iptables-restore nor nft is on PATH: every dump fails",
        fix="apt-get install iptables",
    )


def check_dirty_tracking(facts: Facts) -> Check:
    if not facts.criu_path or os.geteuid() != 0:
        return Check(
            "criu.dirty_tracking", "memory dirty tracking", "runc and CRIU", "skip", "needs CRIU and root"
        )
    ok, said = dirty_tracking(facts.criu_path, capture)
    if not ok:
        return Check(
            "criu.dirty_tracking",
            "memory dirty tracking",
            "runc and CRIU",
            "warn",
            f"the kernel has no soft-dirty tracking ({said}): pre-dumps (--pre-dump) cannot work here",
            fix="a kernel built with CONFIG_MEM_SOFT_DIRTY",
        )
    return Check("criu.dirty_tracking", "memory dirty tracking", "runc and CRIU", "ok", "pre-dumps possible")
