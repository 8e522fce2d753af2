"""roi endpoints, relative to ``/api/node/{uuid}/{dataname}``."""

from __future__ import annotations

import json
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.api.common import JsonBody, json_response
from app.api.routing import LazyRoute
from app.datatypes.base import bound
from app.datatypes.roi import Roi
from app.datatypes.roi.partition import partition
from app.datatypes.roi.spans import parse_spans
from app.errors import BadRequest
from app.volumes.geometry import parse_int, parse_points
from app.volumes.requests import array_bytes, parse_dims, volume_box

router = APIRouter(route_class=LazyRoute)

RoiData = Annotated[Roi, Depends(bound(Roi))]

#: Subvolumes of more than this many blocks a side reach past every block an ROI holds.
MAX_BATCH = 1 << 21


@router.get("/roi")
def get_roi(data: RoiData) -> Response:
    """The spans, sorted by z, y, x0 (``[]`` when there are none)."""
    return Response(
        orjson.dumps(data.spans, option=orjson.OPT_SERIALIZE_NUMPY),
        media_type="application/json",
    )


@router.post("/roi")
def post_roi(body: JsonBody, data: RoiData) -> Response:
    """Replace the ROI at this version; every span is checked before anything is written."""
    data.put_spans(parse_spans(body))
    return Response()


@router.delete("/roi")
def delete_roi(data: RoiData) -> Response:
    data.delete_spans()
    return Response()


@router.get("/mask/{dims}/{size}/{offset}")
def get_mask(dims: str, size: str, offset: str, data: RoiData) -> Response:
    """One uint8 per voxel of the box, ZYX: 1 inside the ROI, 0 outside."""
    if parse_dims(dims) is not None:
        raise BadRequest("Currently only 3d masks ('0_1_2' shape) is supported")
    mask = data.mask(volume_box(data, size, offset))
    return Response(array_bytes(mask), media_type="application/octet-stream")


@router.post("/ptquery")
def post_ptquery(body: JsonBody, data: RoiData) -> Response:
    """``[[x, y, z], ...]`` voxel points -> whether each is in the ROI, in request order."""
    inside = data.region_contains(parse_points(body))
    return json_response(inside.tolist())


@router.get("/partition")
def get_partition(request: Request, data: RoiData) -> Response:
    """Subvolumes of ``batchsize``³ blocks covering the ROI (``optimized=true``: DVID's
    merging variant), as DVID's indented JSON."""
    text = request.query_params.get("batchsize")
    if text is None:
        raise BadRequest("partition needs a batchsize query string, e.g. ?batchsize=8")
    batch = parse_int(text, "batchsize")
    if not 0 < batch <= MAX_BATCH:
        raise BadRequest(f"batchsize {batch} must be 1 to {MAX_BATCH}")
    optimized = request.query_params.get("optimized") in ("true", "on")  # DVID's test
    cover = partition(data.spans, data.block_size, batch, optimized)
    return Response(json.dumps(cover, indent=4), media_type="application/json")
