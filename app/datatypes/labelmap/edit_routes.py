"""labelmap's proofreading endpoints and what their log tells, relative to
``/api/node/{uuid}/{dataname}``. Answers are formatted as DVID prints them."""

from __future__ import annotations

import struct
from typing import Annotated

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from app.api.common import RawBody, json_list
from app.api.routing import LazyRoute
from app.dag import Node
from app.datatypes.labelmap import Labelmap, codecs, history, keys, mutate
from app.datatypes.labelmap.routes import (
    OCTET,
    LabelmapData,
    read_labels,
    require_indexed,
)
from app.datatypes.labelmap.state import MAX_UINT64
from app.errors import BadRequest, NotFound
from app.volumes import images
from app.volumes.requests import bounded, parse_dims, parse_label, parse_labels, plane_box, plane_of

router = APIRouter(route_class=LazyRoute)

JSON = "application/json"


async def author(u: str | None = None, app: str | None = None) -> mutate.Author:
    """Who is editing: DVID's ``u`` and ``app`` query strings (a coroutine: no thread hop)."""
    return mutate.Author(u or "", app or "")


Author = Annotated[mutate.Author, Depends(author)]


def _json(text: str) -> Response:
    return Response(text, media_type=JSON)


def _indexed(data: Labelmap) -> Labelmap:
    require_indexed(data)
    return data


# --- edits ---------------------------------------------------------------------------------


@router.post("/merge")
def post_merge(data: LabelmapData, body: RawBody, who: Author) -> Response:
    labels = parse_labels(json_list(body, "labels [target, merged1, merged2, ...]"))
    mutid = mutate.merge(_indexed(data), labels, who)
    return _json(f'{{"MutationID": {mutid}}}')


@router.post("/cleave/{label}")
def post_cleave(data: LabelmapData, label: int, body: RawBody, who: Author) -> Response:
    target = parse_label(label)
    svs = parse_labels(json_list(body, "supervoxels to cleave"), "supervoxel")
    cleaved, mutid = mutate.cleave(_indexed(data), target, svs, who)
    return _json(f'{{"CleavedLabel": {cleaved}, "MutationID": {mutid}}}')


@router.post("/split-supervoxel/{sv}")
def post_split_supervoxel(
    data: LabelmapData,
    sv: int,
    body: RawBody,
    who: Author,
    split: int = 0,
    remain: int = 0,
    downres: str | None = None,
) -> Response:
    supervoxel = parse_label(sv, "supervoxel")
    split_id = parse_label(split, "split id", zero_ok=True)
    remain_id = parse_label(remain, "remain id", zero_ok=True)
    lower = downres is None or downres.lower() != "false"
    a, b, mutid = mutate.split_supervoxel(
        _indexed(data), supervoxel, body, split_id, remain_id, lower, who
    )
    return _json(f'{{"SplitSupervoxel": {a}, "RemainSupervoxel": {b}, "MutationID": {mutid}}}')


@router.post("/split/{label}")
def post_split(data: LabelmapData, label: int, body: RawBody, who: Author) -> Response:
    new, mutid = mutate.split(_indexed(data), parse_label(label), body, who)
    return _json(f'{{"label": {new}, "MutationID": {mutid}}}')


@router.post("/renumber")
def post_renumber(data: LabelmapData, body: RawBody, who: Author) -> Response:
    pairs = parse_labels(json_list(body, "labels [new1, old1, new2, old2, ...]"))
    mutate.renumber(_indexed(data), pairs, who)
    return Response()


@router.post("/set-nextlabel/{label}")
def post_set_nextlabel(data: LabelmapData, label: int, ceiling: int | None = None) -> Response:
    """Admin only: the next new label is ``label+1`` (``ceiling`` 0 clears, absent keeps)."""
    start = parse_label(label, "next label")
    if start >= MAX_UINT64:
        raise BadRequest(f"next label start {start} is reserved: no uint64 label follows it")
    limit = None if ceiling is None else parse_label(ceiling, "ceiling", zero_ok=True)
    _indexed(data).next_label().set(start, limit)
    return Response()


# --- the mutation log ----------------------------------------------------------------------


@router.get("/mutations")
def get_mutations(data: LabelmapData, userid: str | None = None) -> Response:
    return Response(history.mutations(data, userid), media_type=JSON)


