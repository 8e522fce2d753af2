"""Endpoints every volume datatype shares: ``metadata``, ``extents``, ``resolution``, and the
neuroglancer precomputed view ``precomputed/...`` (:mod:`app.volumes.precomputed`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.api.common import JsonBody, json_response
from app.api.routing import LazyRoute
from app.datatypes.base import bound
from app.errors import BadRequest, NotFound
from app.repo import Repo
from app.volumes import precomputed
from app.volumes.base import VolumeData
from app.volumes.geometry import Box, coordinate, json_int

router = APIRouter(route_class=LazyRoute)

AnyVolume = Annotated[VolumeData, Depends(bound(VolumeData))]


@router.get("/metadata")
def metadata(data: AnyVolume) -> Response:
    extended = data.extended_json()
    lo = extended["MinPoint"] or [0, 0, 0]
    hi = extended["MaxPoint"]
    sizes = [h - a + 1 for a, h in zip(lo, hi, strict=True)] if hi else [0, 0, 0]
    axes = [
        {
            "Label": label,
            "Resolution": extended["VoxelSize"][i],
            "Units": extended["VoxelUnits"][i],
            "Size": sizes[i],
            "Offset": lo[i],
        }
        for i, label in enumerate("XYZ")
    ]
    return Response(
        json_response({"Axes": axes, "Properties": extended}).body,
        media_type="application/vnd.dvid-nd-data+json",
    )


@router.post("/extents")
def post_extents(data: AnyVolume, body: JsonBody) -> Response:
    if not isinstance(body, dict):
        raise BadRequest('extents body must be {"MinPoint": [x,y,z], "MaxPoint": [x,y,z]}')
    points = []
    for key in ("MinPoint", "MaxPoint"):
        value = body.get(key)
        if not (isinstance(value, list) and len(value) == 3):
            raise BadRequest(f"extents need {key} as three integers")
        what = f"{key} coordinate"
        points.append(tuple(coordinate(json_int(v, what), what) for v in value))
    lo, hi = points
    if any(h < a for a, h in zip(lo, hi, strict=True)):
        raise BadRequest("MaxPoint must not be below MinPoint")
    data.set_extents(Box.from_bounds(lo, (h + 1 for h in hi)))
    return Response()


@router.post("/resolution")
def post_resolution(data: AnyVolume, body: JsonBody) -> Response:
    if not (
        isinstance(body, list)
        and len(body) == 3
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in body)
    ):
        raise BadRequest("resolution body must be [rx, ry, rz] of positive numbers")
    name = data.name

    def edit(repo: Repo) -> None:
        repo.instance(name).settings["VoxelSize"] = [float(v) for v in body]
        repo.touch()

    data.services.catalog.update(data.repo.root, edit)
    return Response()


# --- neuroglancer precomputed ------------------------------------------------------------


@router.get("/precomputed/{filename}")
def precomputed_info(data: AnyVolume, request: Request, filename: str) -> Response:
    """``precomputed/info``: the instance at this version as a precomputed volume (other
    top-level files, such as ``provenance``, do not exist: 404)."""
    if filename != "info":
        raise NotFound(f"precomputed volumes here have no {filename!r} file")
    ref = request.path_params.get("uuid", "")
    cache = precomputed.LOCKED_INFO if precomputed.immutable(data, ref) else precomputed.NO_CACHE
    response = json_response(precomputed.info(data))
    response.headers["Cache-Control"] = cache
    return response


@router.get("/precomputed/{scale_key}/{chunk}")
def precomputed_chunk(data: AnyVolume, request: Request, scale_key: str, chunk: str) -> Response:
    """``precomputed/{scale_key}/{x0}-{x1}_{y0}-{y1}_{z0}-{z1}``: one chunk file."""
    ref = request.path_params.get("uuid", "")
    gzip_ok = "gzip" in request.headers.get("accept-encoding", "").lower()
    body, headers = precomputed.chunk(data, ref, scale_key, chunk, gzip_ok)
    return Response(body, media_type=precomputed.media_type(data), headers=headers)
