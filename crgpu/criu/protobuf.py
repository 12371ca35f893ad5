"""Reading protobuf messages without their schema: CRIU's images (stats, inventory, cores, mounts)
are protobuf, and crgpu reads the few fields it needs by number, as data it does not trust."""

from __future__ import annotations

from collections.abc import Iterator

Value = int | bytes


def varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def iter_fields(data: bytes) -> Iterator[tuple[int, Value]]:
    """Each field of a message in order: varints as ints, length-delimited ones as bytes; fixed
    32/64-bit fields are skipped. Raises ValueError on a malformed message."""
    pos = 0
    while pos < len(data):
        key, pos = varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(data, pos)
            yield number, value
        elif wire == 2:
            length, pos = varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            yield number, data[pos : pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos > len(data):
        raise ValueError("truncated field")


def fields(data: bytes) -> dict[int, Value]:
    """A message's fields by number (the last one wins, as protobuf reads a repeated scalar)."""
    return dict(iter_fields(data))


def repeated_uint(data: bytes, number: int) -> list[int]:
    """A repeated unsigned field, packed or not."""
    out: list[int] = []
    for field, value in iter_fields(data):
        if field != number:
            continue
        if isinstance(value, int):
            out.append(value)
        else:
            pos = 0
            while pos < len(value):
                item, pos = varint(value, pos)
                out.append(item)
    return out


def message(data: bytes, number: int) -> bytes | None:
    """An embedded message field (the last one), or None."""
    value = fields(data).get(number)
    return value if isinstance(value, bytes) else None


def repeated_bytes(data: bytes, number: int) -> list[bytes]:
    """Every length-delimited value of a field: a repeated message or string."""
    return [value for field, value in iter_fields(data) if field == number and isinstance(value, bytes)]
