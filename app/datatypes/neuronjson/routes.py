"""neuronjson endpoints, relative to ``/api/node/{uuid}/{dataname}``.

Status codes, JSON shapes and bytes follow DVID's handlers (neuronjson.go, query.go).
"""

from __future__ import annotations

import gzip
from typing import Annotated

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.api.common import RawBody, json_response
from app.api.routing import LazyRoute
from app.datatypes import kvformats
from app.datatypes.base import bound
from app.datatypes.neuronjson import (
    META_KEYS,
    NeuronJSON,
    docjson,
    parse_bodyid,
    parse_bound,
    query,
    schema,
)
from app.datatypes.neuronjson.fields import Selection
from app.datatypes.neuronjson.table import Hits
from app.errors import BadRequest, NotFound

router = APIRouter(route_class=LazyRoute)

Data = Annotated[NeuronJSON, Depends(bound(NeuronJSON))]
JSON = "application/json"


def _conditionals(request: Request) -> list[str]:
    """``conditional=a,b`` (legacy alias ``conditionals``)."""
    q = request.query_params
    raw = q.get("conditional") or q.get("conditionals") or ""
    return raw.split(",") if raw else []


def _write_options(request: Request) -> tuple[str, list[str], bool]:
    q = request.query_params
    return q.get("u", ""), _conditionals(request), q.get("replace") == "true"


def _json_list(docs: list[bytes]) -> bytes:
    return b"[" + b",".join(docs) + b"]"


# --- single documents -------------------------------------------------------------------------


def _document(data: NeuronJSON, key: str, selection: Selection) -> bytes | None:
    """DVID's ``GetData``: a neu3 schema, or the selected fields of a document."""
    if key in META_KEYS:
        return data.schema(key)
    doc = data.get_docs([parse_bodyid(key)])[0]
    return None if doc is None else docjson.dumps(selection.apply(doc))


@router.get("/key/{key}")
def get_key(key: str, request: Request, data: Data) -> Response:
    value = _document(data, key, Selection.from_query(request.query_params))
    if value is None:
        raise NotFound(f'Key "{key}" not found')
    return Response(value, media_type=JSON)


@router.head("/key/{key}")
def head_key(key: str, data: Data) -> Response:
    found = data.get_docs([parse_bodyid(key)])[0] is not None
    return Response(status_code=200 if found else 404)


@router.post("/key/{key}")
def post_key(key: str, request: Request, body: RawBody, data: Data) -> Response:
    """Merge the posted fields into the document (``replace=true``: replace it)."""
    user, conditionals, replace = _write_options(request)
    data.put_documents([(key, body)], user, conditionals, replace, "postneuronjson")
    return Response()


@router.delete("/key/{key}")
def delete_key(key: str, data: Data) -> Response:
    data.delete_document(key)
    return Response()


# --- listings ---------------------------------------------------------------------------------


def _keys(hits: Hits) -> Response:
    return json_response([str(i) for i in hits.ids.tolist()])


@router.get("/keys")
def get_keys(data: Data) -> Response:
    return _keys(data.doc_view().everything())


@router.get("/keyrange/{first}/{last}")
def keyrange(first: str, last: str, data: Data) -> Response:
    return _keys(data.doc_view().in_range(parse_bound(first), parse_bound(last)))


def _encode(form: str, pairs: list[tuple[str, bytes]], check: bool) -> Response:
    if form == "json":
        return Response(kvformats.encode_json(pairs, check), media_type=JSON)
    if form == "tar":
        return Response(kvformats.encode_tar(pairs), media_type="application/tar")
    return Response(kvformats.encode_protobuf(pairs), media_type="application/octet-stream")


@router.get("/keyrangevalues/{first}/{last}")
def keyrangevalues(first: str, last: str, request: Request, data: Data) -> Response:
    q = request.query_params
    form = kvformats.output_form(q)
    hits = data.doc_view().in_range(parse_bound(first), parse_bound(last))
    docs = hits.render(Selection.from_query(q))
    pairs = [(str(i), doc) for i, doc in zip(hits.ids.tolist(), docs, strict=True)]
    return _encode(form, pairs, q.get("check") == "true")


def _requested_keys(form: str, body: bytes) -> list[str]:
    """Protobuf ``Keys``, or for JSON and tar a JSON list of ids or of strings."""
    if form == "protobuf":
        return [item.key for item in kvformats.parse_keys_protobuf(body)]
    items = docjson.loads(body, "list of keys")
    if not isinstance(items, list):
        raise BadRequest("body must be a JSON list of keys")
    keys = []
    for item in items:
        if docjson.is_uint64(item):
            keys.append(str(item))
        elif isinstance(item, str):
            keys.append(item)
        else:
            raise BadRequest(f"bad key {item!r}: give body ids or strings")
    return keys


