"""labelsz endpoints, relative to ``/api/node/{uuid}/{dataname}``; answers are byte for
byte DVID's (``count``/``counts`` name the index type, ``top``/``threshold`` say
``Size``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from app.api.common import RawBody, json_response, parse_json
from app.api.routing import LazyRoute
from app.datatypes.base import bound
from app.datatypes.labelsz import LabelSz
from app.datatypes.labelsz.counts import MAX_LABELS_RETURNED, parse_index_type
from app.errors import BadRequest
from app.volumes.geometry import parse_int
from app.volumes.requests import parse_label, parse_labels

router = APIRouter(route_class=LazyRoute)

LabelSzData = Annotated[LabelSz, Depends(bound(LabelSz))]

MAX_UINT32 = 2**32 - 1


def _uint32(text: str, what: str) -> int:
    """A path number as DVID's ``ParseUint(s, 10, 32)`` reads it; 400 otherwise."""
    value = parse_int(text, what)
    if not 0 <= value <= MAX_UINT32:
        raise BadRequest(f"{what} {value} is outside 0..{MAX_UINT32}")
    return value


def _sizes(ranked: list[tuple[int, int]]) -> Response:
    return json_response([{"Label": label, "Size": size} for label, size in ranked])


@router.get("/count/{label}/{index_type}")
def count(label: str, index_type: str, data: LabelSzData) -> Response:
    """``{"Label": l, "<type>": n}``: the label's count (0 if none)."""
    ident = parse_label(label, zero_ok=True)
    kind = parse_index_type(index_type)
    (n,) = data.counts().get(kind, [ident]).tolist()
    return json_response({"Label": ident, kind: n})


@router.get("/counts/{index_type}")
def counts(index_type: str, body: RawBody, data: LabelSzData) -> Response:
    """The counts of the labels the JSON body lists, in its order."""
    kind = parse_index_type(index_type)
    labels = parse_labels(parse_json(body))
    found = data.counts().get(kind, labels).tolist()
    return json_response([{"Label": lb, kind: n} for lb, n in zip(labels, found, strict=True)])


@router.get("/top/{n}/{index_type}")
def top(n: str, index_type: str, data: LabelSzData) -> Response:
    """The ``n`` labels with the most elements of the type."""
    limit = _uint32(n, "N")
    kind = parse_index_type(index_type)
    return _sizes(data.counts().ranked(kind, limit))


@router.get("/threshold/{t}/{index_type}")
def threshold(
    t: str, index_type: str, data: LabelSzData, offset: str = "", n: str = ""
) -> Response:
    """Labels with at least ``t`` elements, ranked, one page (``offset``, ``n``) at a
    time; pages hold at most DVID's 10,000 labels."""
    minimum = _uint32(t, "threshold")
    kind = parse_index_type(index_type)
    start = parse_int(offset, "offset") if offset else 0
    wanted = parse_int(n, "n") if n else 0
    if wanted < 0:
        raise BadRequest(f"bad number of requested labels ({wanted})")
    limit = min(wanted or MAX_LABELS_RETURNED, MAX_LABELS_RETURNED)
    return _sizes(data.counts().ranked(kind, limit, minimum=minimum, offset=start))


@router.post("/reload")
def reload(data: LabelSzData) -> Response:
    """Recount everything from the synced annotation (DVID does it in the background;
    here the answer comes once the new counts are in place)."""
    data.reload()
    return Response()
