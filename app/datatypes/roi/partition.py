"""``GET partition``: DVID's two ways of covering an ROI with subvolumes of about
``batchsize``³ blocks, reproduced number for number (datatype/roi/roi.go
``SimplePartition`` and ``Partition``), quirks included: the reported ROI extent in x
and y starts from 0, counts of overlapping spans add up, and the optimized form's merge
step moves the previous subvolume's ``MaxPoint`` to the *first* voxel of its new last
block.

Two departures, both where DVID's output is broken: a layer of ``batchsize`` z-slices
is found for every span (DVID advances one layer per span, so an ROI with a gap in z
puts later spans in layers that do not contain them), and an optimized merge with no
earlier subvolume starts one (DVID indexes before its list and panics).

Spans here are ``(n, 4)`` int64 z, y, x0, x1 sorted by z, y, x0 (DVID's key order), as
stored; nothing is merged, since DVID counts every stored span.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.errors import TooLarge

#: More subvolumes (or optimized steps) than this are refused (413): at about 400 bytes
#: of JSON each, the answer would pass 40 MB.
MAX_SUBVOLUMES = 100_000

Corner = tuple[int, int, int]


@dataclass
class Cover:
    """The answer being built (DVID's ``subvolumesT``)."""

    block_size: Corner
    min_z: int
    max_z: int
    total: int = 0
    active: int = 0
    roi_min: list[int] = field(default_factory=lambda: [0, 0, 0])
    roi_max: list[int] = field(default_factory=lambda: [0, 0, 0])
    subvolumes: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0

    def extend(self, dim: int, value: int) -> None:
        """DVID's ``ExtendDim`` on an extent that starts at the origin."""
        self.roi_min[dim] = min(self.roi_min[dim], value)
        self.roi_max[dim] = max(self.roi_max[dim], value)

    def step(self, count: int = 1) -> None:
        self.steps += count
        if self.steps > MAX_SUBVOLUMES:
            raise TooLarge(
                f"partitioning this ROI takes more than {MAX_SUBVOLUMES} subvolumes: "
                "use a larger batchsize"
            )

    def add(self, lo: Corner, hi: Corner, total: int, active: int) -> None:
        self.subvolumes.append(
            {
                "MinPoint": self.first_voxel(lo),
                "MaxPoint": [(c + 1) * s - 1 for c, s in zip(hi, self.block_size, strict=True)],
                "MinChunk": list(lo),
                "MaxChunk": list(hi),
                "TotalBlocks": total,
                "ActiveBlocks": active,
            }
        )

    def first_voxel(self, block: Corner) -> list[int]:
        return [c * s for c, s in zip(block, self.block_size, strict=True)]

    def as_json(self) -> dict[str, Any]:
        self.roi_min[2], self.roi_max[2] = self.min_z, self.max_z
        return {
            "NumTotalBlocks": self.total,
            "NumActiveBlocks": self.active,
            "NumSubvolumes": len(self.subvolumes),
            "ROI": {"MinChunk": self.roi_min, "MaxChunk": self.roi_max},
            "Subvolumes": self.subvolumes,
        }


def partition(spans: np.ndarray, block_size: Corner, batch: int, optimized: bool) -> dict[str, Any]:
    """DVID's partition JSON for ``spans`` (see the module docstring)."""
    spans = spans.astype(np.int64).reshape(-1, 4)
    if not len(spans):  # DVID's empty extent: MinZ = MaxInt32, MaxZ = MinInt32
        return Cover(block_size, 2**31 - 1, -(2**31)).as_json()
    min_z, max_z = int(spans[0, 0]), int(spans[-1, 0])
    cover = Cover(block_size, min_z, max_z)
    z_left = (max_z - min_z + 1) % batch
    layers = np.arange((max_z - min_z) // batch + 2, dtype=np.int64)
    if optimized:
        # First layer batch deep, the next z_left ones one deeper.
        ends = min_z + batch - 1 + layers * batch + np.minimum(layers, z_left)
    else:
        # Centred: the first layer starts z_left // 2 above MinZ.
        ends = min_z - z_left // 2 + (layers + 1) * batch - 1
    starts = np.concatenate([[ends[0] - batch + 1], ends[:-1] + 1])
    which = np.searchsorted(ends, spans[:, 0])
    firsts = np.flatnonzero(np.diff(which)) + 1
    for first, part in zip([0, *firsts], np.split(spans, firsts), strict=True):
        k = which[first]
        z_range = (int(starts[k]), int(ends[k]))
        if optimized:
            _layer_optimized(cover, part, z_range, batch)
        else:
            _layer_grid(cover, part, z_range, batch)
    return cover.as_json()


def _active(x0: np.ndarray, x1: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """DVID's ``findActives`` for many windows at once: per window ``lo..hi``, the summed
    overlap of every span ``x0..x1`` with it. With F(x) the blocks of all spans at or
    before x, a window's count is F(hi) - F(lo - 1)."""
    starts, ends = np.sort(x0), np.sort(x1)
    start_sums = np.concatenate([[0], np.cumsum(starts)])
    end_sums = np.concatenate([[0], np.cumsum(ends)])

    def upto(x: np.ndarray) -> np.ndarray:
        begun = np.searchsorted(starts, x, side="right")  # spans with x0 <= x
        done = np.searchsorted(ends, x, side="left")  # spans with x1 < x
        return begun * (x + 1) - start_sums[begun] - (done * x - end_sums[done])

    return upto(hi) - upto(lo - 1)


def _layer_grid(cover: Cover, spans: np.ndarray, z_range: tuple[int, int], batch: int) -> None:
    """``addSubvolumesGrid``: rows of fixed-size subvolumes centred on the layer's
    y range and on each row's x range; only those holding active blocks are listed,
    but all count in the totals."""
    y = spans[:, 1]
    min_y, max_y = int(y.min()), int(y.max())
    cover.extend(1, min_y)
    cover.extend(1, max_y)
    y_left = (max_y - min_y + 1) % batch
    beg_y = min_y - y_left // 2
    rows = (y - beg_y) // batch
    depth = z_range[1] - z_range[0] + 1
    for row in np.unique(rows):
        actives = spans[rows == row]
        y0 = beg_y + int(row) * batch
        min_x, max_x = int(actives[:, 2].min()), int(actives[:, 3].max())
        cover.extend(0, min_x)
        cover.extend(0, max_x)
        x_left = (max_x - min_x + 1) % batch
        beg_x, end_x = min_x - x_left // 2, max_x + (x_left - x_left // 2)
        lo = np.arange(beg_x, end_x + 1, batch, dtype=np.int64)
        counts = _active(actives[:, 2], actives[:, 3], lo, lo + batch - 1)
        cover.total += len(lo) * batch * batch * depth
        cover.active += int(counts.sum())
        listed = np.flatnonzero(counts)
        cover.step(len(listed))
        for i in listed:
            x0 = int(lo[i])
            cover.add(
                (x0, y0, z_range[0]),
                (x0 + batch - 1, y0 + batch - 1, z_range[1]),
                batch * batch * depth,
                int(counts[i]),
            )


def _layer_optimized(cover: Cover, spans: np.ndarray, z_range: tuple[int, int], batch: int) -> None:
    """``addSubvolumes`` with merging: rows from the layer's first y (the first
    ``dy % batch`` rows one deeper), subvolumes from each row's first x (likewise one
    wider); a subvolume with a gap is cut at its longest gap, its part before the gap
    added to the previous subvolume, and the next one starts after the gap."""
    y = spans[:, 1]
    min_y, max_y = int(y.min()), int(y.max())
    cover.extend(1, min_y)
    cover.extend(1, max_y)
    y_left = (max_y - min_y + 1) % batch
    rows = np.arange((max_y - min_y) // batch + 1, dtype=np.int64)
    row_ends = min_y + (rows + 1) * batch - 1 + np.minimum(rows + 1, y_left)
    which = np.searchsorted(row_ends, y)
    for row in np.unique(which):
        end_y = int(row_ends[row])
        beg_y = int(row_ends[row - 1]) + 1 if row else min_y
        _row_optimized(cover, spans[which == row], (beg_y, end_y), z_range, batch)


def _row_optimized(
    cover: Cover,
    actives: np.ndarray,
    y_range: tuple[int, int],
    z_range: tuple[int, int],
    batch: int,
) -> None:
    x0, x1 = actives[:, 2], actives[:, 3]
    min_x, max_x = int(x0.min()), int(x1.max())
    cover.extend(0, min_x)
    cover.extend(0, max_x)
    x_left = (max_x - min_x + 1) % batch
    (beg_y, end_y), (min_z, max_z) = y_range, z_range
    plane = (end_y - beg_y + 1) * (max_z - min_z + 1)
    beg_x = min_x
    while beg_x <= max_x:
        cover.step()
        end_x = beg_x + batch - 1
        if x_left > 0:
            end_x += 1
            x_left -= 1
        gap = _longest_gap(x0, x1, beg_x, end_x)
        if gap is None:
            count = _count(x0, x1, beg_x, end_x)
            total = (end_x - beg_x + 1) * plane
            cover.add((beg_x, beg_y, min_z), (end_x, end_y, max_z), total, count)
            beg_x = end_x + 1
        else:
            gap_beg, gap_end = gap
            total = count = 0
            if gap_beg - 1 >= beg_x:
                last: Corner = (gap_beg - 1, end_y, max_z)
                total = (gap_beg - beg_x) * plane
                count = _count(x0, x1, beg_x, gap_beg - 1)
                if not cover.subvolumes:
                    cover.add((beg_x, beg_y, min_z), last, 0, 0)
                previous = cover.subvolumes[-1]
                previous["MaxPoint"] = cover.first_voxel(last)
                previous["MaxChunk"] = list(last)
                previous["TotalBlocks"] += total
                previous["ActiveBlocks"] += count
            beg_x = gap_end + 1
        cover.total += total
        cover.active += count


def _count(x0: np.ndarray, x1: np.ndarray, lo: int, hi: int) -> int:
    return int(_active(x0, x1, np.array([lo]), np.array([hi]))[0])


def _longest_gap(x0: np.ndarray, x1: np.ndarray, lo: int, hi: int) -> tuple[int, int] | None:
    """``findXHoles``: the first longest run of ``lo..hi`` no span covers, or None."""
    hit = (x1 >= lo) & (x0 <= hi)
    marks = np.zeros(hi - lo + 2, dtype=np.int64)
    np.add.at(marks, np.maximum(x0[hit], lo) - lo, 1)
    np.add.at(marks, np.minimum(x1[hit], hi) - lo + 1, -1)
    free = np.concatenate([[False], np.cumsum(marks)[:-1] == 0, [False]])
    edges = np.flatnonzero(np.diff(free.astype(np.int8)))
    if not len(edges):
        return None
    begins, ends = edges[0::2], edges[1::2]  # free runs: begins..ends-1
    best = int(np.argmax(ends - begins))
    return lo + int(begins[best]), lo + int(ends[best]) - 1
