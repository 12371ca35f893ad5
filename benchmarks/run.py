"""crgpu against the raw runtimes, and crgpu's own start-up. Writes BENCHMARKS.md.

    sudo .venv/bin/python benchmarks/run.py [--reps N] [--sizes 16,200,1024] [--out BENCHMARKS.md]

Each (runtime, size) runs a fresh container per arm and alternates which arm goes first (A/B),
so page-cache and disk state favour neither; medians and crgpu/raw ratios are reported. The raw
runsc arm includes `runsc delete`, which crgpu's checkpoint does too so that the ID can be restored.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crgpu.doctor.bundle import busybox_bundle

HERE = Path(__file__).resolve().parent
CRGPU = str(Path(sys.executable).parent / "crgpu")
RUNSC_GLOBALS = ["--network=none", "--ignore-cgroups"]
PHASES = ("startup_s", "plan_s", "runtime_s", "post_s")


def run_timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Seconds a command took, and its stdout. Output to files, never a pipe: a detached container
    inherits the runtime's stdio and would hold a pipe open for ever."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env).returncode
        elapsed = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode(errors="replace")
        if code != 0:
            err.seek(0)
            raise RuntimeError(
                f"{' '.join(argv)} failed: {(text + err.read().decode(errors='replace'))[-400:]}"
            )
    return elapsed, text


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    return run_timed(argv, env)[0]


def timed_json(argv: list[str]) -> tuple[float, dict[str, float]]:
    """As timed(), for a crgpu call with --json: also its own per-phase timings."""
    elapsed, text = run_timed(argv)
    return elapsed, json.loads(text).get("timings", {})


def build_hog(work: Path) -> Path:
    out = work / "hog"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(out), str(HERE / "hog.c")], check=True)
    return out


def bundle_for(work: Path, hog: Path, mib: int, runtime: str) -> Path:
    """crgpu's busybox bundle (busybox-static: `cat` for runsc exec) running the hog."""
    bundle = work / f"bundle-{runtime}-{mib}"
    if bundle.exists():
        shutil.rmtree(bundle)
    busybox_bundle(bundle, Path("/bin/busybox"), runtime, ["/bin/hog", str(mib)])
    shutil.copy2(hog, bundle / "rootfs" / "bin" / "hog")
    return bundle


class Arm:
    def __init__(self, runtime: str, root: Path, bundle: Path, cid: str) -> None:
        self.runtime, self.root, self.bundle, self.id = runtime, root, bundle, cid
        self.ckpt_phases: dict[str, float] = {}
        self.rest_phases: dict[str, float] = {}

    def rooted(self) -> list[str]:
        """The runtime with its state root: enough for exec, state and delete."""
        if self.runtime == "runc":
            return ["runc", "--root", str(self.root)]
        return ["runsc", f"--root={self.root}"]

    def base(self) -> list[str]:
        """The runtime with every global flag the container was started with."""
        return self.rooted() + (RUNSC_GLOBALS if self.runtime == "runsc" else [])

    def start(self) -> None:
        for stale in (self.bundle / "rootfs" / "tmp").iterdir():  # the last run's counter and log
            stale.unlink()
        detach = "-d" if self.runtime == "runc" else "--detach"
        timed([*self.base(), "run", detach, "--bundle", str(self.bundle), self.id])
        count = self.bundle / "rootfs" / "tmp" / "count"
        deadline = time.monotonic() + 120
        while self.runtime == "runc" and not count.exists():  # the hog counts once its memory is filled
            if time.monotonic() > deadline:
                raise RuntimeError("the hog never filled its memory")
            time.sleep(0.05)
        if self.runtime == "runsc":
            while True:
                out = subprocess.run(
                    [*self.rooted(), "exec", self.id, "cat", "/tmp/count"], capture_output=True, text=True
                )
                if out.stdout.strip().isdigit():
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the runsc hog never filled its memory")
                time.sleep(0.1)

    def delete(self) -> None:
        subprocess.run([*self.rooted(), "delete", "--force", self.id], capture_output=True)

    def raw(self, image: Path) -> tuple[float, float]:
        if self.runtime == "runc":
            ckpt = timed([*self.base(), "checkpoint", "--image-path", str(image), self.id])
            rest = timed(
                [
                    *self.base(),
                    "restore",
                    "-d",
                    "--bundle",
                    str(self.bundle),
                    "--image-path",
                    str(image),
                    self.id,
                ]
            )
            return ckpt, rest
        ckpt = timed([*self.base(), "checkpoint", "--compression=none", "--image-path", str(image), self.id])
        ckpt += timed([*self.rooted(), "delete", "--force", self.id])
        rest = timed(
            [
                *self.base(),
                "restore",
                "--detach",
                "--bundle",
                str(self.bundle),
                "--image-path",
                str(image),
                self.id,
            ]
        )
        return ckpt, rest

    def crgpu(self, image: Path) -> tuple[float, float]:
        extra = ["--compression", "none"] if self.runtime == "runsc" else []
        ckpt, self.ckpt_phases = timed_json(
            [CRGPU, "checkpoint", "--json", "--root", str(self.root), *extra, "-i", str(image), self.id]
        )
        rest, self.rest_phases = timed_json([CRGPU, "restore", "--json", "-i", str(image)])
        return ckpt, rest


