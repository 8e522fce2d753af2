"""imageblk endpoints, relative to ``/api/node/{uuid}/{dataname}``."""

from __future__ import annotations

import math
import struct
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from app.api.common import RawBody, flag, json_response
from app.api.routing import LazyRoute
from app.datatypes.base import bound
from app.datatypes.imageblk import ImageBlock
from app.datatypes.imageblk.pyramid import build_pyramid
from app.errors import BadRequest, TooLarge
from app.volumes import images
from app.volumes.geometry import (
    BLOCK_LIMIT,
    Box,
    parse_block,
    parse_block_list,
    parse_float_point,
    parse_size,
    vec,
)
from app.volumes.requests import (
    array_bytes,
    bounded,
    isotropic_read_size,
    parse_dims,
    plane_box,
    plane_of,
    volume_box,
)

router = APIRouter(route_class=LazyRoute)

ImageData = Annotated[ImageBlock, Depends(bound(ImageBlock))]


def _read(data: ImageBlock, box: Box) -> np.ndarray:
    return data.volume().read(box)


def _image_response(data: ImageBlock, plane: np.ndarray, fmt: str | None) -> Response:
    name, quality = images.parse_format(fmt, "png")
    if name == "raw":
        return Response(plane.tobytes(), media_type="application/octet-stream")
    body = images.encode(plane, name, quality, data.typename)
    return Response(body, media_type=images.MEDIA_TYPES[name])


def _get_voxels(
    data: ImageBlock, dims: str, size: str, offset: str, fmt: str | None, iso: bool
) -> Response:
    axes = parse_dims(dims)
    if axes is None:
        box = volume_box(data, size, offset)
        volume = _read(data, box)
        if fmt is None or fmt.lower() in ("", "raw", "octet-stream"):
            return Response(array_bytes(volume), media_type="application/octet-stream")
        name, quality = images.parse_format(fmt, "raw")
        if name != "jpeg":
            raise BadRequest(f"3-D reads come as raw bytes or jpg, not {fmt!r}")
        return Response(images.jpeg_volume(volume, quality), media_type="image/jpeg")
    box = plane_box(axes, size, offset)
    if iso:
        return _isotropic(data, axes, box, fmt)
    plane = plane_of(_read(data, bounded(data, box)), axes)
    return _image_response(data, plane, fmt)


def _isotropic(data: ImageBlock, axes: tuple[int, int], box: Box, fmt: str | None) -> Response:
    """Read at the coarser in-plane resolution, then resize to the asked size."""
    res = data.settings["VoxelSize"]
    w, h = box.size[axes[0]], box.size[axes[1]]
    src = list(box.size)
    src[axes[0]], src[axes[1]] = isotropic_read_size(w, h, res[axes[0]], res[axes[1]])
    plane = plane_of(_read(data, bounded(data, Box(box.offset, vec(src)))), axes)
    return _image_response(data, images.resize(plane, w, h, data.typename), fmt)


@router.get("/raw/{dims}/{size}/{offset}")
@router.get("/raw/{dims}/{size}/{offset}/{fmt}")
def get_raw(data: ImageData, dims: str, size: str, offset: str, fmt: str | None = None) -> Response:
    return _get_voxels(data, dims, size, offset, fmt, iso=False)


@router.get("/isotropic/{dims}/{size}/{offset}")
@router.get("/isotropic/{dims}/{size}/{offset}/{fmt}")
def get_isotropic(
    data: ImageData, dims: str, size: str, offset: str, fmt: str | None = None
) -> Response:
    return _get_voxels(data, dims, size, offset, fmt, iso=True)


