"""How labelmap's objects shared by every version merge when a version is pushed or pulled
into another store (:mod:`app.transfer`): its label counters are only ever raised, so an
id handed out on either side is never handed out again after the transfer."""

from __future__ import annotations

import uuid

import orjson


def _counter(data: bytes) -> int:
    """``maxrepolabel``: ``<value> <nonce>`` or a plain decimal."""
    return int(data.split()[0]) if data.split() else 0


def merge_shared(rel: str, current: bytes | None, incoming: bytes) -> bytes | None:
    """``rel`` is the key under the instance's root; None keeps the current object."""
    if current is None:
        return incoming
    if rel == "maxrepolabel":
        value = max(_counter(current), _counter(incoming))
        return None if value == _counter(current) else f"{value} {uuid.uuid4().hex}".encode()
    if rel == "nextlabel":
        ours, theirs = orjson.loads(current), orjson.loads(incoming)
        nxt = max(int(ours.get("next", 0)), int(theirs.get("next", 0)))
        if nxt == int(ours.get("next", 0)):
            return None
        return orjson.dumps({**ours, "next": nxt, "nonce": uuid.uuid4().hex})
    return None  # blobstore/<sha256>: named by content, equal when present