def compare(runtime: str, mib: int, reps: int, work: Path, hog: Path) -> dict[str, list[float]]:
    bundle = bundle_for(work, hog, mib, runtime)
    root = work / f"root-{runtime}"
    samples: dict[str, list[float]] = {"raw_ckpt": [], "raw_rest": [], "crgpu_ckpt": [], "crgpu_rest": []}
    for verb in ("ckpt", "rest"):
        for phase in PHASES:
            samples[f"{verb}_{phase}"] = []
    for rep in range(reps):
        order: list[tuple[str, Callable[[Arm, Path], tuple[float, float]]]] = [
            ("raw", Arm.raw),
            ("crgpu", Arm.crgpu),
        ]
        if rep % 2:
            order.reverse()
        for name, method in order:
            arm = Arm(runtime, root, bundle, f"bench-{runtime}-{mib}-{name}")
            image = work / f"img-{runtime}-{mib}-{name}-{rep}"
            for leftover in bundle.glob("rootfs/.gvisor.filestore.*"):
                leftover.unlink()
            for attempt in (1, 2):
                arm.start()
                try:
                    ckpt, rest = method(arm, image)
                    break
                except RuntimeError as exc:  # said, and retried once: one flaky dump must not void the run
                    print(f"  {name} attempt {attempt} failed: {exc}", file=sys.stderr)
                    if attempt == 2:
                        raise
                finally:
                    arm.delete()
                    shutil.rmtree(image, ignore_errors=True)
            samples[f"{name}_ckpt"].append(ckpt)
            samples[f"{name}_rest"].append(rest)
            if name == "crgpu":
                for phase in PHASES:
                    samples[f"ckpt_{phase}"].append(arm.ckpt_phases.get(phase, float("nan")))
                    samples[f"rest_{phase}"].append(arm.rest_phases.get(phase, float("nan")))
        print(f"  {runtime} {mib} MiB rep {rep + 1}/{reps}", file=sys.stderr)
    shutil.rmtree(bundle, ignore_errors=True)
    return samples


