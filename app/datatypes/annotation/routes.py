"""annotation endpoints, relative to ``/api/node/{uuid}/{dataname}``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from app.api.common import JsonBody, json_response
from app.api.routing import LazyRoute
from app.datatypes.annotation import Annotation, edits, keys
from app.datatypes.annotation.elements import Element, Pos, block_of, pos, verbose_rels
from app.datatypes.annotation.records import placed_elements
from app.datatypes.base import bound
from app.datatypes.capabilities import region_at
from app.errors import BadRequest
from app.storage import parallel
from app.volumes.geometry import BlockGrid, Box, parse_box, parse_point
from app.volumes.requests import parse_label

router = APIRouter(route_class=LazyRoute)

AnnotationData = Annotated[Annotation, Depends(bound(Annotation))]
#: Above this many blocks, a read lists which blocks exist before reading any.
PROBE_LIMIT = 256


# --- reading blocks --------------------------------------------------------------------


def _block_keys(data: Annotation, box: Box) -> list[str]:
    lo, hi = BlockGrid(data.block_size()).block_range(box)
    return [
        keys.block_key((x, y, z))
        for z in range(lo[2], hi[2])
        for y in range(lo[1], hi[1])
        for x in range(lo[0], hi[0])
    ]


def _read_blocks(data: Annotation, block_keys: Iterable[str]) -> list[tuple[str, bytes]]:
    """The non-empty blocks among ``block_keys`` as stored JSON arrays, in the order given
    (read in parallel)."""
    view = data.view()
    wanted = list(block_keys)
    if len(wanted) > PROBE_LIMIT:  # one listing beats probing many absent blocks
        stored = set(view.keys_in_range(*keys.prefix_range(keys.BLOCK)))
        wanted = [k for k in wanted if k in stored]
    found = []
    for key, record in zip(
        wanted, parallel.each(view.get, wanted, overlap=view.overlap_calls), strict=True
    ):
        if record:
            array = placed_elements(record)
            if array != b"[]":
                found.append((key, array))
    return found


def _parsed(blocks: list[tuple[str, bytes]]) -> list[Element]:
    return [e for _, array in blocks for e in orjson.loads(array)]


def _json_array(arrays: Iterable[bytes], none: bytes = b"[]") -> Response:
    """Stored JSON arrays served as one, without parsing them."""
    inner = b",".join(a[1:-1] for a in arrays if a != b"[]")
    return Response(b"[" + inner + b"]" if inner else none, media_type="application/json")


def _blocks_json(blocks: list[tuple[str, bytes]]) -> Response:
    """DVID's ``{"x,y,z": [elements], ...}``, each block's array as stored."""
    parts = (b'"%d,%d,%d":' % keys.block_coord(k) + array for k, array in blocks)
    return Response(b"{" + b",".join(parts) + b"}", media_type="application/json")


@router.get("/elements/{size}/{offset}")
def get_elements(data: AnnotationData, size: str, offset: str) -> Response:
    """Elements with ``offset <= Pos < offset + size``; ``null`` when none (as DVID).
    Blocks wholly inside the box are served as stored; only those the box cuts are
    parsed and filtered."""
    box = parse_box(size, offset)
    lo, end = box.offset, box.end
    bx, by, bz = data.block_size()
    arrays = []
    for key, array in _read_blocks(data, _block_keys(data, box)):
        x, y, z = keys.block_coord(key)
        first, last = (x * bx, y * by, z * bz), ((x + 1) * bx, (y + 1) * by, (z + 1) * bz)
        if all(lo[i] <= first[i] and last[i] <= end[i] for i in range(3)):
            arrays.append(array)
            continue
        inside = [
            e for e in orjson.loads(array) if all(lo[i] <= e["Pos"][i] < end[i] for i in range(3))
        ]
        arrays.append(orjson.dumps(inside))
    return _json_array(arrays, none=b"null")


@router.post("/elements")
def post_elements(data: AnnotationData, body: JsonBody) -> Response:
    edits.post_elements(data, body)
    return Response()


@router.get("/blocks/{size}/{offset}")
def get_blocks(data: AnnotationData, size: str, offset: str) -> Response:
    """Every non-empty block meeting the box, whole (no per-point filtering)."""
    return _blocks_json(_read_blocks(data, _block_keys(data, parse_box(size, offset))))


@router.post("/blocks")
def post_blocks(data: AnnotationData, body: JsonBody) -> Response:
    edits.post_blocks(data, body)
    return Response()


@router.get("/all-elements")
def all_elements(data: AnnotationData) -> Response:
    view = data.view()
    return _blocks_json(_read_blocks(data, view.keys_in_range(*keys.prefix_range(keys.BLOCK))))


@router.get("/roi/{spec}")
def get_roi(data: AnnotationData, spec: str) -> Response:
    """Elements in the blocks of an ROI (``name`` or ``name,uuid``); the ROI's block size
    must be the annotation's."""
    if spec.count(",") > 1:
        raise BadRequest(f"Bad ROI specification: {spec!r}")
    region = region_at(data, spec)
    if region.region_block_size() != data.block_size():
        raise BadRequest(
            f"/roi endpoint currently requires ROI {spec.split(',')[0]!r} to have same "
            f"block size as annotation {data.name!r}"
        )
    wanted = (keys.block_key((x, y, z)) for x, y, z in region.region_blocks().tolist())
    return _json_array((array for _, array in _read_blocks(data, wanted)), none=b"null")


