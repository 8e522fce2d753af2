"""How a POST changes a stored document, with per-field provenance (DVID's ``updateJSON``).

Every field ``f`` a user sets gets ``f_user`` (the ``u=`` user) and ``f_time`` (the
server's RFC 3339 time, to the second) unless the request sets them itself; a field
whose value does not change keeps its old provenance, so "who last changed the type of
this neuron" stays true however often clients re-post whole documents. The function is a
line-by-line port: its corner cases (a deleted field keeps a ``_user``/``_time`` pair,
``replace=true`` carries the old provenance of unchanged fields, ``conditional`` fields
keep their old value) are behaviour clients see.
"""

from __future__ import annotations

import datetime
from typing import Any

from app.datatypes.neuronjson.docjson import same
from app.datatypes.neuronjson.fields import TIME_SUFFIX, USER_SUFFIX, is_meta

#: Fields that never get provenance.
NO_PROVENANCE = frozenset({"bodyid", "user"})


def now_rfc3339() -> str:
    """Go's ``time.Now().Format(time.RFC3339)``, in UTC."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def update(
    orig: dict[str, Any] | None,
    new: dict[str, Any],
    user: str,
    conditionals: list[str],
    replace: bool,
    stamp: str | None = None,
) -> dict[str, Any]:
    """The document to store when ``new`` is posted over ``orig`` (None: no document)."""
    stamp = stamp or now_rfc3339()
    new = dict(new)
    orig = dict(orig) if orig is not None else None

    # Provenance the request sets explicitly (a non-string counts as unset, as in Go).
    field_user: dict[str, str] = {}
    field_time: dict[str, str] = {}
    for field, value in new.items():
        if field.endswith(USER_SUFFIX):
            field_user[field[: -len(USER_SUFFIX)]] = value if isinstance(value, str) else ""
        elif field.endswith(TIME_SUFFIX):
            field_time[field[: -len(TIME_SUFFIX)]] = value if isinstance(value, str) else ""

    # Fields set to null are deleted; a deleted field records who deleted it and when.
    deleted: set[str] = set()
    for field in [f for f, v in new.items() if v is None]:
        deleted.add(field)
        del new[field]
        if not is_meta(field):
            set_user = field_user.get(field, user)
            set_time = field_time.get(field, stamp)
            if set_user:
                new[field + USER_SUFFIX] = set_user
            if set_time:
                new[field + TIME_SUFFIX] = set_time
        if orig is not None:
            orig.pop(field, None)

    newly_set: set[str] = set()  # fields whose value is not what was stored
    new_fields: set[str] = set()  # fields that are not provenance
    if orig is None:
        for field in new:
            newly_set.add(field)
            if field.endswith(USER_SUFFIX):  # setting _user means _time is set too
                newly_set.add(field[: -len(USER_SUFFIX)])
    else:
        for field, value in new.items():
            if field not in orig or is_meta(field) or not same(value, orig[field]):
                newly_set.add(field)
            if not is_meta(field):
                new_fields.add(field)
        if not replace:  # carry forward what the request does not touch
            protected = set(conditionals)
            for field, old in orig.items():
                if field in deleted:
                    continue
                if field not in new:
                    new[field] = old
                elif field in protected:
                    new[field] = old
                    newly_set.discard(field)

    for field in newly_set:
        if field in NO_PROVENANCE or field in deleted or is_meta(field):
            continue
        if field + USER_SUFFIX not in newly_set and user:
            new[field + USER_SUFFIX] = user
        if field + TIME_SUFFIX not in newly_set:
            new[field + TIME_SUFFIX] = stamp
    if replace and orig is not None:  # unchanged fields keep their provenance
        for field in new_fields:
            if field == "bodyid" or field in deleted:
                continue
            if field + USER_SUFFIX not in new:
                new[field + USER_SUFFIX] = orig.get(field + USER_SUFFIX, user)
            if field + TIME_SUFFIX not in new:
                new[field + TIME_SUFFIX] = orig.get(field + TIME_SUFFIX, stamp)
    return new
