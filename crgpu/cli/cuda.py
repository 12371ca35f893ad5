"""`crgpu cuda state|lock|checkpoint|restore|unlock --pid PID`: the driver's checkpoint API by hand."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from crgpu.cli.common import DebugOpt, JsonOpt, QuietOpt, run_guarded, unwrapped
from crgpu.cli.render import Renderer

EXAMPLES = """
Examples:

  crgpu cuda state --pid 4242

  crgpu cuda lock --pid 4242 --timeout-ms 5000 && crgpu cuda checkpoint --pid 4242

  crgpu cuda restore --pid 4242 --device-map GPU-aaaa...=GPU-bbbb... && crgpu cuda unlock --pid 4242
"""

cuda_app = typer.Typer(
    name="cuda",
    help="Drive one CUDA process through the driver's checkpoint API (NVIDIA driver 570+).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

_EPILOG = unwrapped(EXAMPLES)
PidOpt = Annotated[
    int, typer.Option("--pid", metavar="PID", help="The CUDA process (a host PID).", show_default=False)
]


def _run(verb: str, pid: int, as_json: bool, quiet: bool, debug: bool, **kwargs: object) -> None:
    renderer = Renderer(as_json=as_json, quiet=quiet)

    def body() -> int:
        from crgpu.host.errors import UsageError
        from crgpu.nvidia.cuda import load_driver

        if pid <= 0:
            raise UsageError(f"--pid {pid} is not a process ID")
        if verb == "restore":
            _device_map(kwargs.get("device_map"))  # type: ignore[arg-type]  # bad input fails before the driver
        driver = load_driver()
        if verb == "lock":
            driver.lock(pid, int(kwargs["timeout_ms"]))  # type: ignore[call-overload]
        elif verb == "checkpoint":
            driver.checkpoint(pid)
        elif verb == "restore":
            driver.restore(pid, _device_map(kwargs.get("device_map")) or None)  # type: ignore[arg-type]
        elif verb == "unlock":
            driver.unlock(pid)
        state = driver.state(pid)
        if as_json:
            renderer.json({"ok": True, "pid": pid, "action": verb, "state": state})
        else:
            print(state)
        return 0

    run_guarded(renderer, debug, body)


def _device_map(text: str | None) -> dict[str, str]:
    from crgpu.host.errors import UsageError

    if not text:
        return {}
    from crgpu.nvidia.gpu_map import GPU_UUID

    pairs = {}
    for item in text.split(","):
        old, sep, new = item.partition("=")
        if not sep or not GPU_UUID.fullmatch(old) or not GPU_UUID.fullmatch(new):
            raise UsageError(
                f"--device-map {text!r}: use OLD-UUID=NEW-UUID[,...] with GPU UUIDs as nvidia-smi -L "
                "prints them (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
            )
        pairs[old] = new
    return pairs


@cuda_app.command("state", epilog=_EPILOG)
def state(pid: PidOpt, as_json: JsonOpt = False, debug: DebugOpt = False, quiet: QuietOpt = False) -> None:
    """Print the process's CUDA state: running, locked, checkpointed or failed."""
    _run("state", pid, as_json, quiet, debug)


@cuda_app.command("lock", epilog=_EPILOG)
def lock(
    pid: PidOpt,
    timeout_ms: Annotated[int, typer.Option("--timeout-ms", metavar="MS", help="0: wait for ever.")] = 10_000,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Lock the process's CUDA work (waits for running work to finish)."""
    _run("lock", pid, as_json, quiet, debug, timeout_ms=timeout_ms)


@cuda_app.command("checkpoint", epilog=_EPILOG)
def checkpoint(
    pid: PidOpt, as_json: JsonOpt = False, debug: DebugOpt = False, quiet: QuietOpt = False
) -> None:
    """Move a locked process's GPU memory into host memory."""
    _run("checkpoint", pid, as_json, quiet, debug)


@cuda_app.command("restore", epilog=_EPILOG)
def restore(
    pid: PidOpt,
    device_map: Annotated[
        Optional[str],
        typer.Option("--device-map", metavar="OLD=NEW,...", help="Restore onto other GPUs (driver 580)."),
    ] = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Put a checkpointed process's GPU state back (it stays locked)."""
    _run("restore", pid, as_json, quiet, debug, device_map=device_map)


@cuda_app.command("unlock", epilog=_EPILOG)
def unlock(pid: PidOpt, as_json: JsonOpt = False, debug: DebugOpt = False, quiet: QuietOpt = False) -> None:
    """Let the process's CUDA work run again."""
    _run("unlock", pid, as_json, quiet, debug)
