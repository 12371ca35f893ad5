"""`crgpu doctor`: the checks run, judged per path, summed up in one line; `--probe` adds a real
round trip per runtime (probe.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crgpu.doctor.checks import CHECKS, PATHS, WARN_FAILS, check_headroom
from crgpu.doctor.facts import Check, Facts
from crgpu.host import config
from crgpu.options.models import RuntimeName


@dataclass
class DoctorReport:
    checks: list[Check]
    ready: dict[str, bool | None]
    ok: bool
    summary: str
    probe: list[dict[str, Any]] = field(default_factory=list)
    config: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "ready": self.ready,
            "summary": self.summary,
            "config": self.config,
            "checks": [asdict(check) for check in self.checks],
            **({"probe": self.probe} if self.probe else {}),
        }


def _first_fix(checks: list[Check]) -> str:
    return "; ".join(dict.fromkeys(c.fix for c in checks if c.fix))


def judge(checks: list[Check], strict: bool) -> tuple[dict[str, bool | None], bool, str]:
    by_id = {check.id: check for check in checks}
    bad: tuple[str, ...] = ("fail", "warn") if strict else ("fail",)
    ready: dict[str, bool | None] = {}
    missing: dict[str, list[Check]] = {}
    for key, (_label, needs) in PATHS.items():
        runtime_check = by_id["runc.binary" if "runc" in needs[0] else "runsc.binary"]
        available = runtime_check.status != "skip"
        if key.startswith("cuda"):
            available = available and by_id["nvidia.driver"].status != "skip"
        if not available:
            ready[key] = None
            continue
        probe = f"probe.{PATHS[key][1][0].split('.')[0]}"
        extra = [probe] if not key.startswith("cuda") and probe in by_id else []
        failing = [
            by_id[n]
            for n in [*needs, *extra]
            if n in by_id
            and (by_id[n].status in bad or (by_id[n].status == "warn" and n in WARN_FAILS.get(key, ())))
        ]
        if "image.headroom" in by_id and by_id["image.headroom"].status in bad:
            failing.append(by_id["image.headroom"])
        ready[key] = not failing
        if failing:
            missing[key] = failing
    parts = []
    good = [PATHS[k][0] for k, v in ready.items() if v]
    if good:
        parts.append("ready: " + ", ".join(good))
    if missing:
        parts.append(
            "not ready: "
            + "; ".join(
                f"{PATHS[k][0]} ({_first_fix(v) or 'see the failing checks'})" for k, v in missing.items()
            )
        )
    absent = [PATHS[k][0] for k, v in ready.items() if v is None]
    if absent:
        parts.append("not applicable: " + ", ".join(absent))
    any_available = any(v is not None for v in ready.values())
    # CUDA on runc has two ways (CRIU's plugin, the driver API): one ready is a ready node.
    either = {"cuda_runc", "cuda_runc_driver_api"}
    cuda_runc_ready = any(ready.get(key) for key in either)
    ok = any_available and all(
        v is not False for k, v in ready.items() if not (k in either and cuda_runc_ready)
    )
    if not any_available:
        parts.insert(0, "no runtime installed (apt-get install runc criu or runsc)")
    return ready, ok, "; ".join(parts)


def probe_checks(facts_ready: dict[str, bool | None]) -> tuple[list[Check], list[dict[str, Any]]]:
    """Round trips for each runtime whose path is ready."""
    from crgpu.doctor.probe import probe_runtime
    from crgpu.runtimes.capabilities import resolve_binary

    checks: list[Check] = []
    results: list[dict[str, Any]] = []
    runtimes: tuple[RuntimeName, ...] = ("runc", "runsc")
    for runtime in runtimes:
        group = "runc and CRIU" if runtime == "runc" else "gVisor"
        if not facts_ready.get(runtime):
            checks.append(Check(f"probe.{runtime}", f"{runtime} round trip", group, "skip", "path not ready"))
            continue
        binary = resolve_binary(runtime)
        result = probe_runtime(runtime, binary)
        results.append(result.to_json())
        checks.append(
            Check(
                f"probe.{runtime}",
                f"{runtime} round trip",
                group,
                "ok" if result.ok else "fail",
                result.describe(),
                fix=None if result.ok else result.hint,
            )
        )
    return checks, results


def run_doctor(
    image_path: Path | None = None,
    container_memory: int = 0,
    strict: bool = False,
    probe: bool = False,
) -> DoctorReport:
    facts = Facts()
    checks = [check(facts) for check in CHECKS]
    if image_path is not None:
        checks.append(check_headroom(facts, image_path, container_memory))
    ready, ok, summary = judge(checks, strict)
    results: list[dict[str, Any]] = []
    if probe:
        extra, results = probe_checks(ready)
        checks += extra
        ready, ok, summary = judge(checks, strict)
    path, source = config.config_file()
    settings = [
        {"name": "config_file", "value": str(path), "source": source + ("" if path.exists() else ", absent")}
    ]
    settings += [{"name": r.name, "value": r.value, "source": r.source} for r in config.effective()]
    return DoctorReport(checks=checks, ready=ready, ok=ok, summary=summary, probe=results, config=settings)
