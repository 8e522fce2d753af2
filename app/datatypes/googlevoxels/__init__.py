"""googlevoxels: DVID's read-only proxy of a Google BrainMaps volume, serving its 2-D
tiles and 3-D subvolumes behind DVID's ``tile`` and ``raw`` endpoints.

Nothing is stored but the instance's settings: the volume id, the default tile size and
the volume's geometries, read from BrainMaps at creation as DVID does. Every request
becomes a BrainMaps call through the process's shared :class:`BrainMapsVolume`, with the
server's ``[proxy.brainmaps]`` credentials (never the instance's: DVID's ``jwtfile`` is
accepted and ignored). The remote is not versioned, so every node serves the same data.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from fastapi import APIRouter

from app.datatypes import register
from app.datatypes.base import Data
from app.datatypes.googlevoxels import planes
from app.datatypes.googlevoxels.planes import ImageFormat
from app.datatypes.googlevoxels.scales import (
    PLANE_SHAPES,
    GeomMap,
    geom_map_json,
    geometry_map,
    scale_from_json,
    scale_json,
    tile_metadata,
)
from app.datatypes.imagetile.tiles import MAX_TILE_SIDE
from app.errors import BadRequest, NotFound
from app.remotes import creating_from
from app.volumes.geometry import Box, parse_int
from backends.remote.brainmaps import SCHEME, BrainMapsVolume, Geometry, finest, parse_volume_id

if TYPE_CHECKING:
    from app.diff import MergeSides
    from app.services import Services

DEFAULT_TILE_SIZE = 512


def parse_tile_size(value: str) -> int:
    size = parse_int(value, "tile size")
    if not 1 <= size <= MAX_TILE_SIDE:
        raise BadRequest(f"tile size {size} must be 1 to {MAX_TILE_SIDE}")
    return size


def brainmaps_volume(services: Services, volume_id: str) -> BrainMapsVolume:
    """The process's shared remote for ``volume_id`` (opened on first use)."""
    remote = services.remote(SCHEME + volume_id)
    if not isinstance(remote, BrainMapsVolume):
        raise TypeError(f"{SCHEME}{volume_id} opened as {type(remote).__name__}")
    return remote


@register
class GoogleVoxels(Data):
    typename = "googlevoxels"
    type_version = "0.1"
    help_text = (Path(__file__).parent / "help.txt").read_text()

    @classmethod
    def routes(cls) -> APIRouter:
        from app.datatypes.googlevoxels.routes import router

        return router

    def diff(self, other: Self) -> dict[str, Any] | None:
        """The remote volume is the same at every version: nothing ever differs."""
        return None

    def merge_conflicts(self, merge: MergeSides) -> dict[str, Any] | None:
        return None

    @classmethod
    def parse_settings(cls, config: dict[str, str]) -> dict:
        """``volumeid`` (required) and ``tilesize``; ``jwtfile`` is ignored."""
        volume_id = config.get("volumeid")
        if not volume_id:
            raise BadRequest("Cannot make googlevoxels data without valid 'volumeid' setting.")
        try:
            parse_volume_id(volume_id)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        tile_size = parse_tile_size(config.get("tilesize", str(DEFAULT_TILE_SIZE)))
        return {"VolumeID": volume_id, "TileSize": tile_size}

    @classmethod
    def complete_settings(cls, services: Services, settings: dict) -> dict:
        """Read the volume's geometries from BrainMaps, as DVID does at creation. 400 when
        BrainMaps has no such volume, refuses the server's credentials or the request;
        502/504 when it cannot be reached."""
        volume_id = settings["VolumeID"]
        with creating_from(f"serve BrainMaps volume {volume_id}"):
            geometries = brainmaps_volume(services, volume_id).geometries()
        if not geometries:
            raise BadRequest(f"BrainMaps volume {volume_id} lists no geometries")
        return {**settings, "Scales": [scale_json(g) for g in geometries]}

    # --- settings ------------------------------------------------------------------------

    @property
    def volume_id(self) -> str:
        return str(self.settings["VolumeID"])

    @property
    def tile_size(self) -> int:
        return int(self.settings["TileSize"])

    @functools.cached_property
    def geometries(self) -> tuple[Geometry, ...]:
        return tuple(scale_from_json(entry) for entry in self.settings["Scales"])

    @functools.cached_property
    def high_res(self) -> int:
        return finest(self.geometries)

    @functools.cached_property
    def geom_map(self) -> GeomMap:
        return geometry_map(self.geometries, self.high_res)

    def extended_json(self) -> dict:
        """DVID's ``Properties`` with imagetile-style ``Levels``; no credentials."""
        metadata = tile_metadata(self.geometries[self.high_res], self.geom_map, self.tile_size)
        return {
            "VolumeID": self.volume_id,
            "MinTileCoord": list(metadata.min_tile),
            "MaxTileCoord": list(metadata.max_tile),
            "TileSize": self.tile_size,
            "GeomMap": geom_map_json(self.geom_map),
            "Scales": self.settings["Scales"],
            "HighResIndex": self.high_res,
            "Levels": metadata.levels_json(),
        }

    def post_info(self) -> None:
        raise BadRequest("googlevoxels only answers GET requests")

    # --- reading -------------------------------------------------------------------------

    def remote(self) -> BrainMapsVolume:
        return brainmaps_volume(self.services, self.volume_id)

    def geometry(self, shape: str, scale: int) -> tuple[int, Geometry]:
        """The geometry serving ``shape`` (XY, XZ, YZ, XYZ) at ``scale``: a plane falls
        back on the isotropic geometry of its scale. 400 if there is none."""
        index = self.geom_map.get((shape, scale))
        if index is None and shape != "XYZ":
            index = self.geom_map.get(("XYZ", scale))
        if index is None:
            raise BadRequest(
                f"googlevoxels {self.name!r} has no BrainMaps geometry for {shape} at scale "
                f"{scale} (GeomMap {geom_map_json(self.geom_map)})"
            )
        return index, self.geometries[index]

    def image(
        self, axes: tuple[int, int], scale: int, box: Box, fmt: ImageFormat, noblanks: bool
    ) -> bytes:
        """The image of the one-voxel-thick ``box`` (in the geometry's voxels): as
        BrainMaps encodes it when inside the geometry, padded with black where it leaves
        it, black where it lies wholly outside (404 with ``noblanks``)."""
        index, geometry = self.geometry(PLANE_SHAPES[axes], scale)
        inside = box.intersect(Box((0, 0, 0), geometry.volume_size))
        if inside is None:
            if noblanks:
                raise NotFound(f"{box} is outside BrainMaps geometry {index}")
            return planes.blank(box.size[axes[0]], box.size[axes[1]], fmt)
        encoded = self.remote().image_tile(
            index, inside.offset, inside.size, fmt.brainmaps, fmt.level
        )
        return encoded if inside == box else planes.pad(encoded, box, inside, axes, fmt)

    def subvolume(self, scale: int, box: Box) -> np.ndarray | None:
        """The voxels of ``box`` from the isotropic geometry of ``scale``; None when the
        box lies wholly outside it, 400 when it crosses its edge (DVID does not pad)."""
        index, geometry = self.geometry("XYZ", scale)
        inside = box.intersect(Box((0, 0, 0), geometry.volume_size))
        if inside is None:
            return None
        if inside != box:
            raise BadRequest(
                f"{box} crosses the edge of BrainMaps geometry {index} (size "
                f"{geometry.volume_size}): googlevoxels does not pad subvolumes"
            )
        return self.remote().read_geometry(index, geometry, box.offset, box.size)


__all__ = ["GoogleVoxels"]
