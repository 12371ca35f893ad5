"""Which generation of NVIDIA's cuda-bindings goes with which driver, and which is installed.

NVIDIA documents cuda-bindings 13.x for driver 580.65.06 and newer, 12.x for older drivers: the
570-579 line (the first with the checkpoint API) needs 12.x, which has no GPU pairs, so a restore
onto other GPUs needs 580 and 13.x. crgpu's extras name the lines: `crgpu[cuda12]`, `crgpu[cuda13]`
(`crgpu[cuda]` is 13.x)."""

from __future__ import annotations

from crgpu.host.versions import version_tuple

# The first driver line with the checkpoint API (cuCheckpointProcess*, cuda-checkpoint).
MIN_DRIVER_API = 570
BINDINGS_13_MIN_DRIVER = (580, 65)


def installed_bindings() -> str | None:
    """The installed cuda-bindings' version, when its driver module imports; None when it does not."""
    try:
        from importlib.metadata import version

        import cuda.bindings.driver  # type: ignore[import-untyped, import-not-found, unused-ignore]  # noqa: F401
    except Exception:
        return None
    try:
        return version("cuda-bindings")
    except Exception:
        return "unknown"


def extra_for(driver_version: str | None) -> str:
    """The crgpu extra whose bindings are documented for this driver (13.x where it is unknown)."""
    if driver_version and version_tuple(driver_version)[:2] < BINDINGS_13_MIN_DRIVER:
        return "cuda12"
    return "cuda13"


def install_hint(driver_version: str | None) -> str:
    extra = extra_for(driver_version)
    line = "12.x, for drivers 570-579" if extra == "cuda12" else "13.x, for drivers 580.65.06+"
    return f"pip install 'crgpu[{extra}]' into crgpu's environment (NVIDIA's cuda-bindings {line})"


def bindings_mismatch(bindings: str | None, driver_version: str | None) -> str | None:
    """Why these bindings do not go with this driver, or None when they do (or either is unknown)."""
    if not bindings or bindings == "unknown" or not driver_version:
        return None
    major = version_tuple(bindings)[0]
    if major >= 13 and version_tuple(driver_version)[:2] < BINDINGS_13_MIN_DRIVER:
        return f"cuda-bindings {bindings} is documented for driver 580.65.06 or newer; this node has {driver_version}"
    return None