@router.post("/raw/{dims}/{size}/{offset}")
@router.post("/raw/{dims}/{size}/{offset}/{fmt}")
async def post_raw(
    request: Request,
    data: ImageData,
    dims: str,
    size: str,
    offset: str,
    fmt: str | None = None,
    downres: str | None = None,
    levels: int | None = Query(None, ge=1, le=10),
) -> Response:
    """Write a 3-D subvolume at any offset (partial blocks are merged); ``downres=true``
    also rebuilds the pyramid instances below it. A block-aligned body is staged slab
    by slab of blocks as it arrives (:meth:`VolumeData.receive_staged`): its chunk files
    are written and synced while the rest of the body comes in, and only the last
    slab's after it. (Tried while staging wrote 4 files at once, this measured no gain:
    each slab's 16 files were then synced 4 rounds deep.)"""
    if parse_dims(dims) is not None:
        raise BadRequest("only 3-D (0_1_2) subvolumes can be POSTed")
    if fmt is not None and fmt.lower() not in ("raw", "octet-stream"):
        raise BadRequest(f"POSTed voxels must be raw bytes, not {fmt!r}")
    box = volume_box(data, size, offset)
    if data.volume().grid.is_aligned(box) and data.can_stage_body():
        await data.receive_staged(request, box)
        await run_in_threadpool(data.publish_staged, box)
    else:
        body = await request.body()
        await run_in_threadpool(_write_body, data, box, body)
    if flag(downres):
        levels = levels or data.settings.get("MaxDownresLevel") or 1
        await run_in_threadpool(build_pyramid, data, box, levels)
    return Response()


def _write_body(data: ImageBlock, box: Box, body: bytes) -> None:
    """``POST raw`` of a whole body in hand (unaligned, or outside a transaction)."""
    expected = box.voxels * data.dtype.itemsize
    if len(body) != expected:
        raise BadRequest(
            f"body has {len(body)} bytes but {box.size} {data.typename} voxels need {expected}"
        )
    data.write(box, np.frombuffer(body, dtype=data.dtype).reshape(box.shape_zyx))


@router.post("/pyramid/{size}/{offset}")
def post_pyramid(
    data: ImageData, size: str, offset: str, levels: int = Query(1, ge=1, le=10)
) -> Response:
    """dvid-cloud extension: (re)build ``<name>_1`` .. ``<name>_<levels>`` for a region by
    2x2x2 mean downsampling, creating those instances if needed."""
    box = volume_box(data, size, offset)
    written = build_pyramid(data, box, levels)
    return json_response({"levels": written})


def _block_records(data: ImageBlock, blocks: np.ndarray, compression: str | None) -> bytes:
    """DVID's block stream: per existing block int32 bx, by, bz, nbytes, then the bytes."""
    is_jpeg_instance = data.instance.compression.startswith("jpeg")
    mode = (compression or ("jpeg" if is_jpeg_instance else "uncompressed")).lower()
    if mode == "jpeg" and not is_jpeg_instance:
        raise BadRequest("compression=jpeg needs an instance created with Compression=jpeg")
    if mode not in ("jpeg", "uncompressed"):
        raise BadRequest(f"unknown block compression {compression!r}: use jpeg or uncompressed")
    parts = []
    for (bx, by, bz), voxels in data.volume().read_blocks(blocks):
        payload = images.jpeg_volume(voxels) if mode == "jpeg" else voxels.tobytes()
        parts.append(struct.pack("<iiii", bx, by, bz, len(payload)))
        parts.append(payload)
    return b"".join(parts)


@router.get("/subvolblocks/{size}/{offset}")
def subvolblocks(
    data: ImageData, size: str, offset: str, compression: str | None = None
) -> Response:
    box = volume_box(data, size, offset)
    grid = data.volume().grid
    if not grid.is_aligned(box):
        raise BadRequest(f"subvolblocks needs a box aligned to blocks of {grid.block_size}")
    body = _block_records(data, grid.blocks(box), compression)
    return Response(body, media_type="application/octet-stream")


@router.get("/specificblocks")
def specificblocks(
    data: ImageData, blocks: str = "", compression: str | None = None, prefetch: str | None = None
) -> Response:
    body = _block_records(data, parse_block_list(blocks), compression)
    if flag(prefetch):
        return Response()
    return Response(body, media_type="application/octet-stream")


