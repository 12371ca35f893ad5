"""The live progress line of a checkpoint: bytes of the image against the bytes expected, elapsed
time and rate, in the binary units crgpu shows everywhere (before: a static panel for seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crgpu.cli.checkpoint import written_of_expected
from crgpu.cli.render import format_stats, progress_line, size_text


def test_the_line_says_bytes_of_expected_time_and_rate() -> None:
    assert progress_line((412 * 2**20, 2**30), 3.2) == "412.0 MiB of ~1.0 GiB (40%), 3.2 s, 128.8 MiB/s"
    assert progress_line((412 * 2**20, None), 3.2) == "412.0 MiB, 3.2 s, 128.8 MiB/s"
    assert progress_line(None, 1.25) == "1.2 s"  # nothing to measure: the clock alone
    assert progress_line((0, 2**30), 0.1) == "0 B of ~1.0 GiB (0%), 0.1 s"


def test_one_unit_system() -> None:
    assert [size_text(n) for n in (512, 2048, 5 * 2**20, 3 * 2**30, 2**42)] == [
        "512 B",
        "2.0 KiB",
        "5.0 MiB",
        "3.0 GiB",
        "4096.0 GiB",
    ]
    # pages as a size too (before: `pages_written 262159`)
    assert dict(format_stats({"pages_written": 262144}))["pages_written"] == "262144 (1.0 GiB)"


def test_the_measure_reads_the_image_as_it_grows(tmp_path: Path) -> None:
    image = tmp_path / "img"
    measure = written_of_expected(image, None, ())
    assert measure() == (0, None)  # not made yet: nothing written, nothing known
    image.mkdir()
    (image / "pages-1.img").write_bytes(b"\0" * 8192)
    (image / "crgpu.json").write_text("{}")  # the manifest is not the dump's
    assert measure() == (8192, None)


def test_runcs_repeated_cgroup_warnings_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Before: runc's ten `Failed to remove cgroup (will retry)` on every failed restore."""
    from crgpu.cli.render import Renderer

    renderer = Renderer(as_json=False, quiet=False)
    renderer.rich = False
    warning = (
        'time="2026-12-03T06:00:00Z" level=warning msg="Failed to remove cgroup (will retry)" error="busy"'
    )
    with renderer.stream("runc restore web") as sink:
        sink("criu: restoring")
        for _ in range(10):
            sink(warning)
    err = capsys.readouterr().err
    assert err.count("Failed to remove cgroup") == 2  # the first, and the count
    assert "(9 more 'Failed to remove cgroup (will retry)' from the runtime)" in err
    assert "criu: restoring" in err


def test_a_runsc_checkpoints_runtime_time_is_explained(capsys: pytest.CaptureFixture[str]) -> None:
    from crgpu.cli.render import Renderer

    renderer = Renderer(as_json=False, quiet=False)
    renderer.rich = False
    renderer.timings(
        {"startup_s": 0.05, "plan_s": 0.01, "runtime_s": 1.606, "runtime_delete_s": 1.52, "post_s": 0.02}
    )
    err = capsys.readouterr().err
    assert "runtime 1606 ms (of it, runsc's delete of the sandbox 1520 ms)" in err
