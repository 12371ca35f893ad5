"""Where a crgpu call's time goes: start-up (from the process's start, as the kernel counts it, to
the end of argument parsing), plan, the runtime call, and crgpu's own work around it."""

from __future__ import annotations

import os
import time

from crgpu.host.root import stat_fields


def process_age_s() -> float | None:
    """Seconds since this process started: /proc/self/stat's starttime (clock ticks since boot,
    10 ms resolution) against CLOCK_BOOTTIME. None when /proc cannot say."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            start_ticks = int(stat_fields(handle.read().decode(errors="replace"))[19])
    except (OSError, IndexError, ValueError):
        return None
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    return round(max(age, 0.0), 4)
