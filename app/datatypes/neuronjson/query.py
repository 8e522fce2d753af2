"""DVID's neuronjson query language, matched one value at a time.

A query is a JSON object ``{field: wanted}``; a document matches when every field
matches (AND), and a list of queries matches when any does (OR). ``wanted`` is a number
or string (equality; a list-valued field matches if any element does), a list (any of
its values), ``"re/<regex>"`` (an unanchored search in string fields, as Go's
``Regexp.Match``), or ``"exists/0"``/``"exists/1"``. The typing quirks of DVID's
``checkField`` are kept: a query float matches only inside a list, and only a field's
non-integral floats; fields holding booleans, objects or mixed lists never match.

Matching is written for one (wanted, field value) pair; :mod:`~app.datatypes.neuronjson.table`
applies it to each *distinct* value of a column and spreads the answer over the rows,
which is what makes a query over 10^5 documents cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.datatypes.neuronjson.docjson import loads
from app.errors import BadRequest

_INT64 = 2**63


@dataclass(frozen=True)
class Exists:
    """``"exists/1"`` (present and not null) or ``"exists/0"`` (absent or null)."""

    present: bool


Query = dict[str, Any]


def _wrap(v: int) -> int:
    """Go's ``int64(uint64)``: DVID compares integers as int64."""
    return v - 2**64 if v >= _INT64 else v


def _is_int(v: Any) -> bool:
    return type(v) is int


def _query_value(value: Any) -> Any:
    """One query value as DVID's ``QueryJSON.UnmarshalJSON`` types it."""
    if isinstance(value, str):
        if len(value) > 3 and value.startswith("re/"):
            try:
                return re.compile(value[3:])
            except re.error:
                return value  # DVID: a bad regex is a plain string
        if len(value) == 8 and value.startswith("exists/"):
            return Exists(value[7] != "0")
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and value:
        return [_query_value(v) if v.startswith("re/") and len(v) > 3 else v for v in value]
    return value


def parse(body: bytes) -> list[Query]:
    """A query object or a list of them; 400 if neither, or if the list is empty."""
    parsed = loads(body, "query")
    items = parsed if isinstance(parsed, list) else [parsed]
    if not all(isinstance(q, dict) for q in items):
        raise BadRequest("a query must be a JSON object or a list of JSON objects")
    if not items:
        raise BadRequest("no query provided")
    return [{k: _query_value(v) for k, v in q.items()} for q in items]


def only_bodyids(queries: list[Query]) -> list[int] | None:
    """DVID's ``queryJustBodyIDs``: when every query names only ``bodyid`` (by integers),
    the ids in order (duplicates kept), else None."""
    ids: list[int] = []
    for q in queries:
        for field, wanted in q.items():
            if field != "bodyid":
                return None
            if _is_int(wanted):
                ids.append(wanted % 2**64)
            elif isinstance(wanted, list) and all(_is_int(v) for v in wanted):
                ids.extend(v % 2**64 for v in wanted)
            else:
                return None
    return ids


def _field_lists(value: Any) -> tuple[list[int], list[float], list[str]] | None:
    """A field value as DVID's ``checkField`` sees it: integers, floats, strings; None
    for values that never match."""
    if _is_int(value):
        return [_wrap(value)], [], []
    if isinstance(value, str):
        return [], [], [value]
    if type(value) is float:
        return [], [value], []
    if isinstance(value, list) and value:
        if all(_is_int(v) for v in value):
            return [_wrap(v) for v in value], [], []
        if all(isinstance(v, str) for v in value):
            return [], [], value
    if isinstance(value, list) and not value:
        return [], [], []
    return None


def field_matches(wanted: Any, value: Any) -> bool:
    """Whether a (present, non-null) field value matches one query value."""
    if wanted is None or value is None:
        return False
    lists = _field_lists(value)
    if lists is None:
        return False
    ints, floats, strs = lists
    if _is_int(wanted):
        return _wrap(wanted) in ints
    if isinstance(wanted, str):
        return wanted in strs
    if isinstance(wanted, re.Pattern):
        return any(wanted.search(s) for s in strs)
    if isinstance(wanted, list) and wanted:
        first = wanted[0]
        if _is_int(first) and all(_is_int(v) for v in wanted):
            return any(_wrap(v) in ints for v in wanted)
        if type(first) is float or _is_int(first):  # a generic list: Go's float64 case
            return any(type(v) is float and v in floats for v in _as_floats(wanted))
        if isinstance(first, (str, re.Pattern)):
            return any(field_matches(v, value) for v in wanted if isinstance(v, (str, re.Pattern)))
    return False


def _as_floats(values: list[Any]) -> list[Any]:
    """A mixed JSON list as Go decodes it into ``[]interface{}``: numbers are float64."""
    return [float(v) if _is_int(v) else v for v in values]


def doc_matches(queries: list[Query], doc: dict[str, Any]) -> bool:
    """DVID's ``queryMatch``: any query whose every field matches."""
    for q in queries:
        for field, wanted in q.items():
            value = doc.get(field)
            if isinstance(wanted, Exists):
                if wanted.present != (value is not None):
                    break
            elif value is None or not field_matches(wanted, value):
                break
        else:
            return True
    return False
