"""Voxel boxes, block grids and the packing of block coordinates into chunk ids."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from app.errors import BadRequest

#: Block coordinates are signed; each axis is biased into 21 bits so that a block's id
#: (``z << 42 | y << 21 | x``) is a non-negative 63-bit integer. DVID's label index uses
#: the same 21-bit-per-axis packing.
_BITS = 21
_BIAS = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1
#: Voxel coordinates must stay inside the range the chunk arrays address.
COORD_LIMIT = 1 << 30

Vec = tuple[int, int, int]


def vec(values: Iterable[int]) -> Vec:
    """Three integers (x, y, z) as a :data:`Vec`."""
    x, y, z = values
    return int(x), int(y), int(z)


def parse_ints(text: str, what: str, n: int = 3, sep: str = "_") -> tuple[int, ...]:
    parts = text.replace(",", sep).split(sep) if sep == "_" else text.split(sep)
    if len(parts) != n:
        raise BadRequest(f"{what} {text!r} must be {n} integers separated by '{sep}'")
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise BadRequest(f"{what} {text!r} must be {n} integers separated by '{sep}'") from None


def parse_size(text: str, n: int = 3) -> tuple[int, ...]:
    size = parse_ints(text, "size", n)
    if any(s <= 0 for s in size):
        raise BadRequest(f"size {text!r} must be positive integers")
    if any(s > COORD_LIMIT for s in size):
        raise BadRequest(f"size {text!r} is too large")
    return size


def parse_point(text: str) -> Vec:
    point = parse_ints(text, "offset")
    if any(abs(p) >= COORD_LIMIT for p in point):
        raise BadRequest(f"offset {text!r} is outside the addressable volume (±2^30)")
    return vec(point)


def parse_box(size: str, offset: str) -> Box:
    """The box of ``nx_ny_nz`` voxels at ``x_y_z``."""
    return Box(parse_point(offset), vec(parse_size(size)))


@dataclass(frozen=True)
class Box:
    """A voxel box: ``offset`` (x, y, z) inclusive, ``size`` (nx, ny, nz)."""

    offset: Vec
    size: Vec

    @property
    def end(self) -> Vec:
        return vec(o + s for o, s in zip(self.offset, self.size, strict=True))

    @property
    def voxels(self) -> int:
        return self.size[0] * self.size[1] * self.size[2]

    @property
    def shape_zyx(self) -> Vec:
        return (self.size[2], self.size[1], self.size[0])

    def check_inside(self) -> Box:
        if any(abs(e) > COORD_LIMIT for e in self.end):
            raise BadRequest(f"box {self} reaches outside the addressable volume (±2^30)")
        return self

    def intersect(self, other: Box) -> Box | None:
        lo = vec(max(a, b) for a, b in zip(self.offset, other.offset, strict=True))
        hi = vec(min(a, b) for a, b in zip(self.end, other.end, strict=True))
        if any(h <= a for a, h in zip(lo, hi, strict=True)):
            return None
        return Box.from_bounds(lo, hi)

    def slices_in(self, outer: Box) -> tuple[slice, slice, slice]:
        """This box as ZYX slices of an array holding ``outer``."""
        rel = [o - p for o, p in zip(self.offset, outer.offset, strict=True)]
        return (
            slice(rel[2], rel[2] + self.size[2]),
            slice(rel[1], rel[1] + self.size[1]),
            slice(rel[0], rel[0] + self.size[0]),
        )

    def union(self, other: Box) -> Box:
        lo = (min(a, b) for a, b in zip(self.offset, other.offset, strict=True))
        hi = (max(a, b) for a, b in zip(self.end, other.end, strict=True))
        return Box.from_bounds(lo, hi)

    @classmethod
    def from_bounds(cls, lo: Iterable[int], hi_exclusive: Iterable[int]) -> Box:
        """The box from corner ``lo`` (inclusive) to ``hi_exclusive``."""
        low, high = vec(lo), vec(hi_exclusive)
        return cls(low, vec(h - a for a, h in zip(low, high, strict=True)))


@dataclass(frozen=True)
class BlockGrid:
    """A regular grid of blocks of ``block_size`` (x, y, z) voxels."""

    block_size: Vec

    def block_range(self, box: Box) -> tuple[Vec, Vec]:
        """Inclusive-exclusive block coordinates covering ``box``."""
        lo = vec(o // b for o, b in zip(box.offset, self.block_size, strict=True))
        hi = vec(-(-e // b) for e, b in zip(box.end, self.block_size, strict=True))
        return lo, hi

    def aligned(self, box: Box) -> Box:
        """The smallest block-aligned box containing ``box``."""
        lo, hi = self.block_range(box)
        bs = self.block_size
        return Box.from_bounds(
            (a * b for a, b in zip(lo, bs, strict=True)),
            (h * b for h, b in zip(hi, bs, strict=True)),
        )

    def is_aligned(self, box: Box) -> bool:
        return self.aligned(box) == box

    def block_box(self, block: Iterable[int]) -> Box:
        """The voxels of the block at block coordinates ``block``."""
        origin = vec(c * b for c, b in zip(block, self.block_size, strict=True))
        return Box(origin, self.block_size)

    def blocks(self, box: Box) -> np.ndarray:
        """Block coordinates (n, 3) covering ``box`` in z, then y, then x order."""
        lo, hi = self.block_range(box)
        z, y, x = np.meshgrid(
            np.arange(lo[2], hi[2]),
            np.arange(lo[1], hi[1]),
            np.arange(lo[0], hi[0]),
            indexing="ij",
        )
        return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1).astype(np.int64)

    def iter_blocks(self, box: Box) -> Iterator[Vec]:
        for x, y, z in self.blocks(box):
            yield int(x), int(y), int(z)


def pack(blocks: np.ndarray) -> np.ndarray:
    """Block coordinates (n, 3) x,y,z -> chunk ids (uint64), vectorized."""
    b = (blocks.astype(np.int64) + _BIAS).astype(np.uint64)
    if (b > _MASK).any():
        raise BadRequest("block coordinate outside ±2^20")
    return (b[:, 2] << np.uint64(2 * _BITS)) | (b[:, 1] << np.uint64(_BITS)) | b[:, 0]


def unpack(ids: np.ndarray) -> np.ndarray:
    """Chunk ids -> block coordinates (n, 3) x,y,z."""
    ids = np.asarray(ids, dtype=np.uint64)
    mask = np.uint64(_MASK)
    x = (ids & mask).astype(np.int64) - _BIAS
    y = ((ids >> np.uint64(_BITS)) & mask).astype(np.int64) - _BIAS
    z = ((ids >> np.uint64(2 * _BITS)) & mask).astype(np.int64) - _BIAS
    return np.stack([x, y, z], axis=1)