@router.get("/keyvalues")
def get_keyvalues(request: Request, body: RawBody, data: Data) -> Response:
    """Batch read; the request body names the keys. Missing documents are left out of
    JSON and empty in tar and protobuf answers, as in DVID."""
    q = request.query_params
    form = kvformats.output_form(q)
    keys = _requested_keys(form, body)
    selection = Selection.from_query(q)
    pairs = [(key, _document(data, key, selection)) for key in keys if key in META_KEYS]
    wanted = [key for key in keys if key not in META_KEYS]
    docs = data.get_docs([parse_bodyid(key) for key in wanted])
    found = {
        key: docjson.dumps(selection.apply(doc))
        for key, doc in zip(wanted, docs, strict=True)
        if doc is not None
    }
    meta = dict(pairs)
    ordered = [(key, found.get(key, meta.get(key))) for key in keys]
    if form == "json":
        return _encode(form, [(k, v) for k, v in ordered if v is not None], False)
    return _encode(form, [(k, v or b"") for k, v in ordered], False)


@router.post("/keyvalues")
def post_keyvalues(request: Request, body: RawBody, data: Data) -> Response:
    user, conditionals, replace = _write_options(request)
    items = kvformats.parse_keyvalues_protobuf(body)
    data.put_documents(items, user, conditionals, replace, "ingestneuronjson")
    return Response()


@router.get("/all")
def get_all(request: Request, data: Data) -> Response:
    """Every document (ascending body id; DVID's order is arbitrary). Documents showing
    nothing but ``bodyid`` are left out unless ``fields=bodyid``. Gzipped when the
    client accepts it, as DVID sends it."""
    selection = Selection.from_query(request.query_params)
    hits = data.doc_view().everything()
    if not selection.only_bodyid:
        hits = hits.filter_shown(selection)
    body = _json_list(hits.render(selection))
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(
            gzip.compress(body, compresslevel=1),
            media_type=JSON,
            headers={"Content-Encoding": "gzip"},
        )
    return Response(body, media_type=JSON)


# --- queries and field summaries --------------------------------------------------------------


@router.get("/query")
def get_query(request: Request, body: RawBody, data: Data) -> Response:
    """Documents matching a query (or any of a list of queries), by ascending body id."""
    return _query(request, body, data)


@router.post("/query")
def post_query(request: Request, body: RawBody, data: Data) -> Response:
    """As ``GET /query``: a read, allowed at locked nodes."""
    return _query(request, body, data)


def _query(request: Request, body: bytes, data: NeuronJSON) -> Response:
    queries = query.parse(body)
    q = request.query_params
    selection = Selection.from_query(q)
    view = data.doc_view()
    ids = query.only_bodyids(queries)
    if ids is not None:  # DVID answers these by id, in the order asked (onlyid ignored)
        hits = view.among(np.array(ids, np.uint64))
        found = dict(zip(hits.ids.tolist(), hits.render(selection), strict=True))
        return Response(_json_list([found[i] for i in ids if i in found]), media_type=JSON)
    hits = view.matching(queries)
    if q.get("onlyid") == "true":
        return Response(orjson.dumps(hits.ids.tolist()), media_type=JSON)
    return Response(_json_list(hits.render(selection)), media_type=JSON)


@router.get("/fields")
def get_fields(request: Request, data: Data) -> Response:
    counts = data.doc_view().field_counts()
    if request.query_params.get("counts") == "true":
        return Response(docjson.dumps(counts), media_type=JSON)
    return json_response(sorted(counts))


@router.get("/fieldtimes")
def get_fieldtimes(data: Data) -> Response:
    return Response(docjson.dumps(data.doc_view().field_times()), media_type=JSON)


# --- the stored schemas -----------------------------------------------------------------------


def _schema_routes(name: str) -> None:
    """GET (404 when unset), POST, DELETE and HEAD of one stored schema."""

    def get(data: Data) -> Response:
        value = data.schema(name)
        return Response(status_code=404) if value is None else Response(value, media_type=JSON)

    def head(data: Data) -> Response:
        return Response(status_code=404 if data.schema(name) is None else 200)

    def post(body: RawBody, data: Data) -> Response:
        data.put_schema(name, body)
        return Response()

    def delete(data: Data) -> Response:
        data.delete_schema(name)
        return Response()

    for method, handler in (("GET", get), ("HEAD", head), ("POST", post), ("DELETE", delete)):
        handler.__name__ = f"{method.lower()}_{name}"
        handler.__doc__ = f"{method} the stored {name}."
        router.add_api_route(f"/{name}", handler, methods=[method])


for _name in schema.NAMES:
    _schema_routes(_name)
