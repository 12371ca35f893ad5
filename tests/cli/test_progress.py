"""The live progress line of a checkpoint: bytes of the image against the bytes expected, elapsed
time and rate, in the binary units crgpu shows everywhere (before: a static panel for seconds)."""

from __future__ import annotations

from pathlib import Path

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
