"""A few sizes instead of every size: the shapes the engine hands to the model.

On CPU, oneDNN keeps state for every new bfloat16 matrix shape it sees and never lets it go;
a server whose batch rows and prompt widths take every value grew by ~0.5 MiB per shape
(345 -> 1241 MiB over 1,500 random shapes on the tiny test model, flat with 9 shapes or in
float32). So prompt widths are padded up to a width bucket, prefill groups split into
power-of-two row counts, and the batch's row count kept at a row bucket: at most a few dozen
shapes, for at most ~1/3 of extra (masked) work.
"""

from __future__ import annotations

ROW_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def row_bucket(rows: int) -> int:
    """The smallest row bucket holding ``rows`` (multiples of 64 past the table)."""
    for size in ROW_BUCKETS:
        if rows <= size:
            return size
    return -(-rows // 64) * 64


def width_bucket(width: int) -> int:
    """``width`` rounded up: to 16 below 64, to 32 below 256, to 128 below 1024, then to 512."""
    for limit, step in ((64, 16), (256, 32), (1024, 128)):
        if width <= limit:
            return max(step, -(-width // step) * step)
    return -(-width // 512) * 512


def power_of_two_groups(items: list) -> list[list]:
    """``items`` cut, in order, into groups whose sizes are powers of two (11 -> 8, 2, 1)."""
    groups, start = [], 0
    while start < len(items):
        size = 1 << ((len(items) - start).bit_length() - 1)
        groups.append(items[start:start + size])
        start += size
    return groups
