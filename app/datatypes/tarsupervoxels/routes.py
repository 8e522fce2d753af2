"""tarsupervoxels endpoints, relative to ``/api/node/{uuid}/{dataname}``; answers and
messages as DVID's handlers give them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response, StreamingResponse

from app.api.common import RawBody, json_list, json_response
from app.api.routing import LazyRoute
from app.datatypes import tars
from app.datatypes.base import bound
from app.datatypes.tarsupervoxels import TarSupervoxels
from app.errors import BadRequest, NotFound
from app.volumes.requests import parse_label, parse_labels

router = APIRouter(route_class=LazyRoute)

TarSupervoxelsData = Annotated[TarSupervoxels, Depends(bound(TarSupervoxels))]


def _supervoxel(text: str) -> int:
    return parse_label(text, "supervoxel")


@router.get("/supervoxel/{sv}")
def get_supervoxel(sv: str, data: TarSupervoxelsData) -> Response:
    supervoxel = _supervoxel(sv)
    blob = data.blob(supervoxel)
    if blob is None:
        raise NotFound(f"Supervoxel {supervoxel} not found")
    return Response(blob, media_type="application/octet-stream")


@router.post("/supervoxel/{sv}")
def post_supervoxel(sv: str, body: RawBody, data: TarSupervoxelsData) -> Response:
    data.put(_supervoxel(sv), body)
    return Response()


@router.delete("/supervoxel/{sv}")
def delete_supervoxel(sv: str, data: TarSupervoxelsData) -> Response:
    data.remove(_supervoxel(sv))
    return Response()


@router.post("/load")
def load(body: RawBody, data: TarSupervoxelsData) -> Response:
    """A tar of ``<sv>.<Extension>`` entries: all stored, or (any bad entry) none."""
    data.load(tars.read_entries(body))
    return Response()


def _body(data: TarSupervoxels, label: str, failing: str) -> tuple[int, list[int]]:
    """The body a path names and its supervoxels; a 400 says what ``failing`` could not
    do, as DVID prefixes its messages."""
    body = parse_label(label)
    try:
        return body, data.supervoxels(body)
    except BadRequest as e:
        raise BadRequest(f"{failing.format(body)}: {e.message}") from None


@router.get("/tarfile/{label}")
def get_tarfile(label: str, data: TarSupervoxelsData) -> Response:
    """The body's blobs as one tar, streamed in supervoxel order as the parallel reads of
    each batch complete; ``<sv>.missing`` (empty) stands for an absent blob."""
    _, supervoxels = _body(data, label, "can't send tarfile for label {}")

    def stream() -> Iterator[bytes]:
        for batch in data.batches(supervoxels):
            yield b"".join(tars.entry(data.entry_name(sv, blob), blob or b"") for sv, blob in batch)
        yield tars.END

    return StreamingResponse(stream(), media_type="application/tar")


@router.head("/tarfile/{label}")
def head_tarfile(label: str, data: TarSupervoxelsData) -> Response:
    """200 if the body exists and every supervoxel has a blob (empty ones count)."""
    body, supervoxels = _body(data, label, "can't check existence of tarfile for label {}")
    if data.missing(supervoxels):
        raise BadRequest(
            f"can't check existence of tarfile for label {body}: "
            f"not all supervoxel data available for label {body}"
        )
    return Response()


@router.get("/missing/{label}")
def get_missing(label: str, data: TarSupervoxelsData) -> Response:
    """The body's supervoxels without blobs, ascending (``[]`` if none)."""
    _, supervoxels = _body(data, label, "can't get missing supervoxels")
    return json_response(data.missing(supervoxels))


@router.get("/exists")
def exists(body: RawBody, data: TarSupervoxelsData, hash: str | None = None) -> Response:
    """Whether each supervoxel the body lists has a blob, in the order listed."""
    supervoxels = parse_labels(json_list(body, "supervoxels", hash), "supervoxel")
    return json_response([blob is not None for blob in data.blobs(supervoxels)])
