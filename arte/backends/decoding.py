"""Decoding rules shared by every backend, so they stop and seed identically."""

from __future__ import annotations

from collections.abc import Sequence


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """End index (exclusive) of the stop string that completes first in `text`, or None."""
    ends = [i + len(s) for s in stops if s and (i := text.find(s)) >= 0]
    return min(ends) if ends else None


def row_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index) % (2**63)