@router.get("/mutations-range/{begin}/{end}")
def get_mutations_range(data: LabelmapData, begin: str, end: str) -> Response:
    first, last = _version(data, begin), _version(data, end)
    return Response(history.mutations_range(data, first, last), media_type=JSON)


@router.get("/history/{label}/{begin}/{end}")
def get_history(data: LabelmapData, label: int, begin: str, end: str) -> Response:
    body = history.history(data, parse_label(label), _version(data, begin), _version(data, end))
    return Response(body, media_type=JSON)


def _version(data: Labelmap, ref: str) -> Node:
    repo, node = data.services.catalog.resolve(ref)
    if repo.root != data.repo.root:
        raise BadRequest(f"version {ref} is not in this instance's repo")
    return data.dag.node(node.uuid)


@router.get("/supervoxel-splits")
def get_supervoxel_splits(data: LabelmapData) -> Response:
    return Response(history.supervoxel_splits(data), media_type=JSON)


@router.get("/blobstore/{ref}")
def get_blob(data: LabelmapData, ref: str) -> Response:
    """A payload a mutation record refers to (``Split``: the posted RLEs)."""
    if len(ref) != 64 or any(c not in "0123456789abcdef" for c in ref):
        raise BadRequest(f"bad blobstore reference {ref!r}")
    blob = data.store.get(keys.blob(data.root, ref))
    if blob is None:
        raise NotFound(f"no blob {ref}")
    return Response(blob.data, media_type=OCTET)


# --- label queries that only the index answers -----------------------------------------------


@router.get("/lastmod/{label}")
def get_lastmod(data: LabelmapData, label: int) -> Response:
    index = _indexed(data).indices().get(parse_label(label))
    if index is None:
        raise NotFound(f"label {label} not found")
    user, app, time = (
        orjson.dumps(v).decode()
        for v in (index.last_mod_user, index.last_mod_app, index.last_mod_time)
    )
    return _json(
        f'{{"mutation id": {index.last_mutid}, "last mod user": {user}, '
        f'"last mod app": {app}, "last mod time": {time} }}'
    )


@router.get("/existing-labels")
def get_existing_labels(data: LabelmapData) -> Response:
    labels = _indexed(data).indices().labels()
    return Response(f"[{','.join(map(str, labels))}]", media_type=JSON)


@router.get("/indices-compressed")
def get_indices_compressed(data: LabelmapData, body: RawBody) -> Response:
    """Per label: uint64 size, uint64 label, then DVID's compressed index envelope (size
    0 for an absent label)."""
    labels = parse_labels(json_list(body, "labels"))
    if len(labels) > 50_000:
        raise BadRequest(
            f"only 50,000 label indices can be returned at a time, {len(labels)} given"
        )
    indices = _indexed(data).indices()
    out = []
    for label in labels:
        index = indices.get(label)
        packed = codecs.compress_index(index.SerializeToString()) if index else b""
        out.append(struct.pack("<QQ", len(packed), label) + packed)
    return Response(b"".join(out), media_type=OCTET)


@router.get("/pseudocolor/{dims}/{size}/{offset}")
@router.get("/pseudocolor/{dims}/{size}/{offset}/{fmt}")
def get_pseudocolor(
    data: LabelmapData,
    dims: str,
    size: str,
    offset: str,
    fmt: str | None = None,
    scale: int = Query(0, ge=0),
) -> Response:
    """A 2-D slice of bodies, each hashed to an opaque RGB colour (0 stays black)."""
    axes = parse_dims(dims)
    if axes is None:
        raise BadRequest("DVID currently supports only 2d pseudocolor image requests")
    box = bounded(data, plane_box(axes, size, offset))
    plane = plane_of(read_labels(data, box, scale, False), axes)
    name, quality = images.parse_format(fmt, "png")
    if name == "jpeg":
        raise BadRequest("pseudocolor images are PNG")
    body = images.encode(pseudocolor(plane), name, quality, "labelmap")
    return Response(body, media_type=images.MEDIA_TYPES[name])


def pseudocolor(labels: np.ndarray) -> np.ndarray:
    """Labels -> uint32 RGBA pixels (little-endian R, G, B, A=255) from a multiplicative
    hash of each label; label 0 is black."""
    with np.errstate(over="ignore"):
        mixed = labels.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    rgb = (mixed >> np.uint64(40)).astype(np.uint32) & np.uint32(0xFFFFFF)
    rgb[labels == 0] = 0
    return rgb | np.uint32(0xFF000000)
