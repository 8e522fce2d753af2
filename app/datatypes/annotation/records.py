"""The records an edit reads and rewrites, held in memory until the edit is done.

An edit (a POST, a move, one batch of synced label events) touches a few blocks, labels
and tags. :class:`Records` loads each record once (in parallel, where the keys are known
up front), lets the edit change it in place, and writes back only what changed, at the
end: a list that became empty is deleted (a tombstone at the version), so it stops being
listed. Everything is written inside the instance's transaction, so it publishes whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import orjson

from app.datatypes.annotation.elements import Element, Pos, pos
from app.storage import parallel
from app.storage.keyed import KeyView

#: A block or label list: position -> (element, supervoxel it lies on).
Placed = dict[Pos, tuple[Element, int]]
#: A tag list: position -> element.
Tagged = dict[Pos, Element]

R = TypeVar("R", Placed, Tagged)


def decode_placed(data: bytes) -> Placed:
    record = orjson.loads(data)
    return {pos(e): (e, sv) for e, sv in zip(record["e"], record["sv"], strict=True)}


def encode_placed(items: Placed) -> bytes:
    """``{"sv": [...], "e": [...]}``, supervoxels first: they are integers, so the first
    ``],"e":`` ends them and the element array can be served without parsing."""
    values = list(items.values())
    return orjson.dumps({"sv": [sv for _, sv in values], "e": [e for e, _ in values]})


def placed_elements(data: bytes) -> bytes:
    """The JSON array of elements in a block or label record, as stored."""
    return data[data.index(SPLIT) + len(SPLIT) - 1 : -1]


SPLIT = b'],"e":['


def decode_tagged(data: bytes) -> Tagged:
    return {pos(e): e for e in orjson.loads(data)}


def encode_tagged(items: Tagged) -> bytes:
    return orjson.dumps(list(items.values()))


class Records(Generic[R]):
    """Records of one kind (blocks, labels or tags) by key, loaded lazily."""

    def __init__(
        self,
        view: KeyView,
        decode: Callable[[bytes], R],
        encode: Callable[[R], bytes],
        empty: Callable[[], R],
    ) -> None:
        self.view = view
        self.decode: Callable[[bytes], R] = decode
        self.encode: Callable[[R], bytes] = encode
        self.empty: Callable[[], R] = empty
        self.loaded: dict[str, R] = {}
        self.dirty: set[str] = set()

    def prefetch(self, keys: Iterable[str]) -> None:
        """Load many records at once (the store is read in parallel)."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self.loaded]
        for key, data in zip(
            wanted,
            parallel.each(self.view.get, wanted, overlap=self.view.overlap_calls),
            strict=True,
        ):
            self.loaded[key] = self.decode(data) if data else self.empty()

    def __getitem__(self, key: str) -> R:
        """The record, for reading."""
        if key not in self.loaded:
            self.prefetch([key])
        return self.loaded[key]

    def edit(self, key: str) -> R:
        """The record, to be changed in place and written back by :meth:`flush`."""
        self.dirty.add(key)
        return self[key]

    def flush(self, write: Callable[[str, bytes], None], delete: Callable[[str], None]) -> None:
        for key in sorted(self.dirty):
            items = self.loaded[key]
            if items:
                write(key, self.encode(items))
            elif self.view.get(key) is not None:
                delete(key)
        self.dirty.clear()


def placed_records(view: KeyView) -> Records[Placed]:
    return Records(view, decode_placed, encode_placed, dict)


def tagged_records(view: KeyView) -> Records[Tagged]:
    return Records(view, decode_tagged, encode_tagged, dict)
