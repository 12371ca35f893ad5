"""CRIU's stats images decoded as crit decodes them."""

from __future__ import annotations

from pathlib import Path


def test_stats_decoding_matches_crit(tmp_path: Path) -> None:
    """Real stats files from CRIU 4.1.1; `crit show` printed the same numbers for them."""
    from crgpu.criu.stats import read_stats

    fixtures = Path(__file__).parent.parent / "fixtures" / "criu"
    dump = read_stats(fixtures / "stats-dump")
    assert {k: dump[k] for k in ("freezing_time", "frozen_time", "memdump_time", "memwrite_time")} == {
        "freezing_time": 100737,
        "frozen_time": 52441,
        "memdump_time": 1062,
        "memwrite_time": 161,
    }
    assert (dump["pages_scanned"], dump["pages_written"], dump["page_pipes"]) == (51, 34, 8)
    restore = read_stats(fixtures / "stats-restore")
    assert (restore["forking_time"], restore["restore_time"], restore["pages_restored"]) == (337, 72774, 33)
    assert read_stats(tmp_path / "absent") == {}
    (tmp_path / "bad").write_bytes(b"\x00" * 8 + b"\xff\xff\x00\x00" + b"\x0a\xff")
    assert read_stats(tmp_path / "bad") == {}
