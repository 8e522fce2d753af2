"""Small request helpers shared by every router."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.responses import Response

from app.errors import BadRequest
from app.services import Services

_TRUE = frozenset({"true", "1", "on", "yes"})


def flag(value: str | None) -> bool:
    """A query-string switch as DVID reads them: ``true``/``1``/``on`` (any case)."""
    return value is not None and value.lower() in _TRUE


async def services(request: Request) -> Services:
    """The app's services; a coroutine, so FastAPI calls it without a thread hop."""
    return request.app.state.services


async def raw_body(request: Request) -> bytes:
    """The request body, also for GET (DVID clients send bodies with GET)."""
    return await request.body()


async def json_body(request: Request) -> Any:
    """The body parsed as JSON; an empty body is ``None``."""
    return parse_json(await request.body())


def parse_json(data: bytes) -> Any:
    if not data.strip():
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"malformed JSON request in body: {e}") from None


def json_list(body: bytes, what: str, hash_: str | None = None) -> list:
    """A request body that must be a JSON list of ``what``. With ``hash_`` (the ``hash=``
    query of DVID's batch reads) the body must also have that MD5, hex: a client's check
    that its body arrived whole."""
    if hash_ is not None and hashlib.md5(body).hexdigest() != hash_.lower():
        raise BadRequest("body does not match the given hash")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"body must be a JSON list of {what}: {e}") from None
    if not isinstance(value, list):
        raise BadRequest(f"body must be a JSON list of {what}")
    return value


def json_object(value: Any, what: str = "request body") -> dict:
    """``None`` (no body) as ``{}``; anything but a JSON object is a 400."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def string_field(body: dict, name: str, default: str = "") -> str:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadRequest(f"{name!r} must be a string")
    return value


def string_list(body: dict, name: str) -> list[str]:
    value = body.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{name!r} must be a list of strings")
    return value


def json_response(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


Svc = Annotated[Services, Depends(services)]
JsonBody = Annotated[Any, Depends(json_body)]
RawBody = Annotated[bytes, Depends(raw_body)]
