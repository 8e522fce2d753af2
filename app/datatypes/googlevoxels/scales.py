"""Which BrainMaps geometry serves a (orientation, DVID scale): DVID's ``GeomMap``.

The finest geometry serves scale 0 in every orientation. Every other geometry's pixel
size, as a ratio ``r`` of the finest per axis, gives its orientation (XY when x and y are
coarsened more than z, XZ and YZ alike, else isotropic XYZ) and its scale, the power of
two covering ``max(r)``. Geometries are stored in the instance settings as DVID prints
its ``Scales`` (``volumeSize``, ``channelCount``, ``channelType``, ``pixelSize``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from app.datatypes.imagetile.tiles import Level, Metadata
from backends.remote.brainmaps import Geometry

SHAPES = ("XY", "XZ", "YZ", "XYZ")
#: In-plane axes -> the orientation name GeomMap keys use.
PLANE_SHAPES = {(0, 1): "XY", (0, 2): "XZ", (1, 2): "YZ"}
#: Pixel-size ratios within this of a power of two count as that power (they are floats).
RATIO_TOLERANCE = 1e-3

GeomMap = dict[tuple[str, int], int]


def scale_json(geometry: Geometry) -> dict[str, Any]:
    """A geometry as DVID's ``Scales`` entries print it."""
    return {
        "volumeSize": list(geometry.volume_size),
        "channelCount": geometry.channel_count,
        "channelType": geometry.channel_type,
        "pixelSize": list(geometry.pixel_size),
    }


def scale_from_json(entry: dict[str, Any]) -> Geometry:
    """A stored ``Scales`` entry back as a geometry."""
    sx, sy, sz = (int(v) for v in entry["volumeSize"])
    px, py, pz = (float(v) for v in entry["pixelSize"])
    return Geometry((sx, sy, sz), int(entry["channelCount"]), entry["channelType"], (px, py, pz))


def shape_of(ratios: tuple[float, float, float]) -> str:
    rx, ry, rz = ratios
    if rx > rz and ry > rz:
        return "XY"
    if rx > ry and rz > ry:
        return "XZ"
    if ry > rx and rz > rx:
        return "YZ"
    return "XYZ"


def scale_of(magnification: float) -> int:
    """The smallest ``s`` with ``2**s >= magnification`` (DVID's ``log2``)."""
    if magnification <= 1 + RATIO_TOLERANCE:
        return 0
    return math.ceil(math.log2(magnification) - RATIO_TOLERANCE)


def geometry_map(geometries: Sequence[Geometry], high_res: int) -> GeomMap:
    """DVID's GeomMap: a later geometry replaces an earlier one with the same key."""
    base = geometries[high_res].pixel_size
    mapping: GeomMap = {}
    for index, geometry in enumerate(geometries):
        if index == high_res:
            mapping.update({(shape, 0): index for shape in SHAPES})
            continue
        rx, ry, rz = (p / b for p, b in zip(geometry.pixel_size, base, strict=True))
        mapping[(shape_of((rx, ry, rz)), scale_of(max(rx, ry, rz)))] = index
    return mapping


def geom_map_json(mapping: GeomMap) -> dict[str, int]:
    """``{"XY:0": 0, ...}`` ordered by scale, then orientation."""
    keys = sorted(mapping, key=lambda key: (key[1], SHAPES.index(key[0])))
    return {f"{shape}:{scale}": mapping[(shape, scale)] for shape, scale in keys}


def tile_metadata(high_res: Geometry, mapping: GeomMap, tile_size: int) -> Metadata:
    """The imagetile metadata a tile client reads from ``info``: levels 0 to the largest
    mapped scale, resolutions doubling from the finest geometry's, square tiles, and the
    tile coordinates covering the finest geometry."""
    top = max(scale for _, scale in mapping)
    px, py, pz = high_res.pixel_size
    levels = tuple(
        Level((px * 2**s, py * 2**s, pz * 2**s), (tile_size, tile_size, tile_size))
        for s in range(top + 1)
    )
    nx, ny, nz = (-(-side // tile_size) for side in high_res.volume_size)
    return Metadata((0, 0, 0), (nx, ny, nz), levels)
