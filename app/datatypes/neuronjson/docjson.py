"""Documents as JSON bytes exactly as DVID writes them.

DVID decodes a neuron annotation into a Go map and marshals it back with ``encoding/json``:
keys sorted, no spaces, ``<``, ``>``, ``&``, U+2028 and U+2029 escaped, and every integral
number printed without a fraction (``1.0`` comes back as ``1``). Clients compare answers
byte for byte, so every answer and every stored record goes through :func:`dumps`, and
values are normalised once, when a document is parsed, so that equal values are equal
bytes (which is how changed fields are told from unchanged ones).
"""

from __future__ import annotations

from typing import Any

import orjson

from app.errors import BadRequest

_GO_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)
#: Go prints floats from 1e21 up in exponent form; below that an integral float is an int.
_INTEGRAL_LIMIT = 1e21
MAX_UINT64 = 2**64 - 1


def dumps(value: Any) -> bytes:
    """``value`` as Go's ``json.Marshal`` of the decoded document writes it."""
    out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    for raw, escaped in _GO_ESCAPES:
        if raw in out:
            out = out.replace(raw, escaped)
    return out


def normalize(value: Any) -> Any:
    """Integral floats as ints, at any depth (Go marshals ``1.0`` as ``1``)."""
    if type(value) is float:
        if value.is_integer() and abs(value) < _INTEGRAL_LIMIT:
            return int(value)
        return value
    if type(value) is list:
        return [normalize(v) for v in value]
    if type(value) is dict:
        return {k: normalize(v) for k, v in value.items()}
    return value


def loads(data: bytes, what: str = "document") -> Any:
    """Parse JSON text; malformed text is a 400 naming ``what``."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"{what} is not valid JSON: {e}") from None


def is_uint64(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_UINT64


def same(a: Any, b: Any) -> bool:
    """Go's ``reflect.DeepEqual`` on decoded values: same type and contents (``1`` is
    not ``true``, as Python's ``==`` would have it)."""
    return type(a) is type(b) and dumps(a) == dumps(b)
