"""The restore guard: refuse, before anything runs, an image that cannot work on this host.

Each finding is one line naming both sides. With --force they become warnings instead.
"""

from __future__ import annotations

from collections import Counter

from crgpu.host.errors import PreconditionError
from crgpu.host.versions import version_tuple
from crgpu.image.manifest import HostRecord, Manifest


def restore_findings(manifest: Manifest, here: HostRecord, runtime: str) -> list[str]:
    """Every reason this image would fail on this host, as one-line sentences."""
    findings: list[str] = []
    then = manifest.host
    if runtime == "runc" and then.criu_version and here.criu_version:
        if version_tuple(here.criu_version) < version_tuple(then.criu_version):
            findings.append(
                f"the image was dumped by CRIU {then.criu_version}; this host has the older CRIU {here.criu_version}"
            )
    if then.arch and here.arch and then.arch != here.arch:
        findings.append(f"the image was made on {then.arch}; this host is {here.arch}")
    if not manifest.container.gpu:
        return findings
    if here.driver_version is None:
        findings.append(
            f"the image holds GPU state (driver {then.driver_version}) but this host has no NVIDIA driver"
        )
        return findings
    if then.driver_version and then.driver_version != here.driver_version:
        findings.append(
            f"the image was made with NVIDIA driver {then.driver_version}; this host has {here.driver_version}"
        )
    used = set(gpus_used(manifest) or [g.uuid for g in then.gpus])
    then_gpus = [g for g in then.gpus if g.uuid in used]
    if len(here.gpus) < len(then_gpus):
        findings.append(f"the image used {len(then_gpus)} GPU(s); this host has {len(here.gpus)}")
    then_models = Counter(g.name for g in then_gpus)
    here_models = Counter(g.name for g in here.gpus)
    if then_models and here_models and not set(then_models) <= set(here_models):
        findings.append(
            f"the image ran on {', '.join(sorted(then_models))}; this host has {', '.join(sorted(here_models))}"
        )
    return findings


def gpus_used(manifest: Manifest) -> list[str]:
    """The GPUs the image's CUDA processes used (NVML at the checkpoint), else those its spec gave
    the container; empty when the image does not say."""
    processes = manifest.cuda.get("processes") or []
    used = [u for p in processes for u in p.get("gpus") or []]
    return list(dict.fromkeys(used or manifest.cuda.get("container_gpus") or []))


def enforce(findings: list[str], force: bool) -> list[str]:
    """Refuse on the first finding, or with --force turn them all into warnings."""
    if not findings:
        return []
    if not force:
        extra = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise PreconditionError(
            findings[0] + extra,
            hint="restore on a matching host, or pass --force to try anyway",
            detail=findings[1:],
        )
    return [f"--force overrides: {finding}" for finding in findings]
