"""The batch wire formats of keyed datatypes (keyvalue, neuronjson): DVID's protobuf
``Keys``/``KeyValues`` messages, JSON objects and tar files. They live here, outside any
datatype package, because several datatypes answer with the same bytes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson
from google.protobuf.message import DecodeError

from app.api.common import flag
from app.datatypes import tars
from app.errors import BadRequest
from app.proto import keyvalue_pb2 as pb


def output_form(query: Mapping[str, str]) -> str:
    """``json``, ``tar`` or ``protobuf`` (the default), from DVID's ``json=``, ``tar=`` and
    ``jsontar=`` switches; asking for both JSON and tar is a 400."""
    as_json = flag(query.get("json"))
    as_tar = flag(query.get("tar")) or flag(query.get("jsontar"))
    if as_json and as_tar:
        raise BadRequest("choose one of json=true and tar=true")
    return "json" if as_json else "tar" if as_tar else "protobuf"


@dataclass(frozen=True)
class KeyRequest:
    """One item of a batch read: a key, optionally with an inclusive byte range."""

    key: str
    byte_start: int | None = None
    byte_end: int | None = None


def parse_keys_protobuf(body: bytes) -> list[KeyRequest]:
    """``Keys``: plain keys first, then ranged keys, as DVID answers them."""
    message = pb.Keys()
    try:
        message.ParseFromString(body)
    except DecodeError as e:
        raise BadRequest(f"body is not a protobuf Keys message: {e}") from None
    return [KeyRequest(k) for k in message.keys] + [
        KeyRequest(r.key, r.byte_start, r.byte_end) for r in message.key_ranges
    ]


def parse_keys_json(body: bytes) -> list[KeyRequest]:
    """A JSON list of keys, or of ``{"key", "byte_start", "byte_end"}`` objects."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"body is not a JSON list of keys: {e}") from None
    if not isinstance(items, list):
        raise BadRequest("body must be a JSON list of keys")
    requests = []
    for item in items:
        if isinstance(item, str):
            requests.append(KeyRequest(item))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise BadRequest(f"bad key request {item!r}: give a string or an object with 'key'")
        start, end = item.get("byte_start"), item.get("byte_end")
        if (start is None) != (end is None):
            raise BadRequest(f"key {item['key']!r}: give both byte_start and byte_end")
        if start is not None and not (_is_int(start) and _is_int(end)):
            raise BadRequest(f"key {item['key']!r}: byte_start and byte_end must be integers")
        requests.append(KeyRequest(item["key"], start, end))
    return requests


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_keyvalues_protobuf(body: bytes) -> list[tuple[str, bytes]]:
    message = pb.KeyValues()
    try:
        message.ParseFromString(body)
    except DecodeError as e:
        raise BadRequest(f"body is not a protobuf KeyValues message: {e}") from None
    return [(kv.key, kv.value) for kv in message.kvs]


def slice_value(key: str, value: bytes, start: int, end: int) -> bytes:
    """Inclusive ``[start, end]``; both must lie inside the value (DVID's rule)."""
    if not 0 <= start <= end < len(value):
        raise BadRequest(
            f"byte range {start}-{end} of key {key!r} is outside its {len(value)} bytes"
        )
    return value[start : end + 1]


def encode_protobuf(pairs: Iterable[tuple[str, bytes]]) -> bytes:
    message = pb.KeyValues()
    for key, value in pairs:
        message.kvs.add(key=key, value=value)
    return message.SerializeToString()


def encode_json(pairs: Iterable[tuple[str, bytes]], check: bool) -> bytes:
    """``{"key": <value as JSON text>}``; an empty value is written ``{}``."""
    parts = []
    for key, value in pairs:
        if check and value:
            try:
                orjson.loads(value)
            except orjson.JSONDecodeError:
                raise BadRequest(f"value of key {key!r} is not valid JSON") from None
        parts.append(orjson.dumps(key) + b":" + (value or b"{}"))
    return b"{" + b",".join(parts) + b"}"


def encode_tar(pairs: Iterable[tuple[str, bytes]]) -> bytes:
    """One regular file per key, named by the key, mode 0755 (as Go's writer lays them)."""
    return b"".join(tars.entry(key, value) for key, value in pairs) + tars.END
