"""What an imagetile instance knows without touching a store: its tile metadata (DVID's
``metadataJSON``, parsed strictly and printed byte for byte as Go prints it), tile
addresses (plane, scale, tile coordinate) and their record keys, and how a 2-D request
maps onto tiles.

Tile coordinates follow DVID (``dvid.PlaneToChunkPoint3d``): the two in-plane axes count
tiles of that scale's ``TileSize``, the third axis is the voxel coordinate of the slice
at scale 0 (an XY tile ``x_y_z`` at any scale shows slice ``z``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app.errors import BadRequest
from app.volumes.geometry import json_int, parse_int, parse_ints
from app.volumes.requests import parse_dims

#: Tile coordinates and tile coordinate bounds are Go int32s in DVID.
INT32 = 2**31
#: Largest tile side accepted in metadata: a 8192² uint8 tile is 64 MiB decoded.
MAX_TILE_SIDE = 8192
#: Scales are a Go uint8 in DVID's tile keys.
MAX_LEVELS = 256
PLANE_NAMES = {(0, 1): "xy", (0, 2): "xz", (1, 2): "yz"}
#: The record holding the metadata (tile records are ``tile/...``: never equal).
METADATA_KEY = "metadata"


@dataclass(frozen=True)
class Level:
    """One scale: its resolution (float32 values, as DVID keeps them) and tile size."""

    resolution: tuple[float, float, float]
    tile_size: tuple[int, int, int]


@dataclass(frozen=True)
class Metadata:
    """``MinTileCoord``, ``MaxTileCoord`` and the levels 0..n-1."""

    min_tile: tuple[int, int, int]
    max_tile: tuple[int, int, int]
    levels: tuple[Level, ...]

    def level(self, scale: int) -> Level:
        if not 0 <= scale < len(self.levels):
            raise BadRequest(
                f"tile scale {scale} is not one of this imagetile's levels "
                f"(0 to {len(self.levels) - 1})"
            )
        return self.levels[scale]

    def to_json(self) -> bytes:
        """What DVID's ``json.Marshal`` of the metadata struct prints: no spaces, level keys
        sorted as strings, float32s in Go's shortest form."""
        levels = ",".join(
            f'"{key}":{{"Resolution":[{_go_floats(self.levels[int(key)].resolution)}],'
            f'"TileSize":[{_ints(self.levels[int(key)].tile_size)}]}}'
            for key in sorted(str(s) for s in range(len(self.levels)))
        )
        return (
            f'{{"MinTileCoord":[{_ints(self.min_tile)}],"MaxTileCoord":[{_ints(self.max_tile)}],'
            f'"Levels":{{{levels}}}}}'
        ).encode()

    def levels_json(self) -> dict[str, Any]:
        """``Levels`` as a JSON-ready dict (for the instance's ``Extended`` info)."""
        return {
            str(s): {"Resolution": list(lv.resolution), "TileSize": list(lv.tile_size)}
            for s, lv in enumerate(self.levels)
        }


def _ints(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


def _go_floats(values: tuple[float, ...]) -> str:
    return ",".join(go_float32(v) for v in values)


def go_float32(value: float) -> str:
    """A float32 as Go's encoding/json writes it: shortest round-trip digits, exponent
    form below 1e-6 and from 1e21, ``e-07`` shortened to ``e-7``."""
    f = np.float32(value)
    magnitude = abs(float(f))
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        text = np.format_float_scientific(f, unique=True, trim="-")
        mantissa, _, exponent = text.partition("e")
        if exponent.startswith("-0"):
            exponent = "-" + exponent[2:]
        return f"{mantissa}e{exponent}"
    return np.format_float_positional(f, unique=True, trim="-")


# --- parsing the POSTed metadata ---------------------------------------------------------


def _field(body: dict[str, Any], name: str) -> Any:
    """A field by name, matched case-insensitively as Go's decoder matches struct fields."""
    for key, value in body.items():
        if key.lower() == name.lower():
            return value
    return None


def _triple_ints(value: Any, what: str) -> tuple[int, int, int]:
    if value is None:
        return (0, 0, 0)
    if not isinstance(value, list) or len(value) != 3:
        raise BadRequest(f"{what} must be three integers [x, y, z]")
    out = [json_int(v, what) for v in value]
    if any(not -INT32 <= v < INT32 for v in out):
        raise BadRequest(f"{what} {value} must hold int32 values")
    x, y, z = out
    return x, y, z


def _level(scale: str, spec: Any) -> Level:
    if not isinstance(spec, dict):
        raise BadRequest(f"level {scale} must be an object with Resolution and TileSize")
    res = _field(spec, "Resolution")
    if (
        not isinstance(res, list)
        or len(res) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in res)
        or not all(math.isfinite(v) and v > 0 for v in res)
    ):
        raise BadRequest(f"level {scale} Resolution must be three positive numbers")
    size = _field(spec, "TileSize")
    if not isinstance(size, list) or len(size) != 3:
        raise BadRequest(f"level {scale} TileSize must be three positive integers")
    sides = [json_int(v, f"level {scale} TileSize") for v in size]
    if any(not 1 <= s <= MAX_TILE_SIDE for s in sides):
        raise BadRequest(f"level {scale} TileSize sides must be 1 to {MAX_TILE_SIDE}")
    rx, ry, rz = (float(np.float32(v)) for v in res)
    tx, ty, tz = sides
    return Level((rx, ry, rz), (tx, ty, tz))


