"""imagetile endpoints, relative to ``/api/node/{uuid}/{dataname}``."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from app.api.common import RawBody, flag, json_response, parse_json
from app.api.routing import LazyRoute
from app.datatypes.base import bound
from app.datatypes.imagetile import ImageTile
from app.datatypes.imagetile.tiles import (
    Metadata,
    blank_tile,
    parse_metadata,
    parse_plane,
    parse_scale,
    parse_tile,
    pieces,
)
from app.errors import BadRequest, NotFound
from app.storage.keyed import encode_key
from app.volumes import images
from app.volumes.geometry import Box, vec
from app.volumes.requests import bounded, isotropic_read_size, plane_box

router = APIRouter(route_class=LazyRoute)

TileData = Annotated[ImageTile, Depends(bound(ImageTile))]


def _image(plane: np.ndarray, fmt: str | None) -> Response:
    """A plane as DVID's ``WriteImageHttp`` writes it: png unless the format says else."""
    name, quality = images.parse_format(fmt, "png")
    if name == "raw":
        raise BadRequest("imagetile images come as png, jpg, tif or bmp, not raw bytes")
    return Response(
        images.encode(plane, name, quality, "imagetile"), media_type=images.MEDIA_TYPES[name]
    )


@router.get("/metadata")
def get_metadata(data: TileData) -> Response:
    metadata = data.require_metadata(f"tile metadata for imagetile {data.name!r} was not set")
    return Response(metadata.to_json(), media_type="application/json")


@router.post("/metadata")
def post_metadata(data: TileData, body: RawBody) -> Response:
    data.set_metadata(parse_metadata(parse_json(body)))
    return Response()


@router.get("/tile/{dims}/{scale}/{coord}")
@router.get("/tile/{dims}/{scale}/{coord}/{fmt}")
def get_tile(
    data: TileData,
    dims: str,
    scale: str,
    coord: str,
    fmt: str | None = None,
    noblanks: str | None = Query(None),
) -> Response:
    """The stored tile as stored; a missing one is a black tile in ``fmt`` (png by
    default), or 404 with ``noblanks=true``."""
    tile = parse_tile(dims, scale, coord)
    level = data.require_metadata().level(tile.scale)
    stored = data.tile_bytes(tile)
    if stored is not None:
        return Response(stored, media_type=data.media_type)
    if flag(noblanks):
        raise NotFound(f"no tile {tile.key()!r} at this version")
    return _image(blank_tile(level, tile.axes), fmt)


@router.post("/tile/{dims}/{scale}/{coord}")
def post_tile(data: TileData, body: RawBody, dims: str, scale: str, coord: str) -> Response:
    tile = parse_tile(dims, scale, coord)
    data.require_metadata("POST tile metadata before tiles").level(tile.scale)
    if any(c < 0 for c in tile.coord):
        raise BadRequest(f"tile coordinate {coord!r} is negative: such tiles are never served")
    data.check_tile_body(body)
    data.write(tile.key(), body)
    return Response()


@router.get("/tilekey/{dims}/{scale}/{coord}")
def get_tilekey(data: TileData, dims: str, scale: str, coord: str) -> Response:
    """The tile's record key as hex (its objects are ``v/<node>/<that hex>``)."""
    tile = parse_tile(dims, scale, coord)
    return json_response({"key": encode_key(tile.key())})


def _stitched(
    data: TileData, dims: str, size: str, offset: str, scale: str | None, iso: bool
) -> np.ndarray:
    """The requested 2-D image assembled from the tiles of ``scale`` (0 by default);
    where no tile is stored it stays black (DVID's ``GetImage``)."""
    axes = parse_plane(dims)
    level_index = parse_scale(scale) if scale is not None else 0
    metadata: Metadata = data.require_metadata()
    level = metadata.level(level_index)
    box = plane_box(axes, size, offset)
    w, h = box.size[axes[0]], box.size[axes[1]]
    if iso:
        read = list(box.size)
        res = level.resolution
        read[axes[0]], read[axes[1]] = isotropic_read_size(w, h, res[axes[0]], res[axes[1]])
        box = Box(box.offset, vec(read))
    box = bounded(data, box)
    rw, rh = box.size[axes[0]], box.size[axes[1]]
    out = np.zeros((rh, rw), dtype=np.uint8)
    parts = list(pieces(axes, level_index, level, box.offset, rw, rh))
    for part, tile in zip(parts, data.tile_images([p.tile for p in parts]), strict=True):
        if tile is not None:
            src = tile[part.src]  # a tile smaller than its TileSize fills what it has
            rows, cols = src.shape
            dst_rows, dst_cols = part.dst
            out[dst_rows.start : dst_rows.start + rows, dst_cols.start : dst_cols.start + cols] = (
                src
            )
    return images.resize(out, w, h, data.typename) if iso else out


@router.get("/raw/{dims}/{size}/{offset}")
@router.get("/raw/{dims}/{size}/{offset}/{fmt}")
def get_raw(
    data: TileData,
    dims: str,
    size: str,
    offset: str,
    fmt: str | None = None,
    scale: str | None = None,
) -> Response:
    """``size`` is ``w_h`` and ``offset`` ``x_y_z``; in-plane values are pixels of
    ``scale`` (a dvid-cloud extension; DVID stitches scale 0 only)."""
    return _image(_stitched(data, dims, size, offset, scale, iso=False), fmt)


@router.get("/isotropic/{dims}/{size}/{offset}")
@router.get("/isotropic/{dims}/{size}/{offset}/{fmt}")
def get_isotropic(
    data: TileData,
    dims: str,
    size: str,
    offset: str,
    fmt: str | None = None,
    scale: str | None = None,
) -> Response:
    """As ``raw``, with the coarser axis stretched by the level's resolutions."""
    return _image(_stitched(data, dims, size, offset, scale, iso=True), fmt)
