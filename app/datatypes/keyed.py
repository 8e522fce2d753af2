"""The shared base of datatypes whose data is records by key (copy-on-write per node)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

from app.dag import Node
from app.datatypes.base import Data
from app.diff import MergeSides, key_conflicts, key_diff
from app.errors import BadRequest
from app.storage.keyed import KeyView, VersionedKeys, decode_key


class KeyedData(Data):
    """An instance storing its data through :class:`VersionedKeys`."""

    def keys(self) -> VersionedKeys:
        return VersionedKeys(
            self.store, self.root, self.services.index_cache, self.services.value_cache
        )

    def view(self) -> KeyView:
        """What a read at the bound version sees."""
        return self.at.view(self.keys())

    def own_record_ahead(self, key: str) -> list[str]:
        """What a read of ``key`` at the bound version reads first (for
        :meth:`~app.datatypes.base.Data.read_ahead`): at an open version, the node's own
        record (:meth:`KeyView.get`); nothing at a locked one, whose records are cached."""
        if not self.mutable:
            return []
        try:
            return [self.keys().record_path(self.version.uuid, key)]
        except BadRequest:  # no such key can be stored: the route answers 400 itself
            return []

    def write(self, key: str, value: bytes) -> None:
        self.keys().write(self.version.uuid, key, value)

    def write_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        self.keys().write_many(self.version.uuid, items)

    def delete(self, key: str) -> None:
        self.keys().delete(self.version.uuid, key)

    def seal(self) -> None:
        self.keys().seal(self.node.uuid)

    def conflicts(self, parents: list[Node]) -> dict[str, list[str]]:
        keys = self.keys()
        views = [keys.at(self.dag, parent, mutable=False) for parent in parents]
        candidates: set[str] = set().union(*(view.candidate_keys() for view in views))
        doomed: dict[str, list[str]] = {}
        for hexkey in sorted(candidates):
            first = None
            for parent, view in zip(parents, views, strict=True):
                version = view.visible_version(hexkey)
                if version is None:
                    continue
                if first is None:
                    first = version
                elif version != first:
                    doomed.setdefault(parent.uuid, []).append(decode_key(hexkey))
        return doomed

    def diff(self, other: Self) -> dict[str, Any] | None:
        """Keys added, changed (by bytes) and deleted from this version to ``other``'s."""
        changes = key_diff(self.keys(), self.view(), other.view())
        return {"keys": changes.to_json()} if changes else None

    def merge_conflicts(self, merge: MergeSides) -> dict[str, Any] | None:
        """Keys changed on two or more sides to different bytes."""
        found = key_conflicts(self.keys(), self.dag, merge)
        return {"keys": found} if found else None

    def tombstone(self, keys: list[str]) -> None:
        for key in keys:
            self.delete(key)
