"""Voxel boxes, block grids and the packing of block coordinates into chunk ids; and the
one place requests' coordinates, sizes and block coordinates are parsed and bounded."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.errors import BadRequest

#: Block coordinates are signed; each axis is biased into 21 bits so that a block's id
#: (``z << 42 | y << 21 | x``) is a non-negative 63-bit integer. DVID's label index uses
#: the same 21-bit-per-axis packing.
_BITS = 21
_BIAS = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1
#: Voxel coordinates must stay inside the range the chunk arrays address: |c| < 2^30.
COORD_LIMIT = 1 << 30
#: Block coordinates a request may name: |c| < 2^20, what both chunk ids (biased 21-bit
#: fields) and DVID's label-index keys (21-bit sign-magnitude fields) hold.
BLOCK_LIMIT = 1 << 20

Vec = tuple[int, int, int]

_INTEGER = re.compile(r"[+-]?[0-9]+")
#: Longer decimal texts are out of every range here (and not worth converting).
_MAX_DIGITS = 24


def vec(values: Iterable[int]) -> Vec:
    """Three integers (x, y, z) as a :data:`Vec`."""
    x, y, z = values
    return int(x), int(y), int(z)


# --- parsing -----------------------------------------------------------------------------
#
# Every integer a request names (path segment, query parameter or JSON number) goes through
# :func:`parse_int`; coordinates, sizes and block coordinates through the helpers below it
# (labels: :func:`app.volumes.requests.parse_label`). Each raises BadRequest (400) with a
# message naming the value, so no bad number reaches numpy (overflow) or the stores.


def parse_int(value: Any, what: str) -> int:
    """``value`` — decimal text, or an integer (from FastAPI or JSON) — as an int; 400
    otherwise. Floats and booleans (also ``1.0``, ``true``) are refused, as DVID's Go
    decoding into integer fields does."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequest(f"{what} {_shown(value)} must be an integer")
    if isinstance(value, str):
        text = value.strip()
        if not _INTEGER.fullmatch(text):
            raise BadRequest(f"{what} {value!r} must be an integer")
        if len(text.lstrip("+-")) > _MAX_DIGITS:
            raise BadRequest(f"{what} {value} is out of range")
        number = int(text)
    else:
        number = value
    return number


def json_int(value: Any, what: str) -> int:
    """A number from a JSON body, if it is an integer (not a float, boolean or string)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{what} {_shown(value)} must be an integer")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def coordinate(value: Any, what: str = "coordinate") -> int:
    """A voxel coordinate (text or JSON integer) inside the addressable volume."""
    number = parse_int(value, what)
    if abs(number) >= COORD_LIMIT:
        raise BadRequest(f"{what} {number} is outside the addressable volume (±2^30)")
    return number


def block_coordinate(value: Any, what: str = "block coordinate") -> int:
    """A block coordinate (text or JSON integer) within ±2^20."""
    number = parse_int(value, what)
    if abs(number) >= BLOCK_LIMIT:
        raise BadRequest(f"{what} {number} is outside ±2^20")
    return number


def parse_ints(text: str, what: str, n: int = 3, sep: str = "_") -> tuple[int, ...]:
    """``n`` integers joined by ``sep`` (``_`` also accepts commas)."""
    parts = text.replace(",", sep).split(sep) if sep == "_" else text.split(sep)
    if len(parts) != n or not all(_INTEGER.fullmatch(p.strip()) for p in parts):
        raise BadRequest(f"{what} {text!r} must be {n} integers separated by '{sep}'")
    return tuple(parse_int(p, what) for p in parts)


def parse_size(text: str, n: int = 3, what: str = "size") -> tuple[int, ...]:
    """``n`` positive extents (``nx_ny_nz``), each at most 2^30."""
    size = parse_ints(text, what, n)
    if any(s <= 0 for s in size):
        raise BadRequest(f"{what} {text!r} must be positive integers")
    if any(s > COORD_LIMIT for s in size):
        raise BadRequest(f"{what} {text!r} is too large")
    return size


def parse_point(text: str, what: str = "offset") -> Vec:
    """A voxel point ``x_y_z`` inside the addressable volume."""
    return vec(coordinate(p, what) for p in parse_ints(text, what))


def parse_float_point(text: str, what: str = "point") -> tuple[float, float, float]:
    """A voxel point ``x_y_z`` of finite numbers inside the addressable volume."""
    try:
        values = [float(p) for p in text.split("_")]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise BadRequest(f"{what} {text!r} must be three numbers x_y_z")
    if any(abs(v) >= COORD_LIMIT for v in values):
        raise BadRequest(f"{what} {text!r} is outside the addressable volume (±2^30)")
    x, y, z = values
    return x, y, z


def parse_points(value: Any, what: str = "point") -> np.ndarray:
    """A JSON list of ``[x, y, z]`` integer voxel points as an (n, 3) int64 array."""
    if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 3 for p in value):
        raise BadRequest(f"body must be a JSON list of [x,y,z] integer {what}s")
    what = f"{what} coordinate"
    coords = [coordinate(json_int(c, what), what) for p in value for c in p]
    return np.array(coords, dtype=np.int64).reshape(-1, 3)


def parse_block(text: str, what: str = "block coordinate") -> Vec:
    """A block coordinate ``bx_by_bz`` within ±2^20."""
    return vec(block_coordinate(c, what) for c in parse_ints(text, what))


def parse_block_list(text: str, what: str = "blocks") -> np.ndarray:
    """Comma-separated block coordinates ``x1,y1,z1,x2,...`` as an (n, 3) int64 array."""
    parts = [p for p in text.split(",") if p.strip()]
    if len(parts) % 3:
        raise BadRequest(f"{what} must list whole block coordinates (a multiple of 3 numbers)")
    coords = [block_coordinate(p, f"{what} coordinate") for p in parts]
    return np.array(coords, dtype=np.int64).reshape(-1, 3)


def check_blocks(coords: np.ndarray, what: str = "block coordinate") -> np.ndarray:
    """``coords`` (n, 3), if every block coordinate is within ±2^20; 400 else."""
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
    if coords.size and np.abs(coords).max() >= BLOCK_LIMIT:
        bad = coords[(np.abs(coords) >= BLOCK_LIMIT).any(axis=1)][0]
        raise BadRequest(f"{what} {tuple(bad.tolist())} is outside ±2^20")
    return coords


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
        """Inclusive-exclusive block coordinates covering ``box``; 400 if they reach past
        the ±2^20 blocks a request may name."""
        lo = vec(o // b for o, b in zip(box.offset, self.block_size, strict=True))
        hi = vec(-(-e // b) for e, b in zip(box.end, self.block_size, strict=True))
        if any(abs(c) >= BLOCK_LIMIT for c in (*lo, *(h - 1 for h in hi))):
            raise BadRequest(f"box {box} reaches blocks outside ±2^20 (of {self.block_size})")
        return lo, hi

    def blocks_of(self, points: np.ndarray) -> np.ndarray:
        """The block coordinates (n, 3) holding voxel ``points`` (n, 3); 400 if any lies
        past the ±2^20 blocks a request may name."""
        size = np.array(self.block_size, dtype=np.int64)
        blocks = np.floor_divide(np.asarray(points, dtype=np.int64).reshape(-1, 3), size)
        return check_blocks(blocks, f"block (of {self.block_size} voxels) of a point")

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