def parse_metadata(body: Any) -> Metadata:
    """DVID's ``SetMetadata``: levels must be the consecutive scales 0..n-1, each level's
    resolution an integral magnification (>= 1) of the one before; 400 otherwise."""
    if not isinstance(body, dict):
        raise BadRequest("metadata must be a JSON object with MinTileCoord, MaxTileCoord, Levels")
    raw_levels = _field(body, "Levels")
    if not isinstance(raw_levels, dict) or not raw_levels:
        raise BadRequest('metadata needs "Levels": {"0": {"Resolution": [..], "TileSize": [..]}}')
    if len(raw_levels) > MAX_LEVELS:
        raise BadRequest(f"at most {MAX_LEVELS} tile levels are possible")
    by_scale: dict[int, Level] = {}
    for key, spec in raw_levels.items():
        scale = parse_int(key, "scale level") if key.strip().isdigit() else None
        if scale is None or scale >= len(raw_levels):
            raise BadRequest(
                f"tile levels must be consecutive integers from 0: got level {key!r} "
                f"of {len(raw_levels)} levels"
            )
        if scale in by_scale:
            raise BadRequest(f"level {scale} is given twice")
        by_scale[scale] = _level(key, spec)
    levels = tuple(by_scale[s] for s in range(len(by_scale)))
    for scale, (hi, lo) in enumerate(itertools.pairwise(levels)):
        for a, b in zip(hi.resolution, lo.resolution, strict=True):
            mag = b / a
            if mag < 0.99:
                raise BadRequest(f"a resolution between scale {scale} and {scale + 1} increases")
            if abs(mag - round(mag)) > 0.001:
                raise BadRequest(
                    f"resolutions between scale {scale} and {scale + 1} aren't integral "
                    "magnifications"
                )
    return Metadata(
        _triple_ints(_field(body, "MinTileCoord"), "MinTileCoord"),
        _triple_ints(_field(body, "MaxTileCoord"), "MaxTileCoord"),
        levels,
    )


def metadata_from_record(record: bytes) -> Metadata:
    """The stored record (what :meth:`Metadata.to_json` wrote) back as metadata."""
    return parse_metadata(orjson.loads(record))


# --- tile addresses ----------------------------------------------------------------------


@dataclass(frozen=True)
class TileAddress:
    """One tile: plane axes, scale, tile coordinate (x, y, z)."""

    axes: tuple[int, int]
    scale: int
    coord: tuple[int, int, int]

    @property
    def plane(self) -> str:
        return PLANE_NAMES[self.axes]

    def key(self) -> str:
        """The tile's record key; ``xy`` and ``0_1`` name the same tile."""
        x, y, z = self.coord
        return f"tile/{self.plane}/{self.scale}/{x}_{y}_{z}"


def parse_plane(text: str) -> tuple[int, int]:
    """``xy``, ``xz``, ``yz`` (or ``0_1``, ``0_2``, ``1_2``); 400 for anything else."""
    axes = parse_dims(text)
    if axes is None:
        raise BadRequest(f"imagetile planes are 2-D (xy, xz or yz), not {text!r}")
    return axes


def parse_scale(text: str) -> int:
    scale = parse_int(text, "tile scale")
    if not 0 <= scale < MAX_LEVELS:
        raise BadRequest(f"tile scale {scale} must be 0 to {MAX_LEVELS - 1}")
    return scale


def parse_tile(plane: str, scale: str, coord: str) -> TileAddress:
    x, y, z = parse_ints(coord, "tile coordinate")
    if any(not -INT32 <= c < INT32 for c in (x, y, z)):
        raise BadRequest(f"tile coordinate {coord!r} must hold int32 values")
    return TileAddress(parse_plane(plane), parse_scale(scale), (x, y, z))


def tile_shape(level: Level, axes: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a tile of ``level`` in a plane."""
    return level.tile_size[axes[1]], level.tile_size[axes[0]]


def blank_tile(level: Level, axes: tuple[int, int]) -> np.ndarray:
    """DVID's answer for a missing tile: a black 8-bit tile of the level's size."""
    return np.zeros(tile_shape(level, axes), dtype=np.uint8)


# --- stitching -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """A tile's part of a stitched image: the tile, its rows/columns used, and where they
    go in the image."""

    tile: TileAddress
    src: tuple[slice, slice]
    dst: tuple[slice, slice]


def pieces(
    axes: tuple[int, int], scale: int, level: Level, offset: tuple[int, int, int], w: int, h: int
) -> Iterator[Piece]:
    """The tiles covering a ``w`` x ``h`` image whose top-left pixel is ``offset`` (in-plane
    axes in pixels of ``scale``, the third axis a scale-0 slice): DVID's ``GetImage``."""
    a, b = axes
    (normal,) = {0, 1, 2} - {a, b}
    th, tw = tile_shape(level, axes)
    x0, y0 = offset[a], offset[b]
    for ty in range(y0 // th, (y0 + h - 1) // th + 1):
        top = max(y0, ty * th)
        bottom = min(y0 + h, (ty + 1) * th)
        for tx in range(x0 // tw, (x0 + w - 1) // tw + 1):
            left = max(x0, tx * tw)
            right = min(x0 + w, (tx + 1) * tw)
            coord = [0, 0, 0]
            coord[a], coord[b], coord[normal] = tx, ty, offset[normal]
            yield Piece(
                TileAddress(axes, scale, (coord[0], coord[1], coord[2])),
                (slice(top - ty * th, bottom - ty * th), slice(left - tx * tw, right - tx * tw)),
                (slice(top - y0, bottom - y0), slice(left - x0, right - x0)),
            )