def _span(data: ImageBlock, coord: str, span: str) -> tuple[Box, list[tuple[int, int, int]]]:
    """The voxels of ``span`` blocks along x from block ``coord``, and their coordinates
    (bounded before they are listed)."""
    start = parse_block(coord)
    (count,) = parse_size(span, 1, "block span")
    last = (start[0] + count - 1, start[1], start[2])
    if last[0] >= BLOCK_LIMIT:
        raise BadRequest(f"a span of {count} blocks from {start} reaches past block x 2^20")
    grid = data.volume().grid
    box = bounded(data, grid.block_box(start).union(grid.block_box(last)))
    return box, [(start[0] + i, start[1], start[2]) for i in range(count)]


@router.get("/blocks/{coord}/{span}")
def get_blocks(data: ImageData, coord: str, span: str) -> Response:
    box, coords = _span(data, coord, span)
    volume = _read(data, box)
    bx = data.settings["BlockSize"][0]
    parts = [volume[:, :, i * bx : (i + 1) * bx].tobytes() for i in range(len(coords))]
    return Response(b"".join(parts), media_type="application/octet-stream")


@router.post("/blocks/{coord}/{span}")
def post_blocks(data: ImageData, body: RawBody, coord: str, span: str) -> Response:
    box, coords = _span(data, coord, span)
    bx, by, bz = data.block_size
    block_bytes = bx * by * bz * data.dtype.itemsize
    if len(body) != block_bytes * len(coords):
        raise BadRequest(
            f"body has {len(body)} bytes; {len(coords)} blocks need {block_bytes * len(coords)}"
        )
    # The blocks run along x: side by side they are the voxels of ``box``.
    blocks = np.frombuffer(body, dtype=data.dtype).reshape(len(coords), bz, by, bx)
    data.write(box, np.concatenate(list(blocks), axis=2))
    return Response()


@router.get("/arb/{top_left}/{top_right}/{bottom_left}/{res}")
@router.get("/arb/{top_left}/{top_right}/{bottom_left}/{res}/{fmt}")
def arb(
    data: ImageData,
    top_left: str,
    top_right: str,
    bottom_left: str,
    res: str,
    fmt: str | None = None,
) -> Response:
    """An arbitrary planar slice, sampled with nearest-voxel lookup (voxel coordinates)."""
    tl, tr, bl = (np.array(parse_float_point(p)) for p in (top_left, top_right, bottom_left))
    try:
        step = float(res)
    except ValueError:
        raise BadRequest(f"resolution {res!r} must be a number") from None
    if not (math.isfinite(step) and step > 0):
        raise BadRequest(f"resolution {res!r} must be a positive number")
    across = float(np.linalg.norm(tr - tl)) / step  # may be inf for a tiny step
    down = float(np.linalg.norm(bl - tl)) / step
    if (across + 1) * (down + 1) > data.services.settings.max_voxels:
        raise TooLarge(f"arb image of {across + 1:.0f}x{down + 1:.0f} pixels is too large")
    width, height = math.floor(across) + 1, math.floor(down) + 1
    i = np.arange(width) / max(width - 1, 1)
    j = np.arange(height) / max(height - 1, 1)
    points = tl + j[:, None, None] * (bl - tl) + i[None, :, None] * (tr - tl)
    voxels = np.floor(points + 0.5).astype(np.int64)  # (h, w, 3) x, y, z
    lo = voxels.reshape(-1, 3).min(axis=0)
    hi = voxels.reshape(-1, 3).max(axis=0) + 1
    box = bounded(data, Box.from_bounds(lo.tolist(), hi.tolist()))
    volume = _read(data, box)
    rel = voxels - lo
    plane = volume[rel[..., 2], rel[..., 1], rel[..., 0]]
    return _image_response(data, plane, fmt)
