"""A throwaway OCI bundle of a static busybox: what `doctor --probe` checkpoints, and what the
tests and benchmarks run. One builder for all three."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from crgpu.host.errors import CrgpuError

BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
APPLETS = ("sh", "sleep", "cat", "echo", "mv", "ln", "rm", "dd", "head", "true", "tr")
SPEC_TIMEOUT_S = 30.0


def static_busybox() -> Path | None:
    """Debian's busybox-static; a dynamic busybox names its loader in .interp, up front."""
    for candidate in BUSYBOX_PATHS:
        path = Path(candidate)
        try:
            head = path.read_bytes()[:4096]
        except OSError:
            continue
        if b"ld-linux" not in head:
            return path
    return None


def busybox_bundle(
    directory: Path, busybox: Path, spec_tool: str, args: list[str], *, terminal: bool = False
) -> Path:
    """A bundle whose rootfs is busybox and its applets, its config.json from `SPEC_TOOL spec`
    (runc or runsc), running `args` with a writable root."""
    rootfs = directory / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    for sub in ("tmp", "proc", "dev", "sys"):
        (rootfs / sub).mkdir()
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    done = subprocess.run(
        [spec_tool, "spec", "--bundle", str(directory)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SPEC_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise CrgpuError(f"{spec_tool} spec failed: {(done.stderr or done.stdout).strip()}")
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["terminal"] = terminal
    config["process"]["args"] = args
    config["root"]["readonly"] = False
    config_path.write_text(json.dumps(config, indent=2))
    return directory
