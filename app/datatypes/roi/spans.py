"""An ROI's spans: parsing them from JSON, their stored bytes, and :class:`SpanIndex`, the
merged form that answers which blocks (and so which voxels) are inside.

A span is ``[z, y, x0, x1]`` in block coordinates, ``x0..x1`` inclusive. Spans are kept
as DVID keeps them (its keys are the spans themselves): sorted by z, y, x0, x1, exact
duplicates collapsed, overlapping or adjacent spans left apart, so ``GET roi`` answers
what was posted. Questions of membership go through :class:`SpanIndex`, which merges each
row's overlapping and adjacent spans into disjoint runs first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.errors import BadRequest, TooLarge
from app.volumes.geometry import BLOCK_LIMIT

#: Stored form: little-endian int32 ``z, y, x0, x1`` per span.
SPAN_DTYPE = np.dtype("<i4")
#: Row keys ``z << 32 | (y + 2^31)`` order rows by z then y for any int32 y; a run's key
#: ``row rank << 33 | (x + 2^31)`` orders runs of different rows apart (gap > 1).
_Y_BIAS = 1 << 31
_ROW_SHIFT = 33
#: ``region_blocks`` refuses to list more blocks than this (64 Mi blocks are 1.5 GB of
#: int64 coordinates): a caller wanting a bigger region must work with the spans.
MAX_LISTED_BLOCKS = 1 << 26

SPAN_SHAPE = "[z, y, x0, x1] with 4 integer block coordinates"


def parse_spans(value: Any) -> np.ndarray:
    """A JSON list of spans as a canonical ``(n, 4)`` int32 array (sorted, duplicates
    collapsed); 400 naming the first bad span, so nothing is written from a bad body."""
    if not isinstance(value, list):
        raise BadRequest(f"ROI must be a JSON list of spans {SPAN_SHAPE}")
    for i, span in enumerate(value):
        if not (type(span) is list and len(span) == 4 and all(type(c) is int for c in span)):
            raise BadRequest(f"span {i} ({_shown(span)}) must be {SPAN_SHAPE}")
    if not value:
        return np.empty((0, 4), SPAN_DTYPE)
    try:
        spans = np.array(value, dtype=np.int64)
    except OverflowError:
        spans = None
    if spans is None or (np.abs(spans) >= BLOCK_LIMIT).any():
        bad = _first(lambda s: any(abs(c) >= BLOCK_LIMIT for c in s), value)
        raise BadRequest(f"span {bad} ({value[bad]}) has a block coordinate outside ±2^20")
    backwards = spans[:, 2] > spans[:, 3]
    if backwards.any():
        bad = int(np.argmax(backwards))
        raise BadRequest(f"span {bad} ({value[bad]}) has x0 > x1: spans run from x0 to x1")
    return np.unique(spans, axis=0).astype(SPAN_DTYPE)


def _first(predicate: Any, items: list) -> int:
    return next(i for i, item in enumerate(items) if predicate(item))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def encode(spans: np.ndarray) -> bytes:
    return np.ascontiguousarray(spans, dtype=SPAN_DTYPE).tobytes()


def decode(value: bytes) -> np.ndarray:
    """The ``(n, 4)`` spans of a stored value (read-only: it views the bytes)."""
    if len(value) % (4 * SPAN_DTYPE.itemsize):
        raise ValueError(f"a stored ROI of {len(value)} bytes is not whole int32 spans")
    return np.frombuffer(value, dtype=SPAN_DTYPE).reshape(-1, 4)


def from_blocks(blocks: np.ndarray) -> np.ndarray:
    """Blocks ``(n, 3)`` x,y,z as the fewest spans ``(m, 4)`` z, y, x0, x1, sorted."""
    b = np.asarray(blocks, dtype=np.int64).reshape(-1, 3)
    if not len(b):
        return np.empty((0, 4), SPAN_DTYPE)
    b = b[np.lexsort((b[:, 0], b[:, 1], b[:, 2]))]
    starts = np.ones(len(b), dtype=bool)
    starts[1:] = (b[1:, 2] != b[:-1, 2]) | (b[1:, 1] != b[:-1, 1]) | (b[1:, 0] != b[:-1, 0] + 1)
    first = np.flatnonzero(starts)
    last = np.append(first[1:], len(b)) - 1
    return np.stack([b[first, 2], b[first, 1], b[first, 0], b[last, 0]], axis=1).astype(SPAN_DTYPE)


def _row_keys(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (z.astype(np.int64) << 32) + (y.astype(np.int64) + _Y_BIAS)


class SpanIndex:
    """The blocks of a set of spans as disjoint runs per row, for vectorised lookups:
    one ``searchsorted`` finds a block's row, a second its run."""

    def __init__(self, spans: np.ndarray) -> None:
        s = spans.astype(np.int64).reshape(-1, 4)  # sorted by z, y, x0 (canonical)
        rows = _row_keys(s[:, 0], s[:, 1])
        new_row = np.ones(len(s), dtype=bool)
        new_row[1:] = rows[1:] != rows[:-1]
        #: Distinct row keys, sorted; a run's row rank indexes this.
        self.rows = rows[new_row]
        rank = np.cumsum(new_row) - 1
        lo = (rank << _ROW_SHIFT) + s[:, 2] + _Y_BIAS
        hi = (rank << _ROW_SHIFT) + s[:, 3] + _Y_BIAS
        reach = np.maximum.accumulate(hi) if len(hi) else hi
        starts = np.ones(len(s), dtype=bool)
        starts[1:] = lo[1:] > reach[:-1] + 1  # neither overlapping nor adjacent
        first = np.flatnonzero(starts)
        #: Run keys (see ``_ROW_SHIFT``), first and last block inclusive, sorted.
        self.run_lo = lo[first]
        self.run_hi = np.maximum.reduceat(hi, first) if len(first) else hi
        #: Each run's z, y, x0, x1.
        self.z = s[first, 0]
        self.y = s[first, 1]
        self.x0 = s[first, 2]
        self.x1 = self.x0 + (self.run_hi - self.run_lo)

    def __len__(self) -> int:
        return len(self.run_lo)

    def block_count(self) -> int:
        return int((self.x1 - self.x0 + 1).sum())

    def contains(self, blocks: np.ndarray) -> np.ndarray:
        """Whether each block ``(n, 3)`` x,y,z is inside (any int64 coordinates)."""
        blocks = np.asarray(blocks, dtype=np.int64).reshape(-1, 3)
        inside = np.zeros(len(blocks), dtype=bool)
        if not len(self) or not len(blocks):
            return inside
        x, y, z = blocks[:, 0], blocks[:, 1], blocks[:, 2]
        # Blocks beyond int32 are in no row (and would overflow the keys).
        fits = (np.abs(blocks) < _Y_BIAS).all(axis=1)
        keys = _row_keys(np.where(fits, z, 0), np.where(fits, y, 0))
        rank = np.minimum(np.searchsorted(self.rows, keys), len(self.rows) - 1)
        in_row = fits & (self.rows[rank] == keys)
        run_key = (rank << _ROW_SHIFT) + np.where(fits, x, 0) + _Y_BIAS
        run = np.searchsorted(self.run_lo, run_key, side="right") - 1
        inside = in_row & (run >= 0) & (run_key <= self.run_hi[np.maximum(run, 0)])
        return inside

    def blocks(self) -> np.ndarray:
        """Every block ``(n, 3)`` int64 x,y,z, sorted by z, y, x; 413 past
        :data:`MAX_LISTED_BLOCKS`."""
        lengths = self.x1 - self.x0 + 1
        total = int(lengths.sum())
        if total > MAX_LISTED_BLOCKS:
            raise TooLarge(
                f"the ROI holds {total} blocks; at most {MAX_LISTED_BLOCKS} can be listed"
            )
        before = np.cumsum(lengths) - lengths
        x = np.arange(total, dtype=np.int64) + np.repeat(self.x0 - before, lengths)
        return np.stack([x, np.repeat(self.y, lengths), np.repeat(self.z, lengths)], axis=1)

    def grid(self, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
        """Which blocks of the inclusive block box ``lo..hi`` (x, y, z) are inside, as a
        boolean ``(nz, ny, nx)`` array: each run's clipped part marked by a +1/-1 pair
        along x, then a cumulative sum (runs are disjoint and apart, so one byte holds
        every mark and every sum)."""
        (x_lo, y_lo, z_lo), (x_hi, y_hi, z_hi) = lo, hi
        shape = (z_hi - z_lo + 1, y_hi - y_lo + 1, x_hi - x_lo + 2)
        marks = np.zeros(shape, dtype=np.int8)
        hit = (
            (self.z >= z_lo)
            & (self.z <= z_hi)
            & (self.y >= y_lo)
            & (self.y <= y_hi)
            & (self.x1 >= x_lo)
            & (self.x0 <= x_hi)
        )
        z, y = self.z[hit] - z_lo, self.y[hit] - y_lo
        first = np.maximum(self.x0[hit], x_lo) - x_lo
        last = np.minimum(self.x1[hit], x_hi) - x_lo
        np.add.at(marks, (z, y, first), 1)
        np.add.at(marks, (z, y, last + 1), -1)
        return np.cumsum(marks, axis=2, dtype=np.int8)[:, :, :-1] > 0