def lazy_vs_eager(mib: int, reps: int, work: Path, hog: Path) -> dict[str, list[float]]:
    bundle = bundle_for(work, hog, mib, "runc")
    root = work / "root-lazy"
    out: dict[str, list[float]] = {"eager": [], "lazy_running": [], "lazy_complete": []}
    for rep in range(reps):
        for lazy in [False, True] if rep % 2 == 0 else [True, False]:
            arm = Arm("runc", root, bundle, f"bench-lazy-{int(lazy)}")
            image = work / f"img-lazy-{rep}-{int(lazy)}"
            arm.start()
            try:
                subprocess.run(
                    [CRGPU, "checkpoint", "-q", "--root", str(root), "-i", str(image), arm.id],
                    check=True,
                    capture_output=True,
                )
                done = subprocess.run(
                    [CRGPU, "restore", "--json", *(["--lazy-pages"] if lazy else []), "-i", str(image)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                stats = json.loads(done.stdout)["stats"]
                if lazy:
                    out["lazy_running"].append(stats["time_to_running"] / 1e6)
                    out["lazy_complete"].append(stats["lazy_pages_complete"] / 1e6)
                else:
                    out["eager"].append(stats["runtime_restore_duration"] / 1e6)
            finally:
                arm.delete()
                shutil.rmtree(image, ignore_errors=True)
    return out


def _run_hog(podman: Any, name: str, mib: int, hog: Path) -> None:
    """A podman container running the hog, once its MIB MiB are filled."""
    podman("run", "-d", "--name", name, "-v", f"{hog}:/bin/hog:ro", podman.image(), "/bin/hog", str(mib))
    podman.names.append(name)
    deadline = time.monotonic() + 120
    while podman("exec", name, "/bin/busybox", "cat", "/tmp/count", check=False) == "":
        if time.monotonic() > deadline:
            raise RuntimeError("the hog never filled its memory")
        time.sleep(0.1)


def export_vs_podman(mib: int, reps: int, work: Path, hog: Path) -> dict[str, list[float]]:
    """One podman container holding MIB MiB; per rep, alternating: podman's own checkpoint with
    --export (zstd), and crgpu checkpoint + crgpu export (zstd). Both keep it running."""
    sys.path.insert(0, str(HERE.parent))  # the repository: podman as the tests run it
    from tests.testbed import Podman

    podman = Podman(work)
    env = {**os.environ, **podman.env}
    name = f"bench-export-{os.getpid()}"
    _run_hog(podman, name, mib, hog)
    out: dict[str, list[float]] = {
        k: []
        for k in ("podman_s", "podman_plain_s", "podman_bytes", "crgpu_s", "crgpu_export_s", "crgpu_bytes")
    }
    try:
        for rep in range(reps):
            arms = (
                ["podman", "crgpu", "podman-plain"] if rep % 2 == 0 else ["podman-plain", "crgpu", "podman"]
            )
            for arm in arms:
                archive = work / f"export-{arm}-{rep}.tar.zst"
                subprocess.run(["sync"], check=True)  # neither arm pays for the other's writeback
                if arm == "podman-plain":  # the same checkpoint without the archive: podman's dump alone
                    out["podman_plain_s"].append(
                        timed(["podman", "container", "checkpoint", "--leave-running", name], env)
                    )
                    continue
                if arm == "podman":
                    out["podman_s"].append(
                        timed(
                            [
                                "podman",
                                "container",
                                "checkpoint",
                                "--leave-running",
                                "--export",
                                str(archive),
                                name,
                            ],
                            env,
                        )
                    )
                    out["podman_bytes"].append(archive.stat().st_size)
                else:
                    image = work / f"export-img-{rep}"
                    ckpt = timed([CRGPU, "checkpoint", "-q", "--leave-running", "-i", str(image), name], env)
                    export = timed([CRGPU, "export", "-q", "-i", str(image), "-o", str(archive)], env)
                    out["crgpu_s"].append(ckpt + export)
                    out["crgpu_export_s"].append(export)
                    out["crgpu_bytes"].append(archive.stat().st_size)
                    shutil.rmtree(image, ignore_errors=True)
                archive.unlink()
            print(f"  export {mib} MiB rep {rep + 1}/{reps}", file=sys.stderr)
    finally:
        podman.cleanup()
    return out


def import_vs_podman(mib: int, reps: int, work: Path, hog: Path) -> dict[str, list[float]]:
    """One podman archive (podman's own `--export`, uncompressed) of a container holding MIB MiB;
    per rep, alternating: `podman container restore --import --name COPY` and `crgpu restore -i
    ARCHIVE --rootfs` (the image's root, mounted once), each until its copy runs, then removed."""
    sys.path.insert(0, str(HERE.parent))
    from tests.testbed import PODMAN_IMAGE, Podman

    podman = Podman(work)
    env = {**os.environ, **podman.env}
    name = f"bench-import-{os.getpid()}"
    _run_hog(podman, name, mib, hog)
    archive = work / "import.tar"
    podman("container", "checkpoint", "--leave-running", "--compress", "none", "--export", str(archive), name,
           timeout=600)  # fmt: skip
    lower = podman("image", "mount", PODMAN_IMAGE)
    root, work_root = work / "import-root", work / "import-work"
    crgpu_env = {**env, "CRGPU_WORK_ROOT": str(work_root)}
    out: dict[str, list[float]] = {"podman_s": [], "crgpu_s": [], "archive_bytes": [archive.stat().st_size]}
    try:
        for rep in range(reps):
            for arm in ("podman", "crgpu") if rep % 2 == 0 else ("crgpu", "podman"):
                copy = f"{name}-{arm}-{rep}"
                subprocess.run(["sync"], check=True)
                if arm == "podman":
                    out["podman_s"].append(
                        timed(
                            ["podman", "container", "restore", "--import", str(archive), "--name", copy], env
                        )
                    )
                    podman("rm", "-f", "-t", "0", copy)
                else:
                    argv = [
                        CRGPU,
                        "restore",
                        "-q",
                        "--trust-image",
                        "-i",
                        str(archive),
                        "--rootfs",
                        lower,
                        "--root",
                        str(root),
                        copy,
                    ]
                    out["crgpu_s"].append(timed(argv, crgpu_env))
                    subprocess.run(["runc", "--root", str(root), "delete", "--force", copy], check=True)
                    subprocess.run([CRGPU, "gc", "-q"], env=crgpu_env, check=True, capture_output=True)
            print(f"  import {mib} MiB rep {rep + 1}/{reps}", file=sys.stderr)
    finally:
        podman.cleanup()
    return out


IMPORT_HEADING = "## Restore of a "


def import_section(data: dict[str, list[float]], mib: int) -> list[str]:
    ps, cs = med(data["podman_s"]), med(data["crgpu_s"])
    return [
        f"{IMPORT_HEADING}{mib} MiB archive, against podman's import",
        "",
        "podman's own `--export` (uncompressed, "
        f"{data['archive_bytes'][0] / 2**20:.0f} MiB) of a podman container (runc) running the hog;",
        "each rep alternates (after a `sync`) `podman container restore --import ARCHIVE --name COPY` and",
        "`crgpu restore -i ARCHIVE --rootfs LOWER --root ROOT --trust-image COPY` (the hog is a bind mount",
        "of a host file, which needs the trust; crgpu still unpacks the archive as hostile input into",
        "its work root, rebuilds the spec, lays the layer over the image's root), each timed until its copy",
        "runs, then the copy is removed (podman rm; runc delete and crgpu gc).",
        "",
        "| | time to running |",
        "|---|---|",
        f"| podman --import | {ps:.3f} |",
        f"| crgpu restore -i | {cs:.3f} |",
        f"| crgpu/podman | {cs / ps:.2f} |",
    ]


def replace_section(text: str, section: list[str]) -> str:
    """`text` (BENCHMARKS.md) with its archive-restore section replaced, or added at its end."""
    heading = IMPORT_HEADING
    lines, out, skipping = text.rstrip("\n").split("\n"), [], False
    for line in lines:
        if line.startswith("## "):
            skipping = line.startswith(heading)
            if skipping:
                out += section
        if not skipping:
            out.append(line)
    if section[0] not in out:
        out += ["", *section]
    return "\n".join(out) + "\n"


FLOOR = "stack floor (benchmarks/stack_floor.py)"
DRY_RUN = "crgpu checkpoint --dry-run --json (a running runc container)"


def startup(samples: int, work: Path) -> dict[str, float]:
    def median(argv: list[str]) -> float:
        return statistics.median(timed(argv) for _ in range(samples))

    start = {
        "crgpu --version": median([CRGPU, "--version"]),
        "crgpu --help": median([CRGPU, "--help"]),
        "crgpu checkpoint --help": median([CRGPU, "checkpoint", "--help"]),
        "completion request (crgpu __complete ids)": median([CRGPU, "__complete", "ids"]),
        "crgpu doctor": median([CRGPU, "doctor", "--json"]) if os.geteuid() == 0 else float("nan"),
        "imports": imports_on_checkpoint_path(),
    }
    return {**interleaved_start_up(samples, work), **start}


def interleaved_start_up(samples: int, work: Path) -> dict[str, float]:
    """The interpreter, the stack floor and crgpu's start-up (its own `startup_s` in a dry run of a
    checkpoint of a running container: everything up to planning), one of each in turn, on a
    machine doing nothing else."""
    bundle = work / "bundle-startup"
    busybox_bundle(bundle, Path("/bin/busybox"), "runc", ["/bin/sleep", "1000000"])
    runc = ["runc", "--root", str(work / "root-startup")]
    timed([*runc, "run", "-d", "--bundle", str(bundle), "startup"])
    dry_run = [CRGPU, "checkpoint", "--dry-run", "--json", "--root", str(work / "root-startup")]
    runs: dict[str, list[float]] = {"python -c pass": [], FLOOR: [], DRY_RUN: []}
    try:
        for _ in range(samples):
            runs["python -c pass"].append(timed([sys.executable, "-c", "pass"]))
            runs[FLOOR].append(timed([sys.executable, str(HERE / "stack_floor.py")]))
            phases = timed_json([*dry_run, "-i", str(work / "dry-run-image"), "startup"])[1]
            runs[DRY_RUN].append(phases["startup_s"])
    finally:
        subprocess.run([*runc, "delete", "--force", "startup"], capture_output=True)
    return {name: statistics.median(values) for name, values in runs.items()}


def imports_on_checkpoint_path() -> float:
    """Seconds `python -X importtime` counts for every top-level import a checkpoint needs."""
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            "import crgpu.cli.app, crgpu.core.plan, crgpu.core.checkpoint, crgpu.core.restore",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    total = 0
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            total += int(parts[1])
    return total / 1e6


def med(values: list[float]) -> float:
    return statistics.median(values)


def report(
    rows: dict[tuple[str, int], dict[str, list[float]]],
    lazy: dict[str, list[float]] | None,
    start: dict[str, float],
    reps: int,
    lazy_mib: int,
    export: dict[str, list[float]] | None = None,
) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Made by `benchmarks/run.py` on {time.strftime('%Y-%m-%d')}: {platform.node() and 'this machine'}, "
        f"{os.cpu_count()} cores, kernel {platform.release()}, {reps} runs per arm (A/B alternating), medians in seconds.",
        "runc is Debian's 1.1.15 with CRIU 4.1.1; runsc is Debian's 0.0~20240729 with `--compression none` in both arms.",
        f"crgpu runs on Python {platform.python_version()} ({sys.executable}).",
        "",
        "## Checkpoint and restore: crgpu against the raw runtime",
        "",
        "| runtime | memory | raw checkpoint | crgpu checkpoint | ratio | raw restore | crgpu restore | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (runtime, mib), s in rows.items():
        rc, cc, rr, cr = med(s["raw_ckpt"]), med(s["crgpu_ckpt"]), med(s["raw_rest"]), med(s["crgpu_rest"])
        lines.append(
            f"| {runtime} | {mib} MiB | {rc:.3f} | {cc:.3f} | {cc / rc:.2f} | {rr:.3f} | {cr:.3f} | {cr / rr:.2f} |"
        )
    lines += [
        "",
        "## Where crgpu's time goes (its own `timings`, medians in ms)",
        "",
        "`startup_s`: from the process's start (the kernel's count) to the validated options, the command's code",
        "loaded; `plan_s`: the plan; `runtime_s`: the runtime call, CRIU included; `post_s`: crgpu's own work",
        "around the call (lock, directories, statistics, manifest, clean-up).",
        "",
        "| runtime | memory | verb | start-up | plan | runtime | crgpu after plan | plan + after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (runtime, mib), s in rows.items():
        for verb, key in (("checkpoint", "ckpt"), ("restore", "rest")):
            st, pl, rt, po = (med(s[f"{key}_{p}"]) * 1000 for p in PHASES)
            lines.append(
                f"| {runtime} | {mib} MiB | {verb} | {st:.0f} | {pl:.0f} | {rt:.0f} | {po:.0f} | {pl + po:.0f} |"
            )
    lines += [
        "",
        "## Start-up",
        "",
        "The first three rows ran in turn, one of each, on an idle machine (crgpu's is its own `startup_s`);",
        "the round trips above measure start-up while images are written and read.",
        "",
        "| command | median |",
        "|---|---|",
    ]
    for name, value in start.items():
        if name != "imports":
            lines.append(f"| `{name}` | {value * 1000:.0f} ms |")
    base = start["python -c pass"]
    floor = start[FLOOR]
    dry = start[DRY_RUN]
    lines.append(f"| `crgpu --version` / `python -c pass` | {start['crgpu --version'] / base:.1f}x |")
    lines.append(f"| stack floor / `python -c pass` | {floor / base:.1f}x |")
    lines.append(
        f"| crgpu's start-up in that dry run / `python -c pass` | {dry / base:.1f}x "
        f"(the stack floor + {(dry - floor) * 1000:.0f} ms) |"
    )
    lines += [
        f"| imports on the checkpoint path (`python -X importtime`) | {start['imports'] * 1000:.0f} ms |",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for runtime in ("runc", "runsc"):
        if (runtime, 1024) in rows:
            s = rows[(runtime, 1024)]
            for verb, raw, ours in (
                ("checkpoint", "raw_ckpt", "crgpu_ckpt"),
                ("restore", "raw_rest", "crgpu_rest"),
            ):
                ratio = med(s[ours]) / med(s[raw])
                lines.append(
                    f"| {runtime} {verb} at 1024 MiB: crgpu/raw <= 1.05 | {ratio:.2f} | {'yes' if ratio <= 1.05 else 'no'} |"
                )
    smallest = min((mib for _, mib in rows), default=None)
    for (runtime, mib), s in rows.items():
        if mib != smallest:
            continue
        for verb, key in (("checkpoint", "ckpt"), ("restore", "rest")):
            own = (med(s[f"{key}_plan_s"]) + med(s[f"{key}_post_s"])) * 1000
            startup_x = med(s[f"{key}_startup_s"]) / base
            lines.append(
                f"| {runtime} {verb} at {mib} MiB: plan + after <= 30 ms | {own:.0f} ms | {'yes' if own <= 30 else 'no'} |"
            )
            lines.append(
                f"| {runtime} {verb}: start-up <= 12x `python -c pass` (round trips) | {startup_x:.1f}x "
                f"| {'yes' if startup_x <= 12 else 'no'} |"
            )
    idle_x = dry / base
    lines.append(
        f"| checkpoint start-up <= 12x `python -c pass` (idle, in turn with it) | {idle_x:.1f}x: stack floor "
        f"{floor / base:.1f}x + crgpu's own {(dry - floor) * 1000:.0f} ms | {'yes' if idle_x <= 12 else 'no'} |"
    )
    help_x = start["crgpu checkpoint --help"] / base
    version_ratio = start["crgpu --version"] / base
    completion = start["completion request (crgpu __complete ids)"]
    lines += [
        f"| `crgpu checkpoint --help` <= 6x `python -c pass` | {help_x:.1f}x | {'yes' if help_x <= 6 else 'no'} |",
        f"| `crgpu --version` <= 8x `python -c pass` | {version_ratio:.1f}x | {'yes' if version_ratio <= 8 else 'no'} |",
        f"| completion request <= 150 ms | {completion * 1000:.0f} ms | {'yes' if completion <= 0.15 else 'no'} |",
        f"| `crgpu doctor` <= 1 s | {start['crgpu doctor'] * 1000:.0f} ms | {'yes' if start['crgpu doctor'] <= 1 else 'no'} |",
        "",
        "crgpu adds a fixed cost per call, whatever the memory size, and the per-phase table shows it: start-up",
        "(the interpreter and the imports of its fixed stack: Typer, pydantic, crgpu's models) is most of it.",
        "The stack floor is the least any CLI on that stack costs here (Typer parsing one option into a",
        "one-field pydantic model, benchmarks/stack_floor.py); crgpu's own share of its start-up is the",
        "rest: its modules, its option and manifest models, the command's Typer parameters. `--help`",
        "and `--version` print without loading Typer (help pre-rendered by scripts/gendocs.py).",
        "The plan reads the runtime's state files (a runtime call only where they leave the container's",
        "status open); crgpu's own work after the call is the manifest (validated, signed, fsynced) and",
        "the statistics. The container's frozen time is the runtime's own: crgpu adds nothing",
        "between freeze and thaw.",
    ]
    if lazy:
        lines += [
            "",
            f"## Lazy restore at {lazy_mib} MiB (runc)",
            "",
            "| restore | time to running | all pages in |",
            "|---|---|---|",
            f"| eager | {med(lazy['eager']):.3f} | {med(lazy['eager']):.3f} |",
            f"| `--lazy-pages` | {med(lazy['lazy_running']):.3f} | {med(lazy['lazy_complete']):.3f} |",
        ]
    if export:
        ps, cs, ce = med(export["podman_s"]), med(export["crgpu_s"]), med(export["crgpu_export_s"])
        pp = med(export["podman_plain_s"])
        pb, cb = med(export["podman_bytes"]), med(export["crgpu_bytes"])
        lines += [
            "",
            f"## Export of a {lazy_mib} MiB checkpoint (zstd), against podman",
            "",
            "One podman container (runc) running the hog, kept running; each rep alternates (after a `sync`)",
            "`podman container checkpoint --leave-running --export`, the same without `--export` (podman's",
            "dump alone: the archive's share is the difference), and `crgpu checkpoint --leave-running`",
            "plus `crgpu export` (zstd, crgpu's own process with its start-up). The hog's memory is a",
            "256-byte pattern, so both archives are tiny: this measures reading and packing, not compression.",
            "",
            "| | checkpoint + archive | the archive alone | archive size |",
            "|---|---|---|---|",
            f"| podman | {ps:.3f} | {ps - pp:.3f} (export minus plain) | {pb / 2**10:.0f} KiB |",
            f"| crgpu | {cs:.3f} | {ce:.3f} (`crgpu export`) | {cb / 2**10:.0f} KiB |",
            f"| crgpu/podman | {cs / ps:.2f} | {ce / (ps - pp) if ps > pp else float('nan'):.2f} | {cb / pb:.2f} |",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sizes", default="16,200,1024")
    parser.add_argument("--runtimes", default="runc,runsc")
    parser.add_argument("--out", default=str(HERE.parent / "BENCHMARKS.md"))
    parser.add_argument("--no-export", action="store_true", help="skip the export-against-podman rows")
    parser.add_argument(
        "--only-import", action="store_true", help="only the archive-restore rows, replaced in --out"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: the benchmarks start real containers", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="crgpu-bench-"))
    if args.only_import:
        try:
            mib = max(int(s) for s in args.sizes.split(","))
            section = import_section(import_vs_podman(mib, args.reps, work, build_hog(work)), mib)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        out = Path(args.out)
        out.write_text(replace_section(out.read_text() if out.exists() else "# Benchmarks\n", section))
        print("\n".join(section))
        return 0
    try:
        hog = build_hog(work)
        rows: dict[tuple[str, int], dict[str, list[float]]] = {}
        for runtime in args.runtimes.split(","):
            for mib in (int(s) for s in args.sizes.split(",")):
                rows[(runtime, mib)] = compare(runtime, mib, args.reps, work, hog)
        lazy_mib = max(int(s) for s in args.sizes.split(","))
        lazy = lazy_vs_eager(lazy_mib, args.reps, work, hog) if "runc" in args.runtimes else None
        export = None if args.no_export else export_vs_podman(lazy_mib, args.reps, work, hog)
        imported = None if args.no_export else import_vs_podman(lazy_mib, args.reps, work, hog)
        start = startup(15, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(rows, lazy, start, args.reps, lazy_mib, export)
    if imported is not None:
        text = replace_section(text, import_section(imported, lazy_mib))
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
