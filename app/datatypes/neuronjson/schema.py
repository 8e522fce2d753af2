"""The three auxiliary JSON blobs of an instance: ``json_schema`` (validates every posted
document), ``schema`` and ``schema_batch`` (opaque neu3/NeuTu UI configurations).

They are versioned like the documents (DVID stores them under the version's context),
as keyed records of their own (``data/<DataUUID>/schemas/...``), so a branch can change
its schema without touching its parent's.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema
import orjson
from jsonschema.exceptions import SchemaError, ValidationError

from app.datatypes.neuronjson.docjson import loads
from app.errors import BadRequest

JSON_SCHEMA = "json_schema"
NAMES = (JSON_SCHEMA, "schema", "schema_batch")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+\Z")
#: Conversions of string fields to integers one validation may make (one per field).
_MAX_CONVERSIONS = 64


def check_schema(data: bytes) -> None:
    """Refuse (400) a ``json_schema`` that could not validate anything."""
    _validator(data)


@functools.lru_cache(maxsize=32)
def _validator(data: bytes) -> Any:
    schema = loads(data, "json_schema")
    if not isinstance(schema, (dict, bool)):
        raise BadRequest("json_schema must be a JSON object")
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as e:
        raise BadRequest(f"json_schema is not a valid JSON Schema: {e.message}") from None
    return cls(schema)


def validate(schema: bytes, body: bytes) -> bytes:
    """``body`` checked against ``schema``; as DVID does, a top-level field the schema
    wants as an integer but that holds a decimal string is converted, and the (then
    re-encoded) body returned. 400 with the first violation otherwise."""
    validator = _validator(schema)
    doc = loads(body, "neuronjson document")
    converted = False
    for _ in range(_MAX_CONVERSIONS):
        error: ValidationError | None = next(iter(validator.iter_errors(doc)), None)
        if error is None:
            return orjson.dumps(doc) if converted else body
        field = _convertible(error, doc)
        if field is None:
            where = "/".join(str(p) for p in error.absolute_path) or "(document)"
            raise BadRequest(f"document fails the stored json_schema at {where}: {error.message}")
        doc[field] = int(doc[field])
        converted = True
    raise BadRequest("document fails the stored json_schema")


def _convertible(error: ValidationError, doc: Any) -> str | None:
    """The top-level field an integer-for-string error names, if its text is an integer."""
    wanted = error.validator_value
    wants_int = wanted == "integer" or (isinstance(wanted, list) and "integer" in wanted)
    path = list(error.absolute_path)
    if error.validator != "type" or not wants_int or len(path) != 1 or not isinstance(doc, dict):
        return None
    field = path[0]
    value = doc.get(field)
    if isinstance(field, str) and isinstance(value, str) and _INTEGER_TEXT.match(value):
        return field
    return None
