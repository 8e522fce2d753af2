"""googlevoxels endpoints, relative to ``/api/node/{uuid}/{dataname}``: GET only (other
methods are not endpoints, answered 400 by the server)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import numpy as np
import snappy
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from app.api.common import flag
from app.api.routing import LazyRoute
from app.datatypes.base import bound
from app.datatypes.googlevoxels import GoogleVoxels, parse_tile_size
from app.datatypes.googlevoxels.planes import parse_format
from app.datatypes.imagetile.tiles import parse_scale, parse_tile
from app.errors import BadRequest
from app.volumes import images
from app.volumes.geometry import Box
from app.volumes.lz4block import lz4_compress
from app.volumes.requests import bounded, parse_dims, plane_box, volume_box

router = APIRouter(route_class=LazyRoute)

VoxelsData = Annotated[GoogleVoxels, Depends(bound(GoogleVoxels))]
OCTET = "application/octet-stream"


@router.get("/tile/{dims}/{scale}/{coord}")
@router.get("/tile/{dims}/{scale}/{coord}/{fmt}")
def get_tile(
    data: VoxelsData,
    dims: str,
    scale: str,
    coord: str,
    fmt: str | None = None,
    tilesize: str | None = None,
    noblanks: str | None = None,
) -> Response:
    """A square tile: in-plane coordinates count tiles, the third is a voxel of the
    geometry serving the plane at that scale."""
    tile = parse_tile(dims, scale, coord)
    side = data.tile_size if tilesize is None else parse_tile_size(tilesize)
    image_format = parse_format(fmt)
    offset, size = list(tile.coord), [1, 1, 1]
    for axis in tile.axes:
        offset[axis] *= side
        size[axis] = side
    box = Box((offset[0], offset[1], offset[2]), (size[0], size[1], size[2]))
    body = data.image(tile.axes, tile.scale, box, image_format, flag(noblanks))
    return Response(body, media_type=image_format.media_type)


#: ``compression=`` of 3-D reads: raw voxel bytes -> what is sent.
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "none": bytes,
    "lz4": lz4_compress,
    "snappy": snappy.compress,
}


def _volume_encoder(
    fmt: str | None, compression: str | None
) -> tuple[Callable[[np.ndarray], bytes], str]:
    """How 3-D voxels are sent, and their media type: little-endian ZYX bytes (lz4- or
    snappy-compressed on request) or DVID's stacked JPEG. Checked before BrainMaps is
    asked anything; 400 for what is not offered."""
    if fmt is None or fmt.lower() in ("raw", "octet-stream"):
        compress = COMPRESSORS.get((compression or "none").lower())
        if compress is None:
            raise BadRequest(f"unknown compression {compression!r}: use lz4 or snappy")

        def raw(volume: np.ndarray) -> bytes:
            return compress(volume.astype(volume.dtype.newbyteorder("<"), copy=False).tobytes())

        return raw, OCTET
    name, quality = images.parse_format(fmt, "raw")
    if name != "jpeg":
        raise BadRequest(f"3-D reads come as raw bytes or jpg, not {fmt!r}")

    def jpeg(volume: np.ndarray) -> bytes:
        return images.jpeg_volume(volume, quality)

    return jpeg, images.MEDIA_TYPES["jpeg"]


@router.get("/raw/{dims}/{size}/{offset}")
@router.get("/raw/{dims}/{size}/{offset}/{fmt}")
def get_raw(
    data: VoxelsData,
    dims: str,
    size: str,
    offset: str,
    fmt: str | None = None,
    scale: str | None = None,
    compression: str | None = None,
) -> Response:
    """A 2-D image (png by default) or 3-D voxels, in voxels of the geometry serving
    ``scale`` (0 by default)."""
    axes = parse_dims(dims)
    level = 0 if scale is None else parse_scale(scale)
    if axes is None:
        encode, media_type = _volume_encoder(fmt, compression)
        volume = data.subvolume(level, volume_box(data, size, offset))
        return Response(b"" if volume is None else encode(volume), media_type=media_type)
    image_format = parse_format(fmt)
    box = bounded(data, plane_box(axes, size, offset))
    body = data.image(axes, level, box, image_format, noblanks=False)
    return Response(body, media_type=image_format.media_type)
