"""Editing CRIU's images as an attacker would: a protobuf message taken apart into its fields and
put together again (the encoder crgpu itself never needs)."""

from __future__ import annotations

from collections.abc import Callable

from crgpu.criu.protobuf import iter_fields

Fields = list[tuple[int, int | bytes]]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode(message: Fields) -> bytes:
    out = bytearray()
    for number, value in message:
        if isinstance(value, int):
            out += _varint(number << 3) + _varint(value)
        else:
            out += _varint(number << 3 | 2) + _varint(len(value)) + value
    return bytes(out)


def decode(data: bytes) -> Fields:
    return list(iter_fields(data))


def edit_entries(raw: bytes, heads: int, edit: Callable[[list[bytes]], list[bytes]]) -> bytes:
    """An image (`heads` 4-byte magics, then length-prefixed entries) with its entries rewritten."""
    head, pos, entries = raw[: 4 * heads], 4 * heads, []
    while pos < len(raw):
        length = int.from_bytes(raw[pos : pos + 4], "little")
        entries.append(raw[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return head + b"".join(len(entry).to_bytes(4, "little") + entry for entry in edit(entries))


def map_members(entry: bytes, change: Callable[[str, str], str]) -> bytes:
    """A cgroup_entry with each task's cgroup path (cg_set_entry.ctls[].path) replaced by
    `change(controller, path)`."""
    out: Fields = []
    for number, value in decode(entry):
        if number == 1 and isinstance(value, bytes):
            cgset: Fields = []
            for sub, member in decode(value):
                if sub == 2 and isinstance(member, bytes):
                    parts = decode(member)
                    name = next(v for n, v in parts if n == 1)
                    assert isinstance(name, bytes)
                    member = encode(
                        [(n, change(name.decode(), v.decode()).encode() if n == 2 and isinstance(v, bytes) else v)
                         for n, v in parts]
                    )  # fmt: skip
                cgset.append((sub, member))
            value = encode(cgset)
        out.append((number, value))
    return encode(out)