# --- label and tag lists ---------------------------------------------------------------


def _relationships(value: str | None) -> tuple[bool, bool]:
    """``relationships=true|verbose``: (add relationships, verbose)."""
    return value in ("true", "verbose"), value == "verbose"


def _expanded(data: Annotation, listed: list[Element], verbose: bool) -> list[Element]:
    """Listed elements as their blocks hold them, with relationships; verbose ones also
    carry each partner's Kind, Tags and Prop."""
    size = data.block_size()
    needed = {keys.block_key(block_of(e["Pos"], size)) for e in listed}
    full: dict[Pos, Element] = {pos(e): e for e in _parsed(_read_blocks(data, sorted(needed)))}
    if verbose:
        partners = {
            keys.block_key(block_of(r["To"], size))
            for e in listed
            for r in (full.get(pos(e)) or {}).get("Rels") or ()
        }
        full.update((pos(e), e) for e in _parsed(_read_blocks(data, sorted(partners - needed))))
        return [{**e, "Rels": verbose_rels(full.get(pos(e)) or {"Rels": []}, full)} for e in listed]
    return [full[pos(e)] for e in listed if pos(e) in full]


def _list_response(data: Annotation, array: bytes, relationships: str | None) -> Response:
    """A stored list (JSON array, without relationships) as DVID answers it: as stored,
    or with each element's relationships from its block."""
    add, verbose = _relationships(relationships)
    if not add:
        return _json_array([array])
    return json_response(_expanded(data, orjson.loads(array), verbose))


@router.get("/label/{label}")
def get_label(data: AnnotationData, label: str, relationships: str | None = None) -> Response:
    """Elements in body ``label`` at this version; ``[]`` when none."""
    record = data.view().get(keys.label_key(parse_label(label)))
    return _list_response(data, placed_elements(record) if record else b"[]", relationships)


@router.get("/tag/{tag}")
def get_tag(data: AnnotationData, tag: str, relationships: str | None = None) -> Response:
    record = data.view().get(keys.tag_key(tag))
    return _list_response(data, record or b"[]", relationships)


@router.post("/labels")
def post_labels(data: AnnotationData, body: JsonBody) -> Response:
    edits.post_labels(data, body)
    return Response()


# --- single elements -------------------------------------------------------------------


@router.delete("/element/{coord}")
def delete_element(data: AnnotationData, coord: str) -> Response:
    edits.delete_element(data, list(parse_point(coord, "element coordinate")))
    return Response()


@router.post("/move/{source}/{target}")
def move_element(data: AnnotationData, source: str, target: str) -> Response:
    edits.move_element(
        data,
        list(parse_point(source, "from coordinate")),
        list(parse_point(target, "to coordinate")),
    )
    return Response()


# --- bulk upkeep -----------------------------------------------------------------------


@router.post("/reload")
def reload(data: AnnotationData) -> Response:
    """Rebuild the tag and label lists from the blocks (synchronously: when this answers,
    the lists are current)."""
    edits.reload(data)
    return Response()


@router.get("/scan")
def scan(data: AnnotationData) -> Response:
    """DVID's diagnostic counts of block records."""
    view = data.view()
    block_keys = view.keys_in_range(*keys.prefix_range(keys.BLOCK))
    records = parallel.each(view.get, block_keys, overlap=view.overlap_calls)
    empty = sum(1 for record in records if not record or placed_elements(record) == b"[]")
    return json_response({"num kv pairs": len(block_keys), "num empty blocks": empty})
