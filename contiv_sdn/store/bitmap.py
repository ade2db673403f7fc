"""Reading Redis bit strings: runs of used/free positions, counts.

Redis numbers bits from the most significant bit of byte 0.  Bitmaps can be
large (a /8 network is 2**24 bits), so runs are found a byte-run at a time:
whole 0x00/0xff stretches are skipped with one regex match.
"""

from __future__ import annotations

import re
from typing import List, Tuple

_RUNS = re.compile(rb"\x00+|\xff+|[\x01-\xfe]")


def bit(data: bytes, pos: int) -> int:
    i = pos >> 3
    if i >= len(data):
        return 0
    return (data[i] >> (7 - (pos & 7))) & 1


def runs(data: bytes, lo: int, hi: int, value: int = 1) -> List[Tuple[int, int]]:
    """Maximal [start, end] runs of positions in lo..hi whose bit equals ``value``."""
    out: List[Tuple[int, int]] = []
    if hi < lo:
        return out

    def add(a: int, b: int) -> None:
        a, b = max(a, lo), min(b, hi)
        if a > b:
            return
        if out and out[-1][1] + 1 == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))

    first_byte, last_byte = lo >> 3, hi >> 3
    covered = min(len(data), last_byte + 1)
    for m in _RUNS.finditer(data, first_byte, covered):
        start_bit, end_bit = m.start() * 8, m.end() * 8 - 1
        chunk = m.group()
        if chunk[0] == 0:
            if value == 0:
                add(start_bit, end_bit)
        elif chunk[0] == 0xFF:
            if value == 1:
                add(start_bit, end_bit)
        else:
            b = chunk[0]
            for k in range(8):
                if ((b >> (7 - k)) & 1) == value:
                    add(start_bit + k, start_bit + k)
    # positions past the end of the string are clear
    if value == 0 and covered * 8 <= hi:
        add(max(covered * 8, lo), hi)
    return out


def count(data: bytes, lo: int, hi: int) -> int:
    """Number of set bits in lo..hi."""
    return sum(b - a + 1 for a, b in runs(data, lo, hi, 1))


def range_string(items: List[Tuple[int, int]], render) -> str:
    """Contiv's ``"a-b, c"`` form (a run of one is a single value)."""
    parts = []
    for a, b in items:
        parts.append(render(a) if a == b else f"{render(a)}-{render(b)}")
    return ", ".join(parts)
