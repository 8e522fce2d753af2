"""keyvalue endpoints, relative to ``/api/node/{uuid}/{dataname}``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response

from app.api.common import RawBody, flag, json_response
from app.api.routing import LazyRoute
from app.datatypes import kvformats as formats
from app.datatypes.base import bound
from app.datatypes.keyvalue import KeyValue
from app.errors import BadRequest, NotFound

router = APIRouter(route_class=LazyRoute)

KeyValueData = Annotated[KeyValue, Depends(bound(KeyValue))]

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _value(data: KeyValue, key: str) -> bytes:
    value = data.view().get(key)
    if value is None:
        raise NotFound(f'Key "{key}" not found')
    return value


@router.get("/key/{key}")
def get_key(
    key: str,
    data: KeyValueData,
    byte_start: int | None = Query(None, ge=0),
    byte_end: int | None = Query(None, ge=0),
    range_header: str | None = Header(None, alias="Range"),
) -> Response:
    """The value (200), a byte range of it (query: 200; ``Range`` header: 206), or 404."""
    if range_header is not None and (byte_start is not None or byte_end is not None):
        raise BadRequest("give either a Range header or byte_start/byte_end, not both")
    if (byte_start is None) != (byte_end is None):
        raise BadRequest("byte_start and byte_end must be given together")
    value = _value(data, key)
    headers = {"Accept-Ranges": "bytes"}
    if byte_start is not None and byte_end is not None:
        part = formats.slice_value(key, value, byte_start, byte_end)
        return Response(part, media_type="application/octet-stream", headers=headers)
    span = _parse_range(range_header, len(value)) if range_header else None
    if span is None:
        return Response(value, media_type="application/octet-stream", headers=headers)
    if isinstance(span, str):  # "unsatisfiable"
        return Response(status_code=416, headers={"Content-Range": f"bytes */{len(value)}"})
    start, end = span
    headers["Content-Range"] = f"bytes {start}-{end}/{len(value)}"
    return Response(
        value[start : end + 1],
        status_code=206,
        media_type="application/octet-stream",
        headers=headers,
    )


def _parse_range(header: str, total: int) -> tuple[int, int] | str | None:
    """One ``bytes=a-b|a-|-n`` range; None (serve everything) when malformed or multiple,
    ``"unsatisfiable"`` (416) when it starts past the end or the value is empty."""
    match = _RANGE_RE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or total == 0:
            return "unsatisfiable"
        return max(0, total - suffix), total - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= total:
        return "unsatisfiable"
    end = int(last) if last else total - 1
    return start, min(end, total - 1)


@router.head("/key/{key}")
def head_key(key: str, data: KeyValueData) -> Response:
    if data.view().get(key) is None:
        return Response(status_code=404)
    return Response(headers={"Accept-Ranges": "bytes"})


@router.post("/key/{key}")
def post_key(key: str, body: RawBody, data: KeyValueData) -> Response:
    data.write(key, body)
    return Response()


@router.delete("/key/{key}")
def delete_key(key: str, data: KeyValueData) -> Response:
    data.delete(key)
    return Response()


@router.get("/keys")
def get_keys(data: KeyValueData) -> Response:
    return json_response(data.view().keys_in_range())


@router.get("/keyrange/{first}/{last}")
def keyrange(first: str, last: str, data: KeyValueData) -> Response:
    return json_response(data.view().keys_in_range(first, last))


def _encode(form: str, pairs: Iterable[tuple[str, bytes]], check: bool) -> Response:
    if form == "json":
        return Response(formats.encode_json(pairs, check), media_type="application/json")
    if form == "tar":
        return Response(formats.encode_tar(pairs), media_type="application/tar")
    return Response(formats.encode_protobuf(pairs), media_type="application/octet-stream")


@router.get("/keyrangevalues/{first}/{last}")
def keyrangevalues(first: str, last: str, request: Request, data: KeyValueData) -> Response:
    form = formats.output_form(request.query_params)
    view = data.view()
    pairs = []
    for key in view.keys_in_range(first, last):
        value = view.get(key)
        if value is not None:
            pairs.append((key, value))
    return _encode(form, pairs, flag(request.query_params.get("check")))


@router.get("/keyvalues")
def get_keyvalues(request: Request, body: RawBody, data: KeyValueData) -> Response:
    """Batch read; the request body names the keys (protobuf ``Keys``, or JSON)."""
    form = formats.output_form(request.query_params)
    wanted = (
        formats.parse_keys_protobuf(body) if form == "protobuf" else formats.parse_keys_json(body)
    )
    view = data.view()
    pairs = []
    for item in wanted:
        value = view.get(item.key) or b""
        if item.byte_start is not None and item.byte_end is not None:
            value = formats.slice_value(item.key, value, item.byte_start, item.byte_end)
        pairs.append((item.key, value))
    return _encode(form, pairs, form == "json" and _has_ranges(wanted))


def _has_ranges(wanted: list[formats.KeyRequest]) -> bool:
    """A ranged value sent as JSON must itself be JSON: validate when ranges are asked."""
    return any(item.byte_start is not None for item in wanted)


@router.post("/keyvalues")
def post_keyvalues(body: RawBody, data: KeyValueData) -> Response:
    data.write_many(formats.parse_keyvalues_protobuf(body))
    return Response()
