"""CRIU's stats-dump and stats-restore (images/stats.proto), read by field number as podman's --print-stats names them."""

from __future__ import annotations

from pathlib import Path

from crgpu.criu.protobuf import fields

# CRIU's images/stats.proto: stats_entry { dump_stats_entry dump = 1; restore_stats_entry restore = 2; }
DUMP_STATS_FIELDS = {
    1: "freezing_time",
    2: "frozen_time",
    3: "memdump_time",
    4: "memwrite_time",
    5: "pages_scanned",
    6: "pages_skipped_parent",
    7: "pages_written",
    8: "irmap_resolve",
    9: "pages_lazy",
    10: "page_pipes",
    11: "page_pipe_bufs",
    12: "shpages_scanned",
    13: "shpages_skipped_parent",
    14: "shpages_written",
}
RESTORE_STATS_FIELDS = {
    1: "pages_compared",
    2: "pages_skipped_cow",
    3: "forking_time",
    4: "restore_time",
    5: "pages_restored",
}


def read_stats(path: Path) -> dict[str, int]:
    """CRIU's stats-dump or stats-restore: two 4-byte magics, a 4-byte length, one message.

    Times are microseconds, named as podman's --print-stats names them. Empty when absent.
    """
    try:
        raw = path.read_bytes()
    except OSError:
        return {}
    return parse_stats(raw)


def parse_stats(raw: bytes) -> dict[str, int]:
    """read_stats of bytes already read (a stats-dump inside an archive)."""
    try:
        length = int.from_bytes(raw[8:12], "little")
        entry = fields(raw[12 : 12 + length])
        stats: dict[str, int] = {}
        for number, names in ((1, DUMP_STATS_FIELDS), (2, RESTORE_STATS_FIELDS)):
            body = entry.get(number)
            if isinstance(body, bytes):
                for field, value in fields(body).items():
                    if field in names and isinstance(value, int):
                        stats[names[field]] = value
        return stats
    except ValueError:
        return {}
