"""Keyed data, copy-on-write per version node, shared by every datatype that stores
records by key (keyvalue values; later label indices and annotation blocks).

Layout under an instance's ``base`` prefix (see docs/format.md):

``<base>/v/<node uuid>/<hex key>``
    the record a node wrote for a key: ``0x01`` followed by the value, or an empty object
    for a tombstone (a delete at that node).
``<base>/index/<node uuid>``
    written when the node is committed: the node's keys and which are tombstones. Locked
    nodes never change, so their index is loaded once per process and kept in memory.

A read at node N therefore costs the same at any DAG depth: every ancestor of N is locked
(only leaves can be open), so which ancestor holds the nearest record is decided from
in-memory indices, and the store is touched once for N itself (if open) and once for the
winning record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from app.cache import LRUCache
from app.dag import Node, VersionDAG
from app.errors import BadRequest, Conflict
from app.storage import parallel, readahead
from backends import ObjectStore, PreconditionFailed

VALUE_TAG = b"\x01"


class Tombstone:
    """The type of :data:`TOMBSTONE`: a deleted record, distinct from an empty value."""


TOMBSTONE = Tombstone()
MAX_KEY_BYTES = 480  # hex doubles it; object stores cap keys at 1024 bytes


def encode_key(key: str) -> str:
    """Hex of the UTF-8 bytes: safe in any store, and it sorts as the raw bytes do."""
    raw = key.encode("utf-8", "surrogateescape")
    if not raw:
        raise BadRequest("key must not be empty")
    if len(raw) > MAX_KEY_BYTES:
        raise BadRequest(f"key is {len(raw)} bytes long; at most {MAX_KEY_BYTES} are allowed")
    return raw.hex()


def decode_key(hexkey: str) -> str:
    return bytes.fromhex(hexkey).decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class NodeIndex:
    """The keys one node wrote: hex key -> whether the record is a tombstone."""

    records: dict[str, bool]

    def to_bytes(self) -> bytes:
        keys = sorted(self.records)
        return orjson.dumps({"keys": keys, "tombstones": [k for k in keys if self.records[k]]})

    @classmethod
    def from_bytes(cls, data: bytes) -> NodeIndex:
        parsed = orjson.loads(data)
        tombstones = set(parsed["tombstones"])
        return cls({k: k in tombstones for k in parsed["keys"]})


class VersionedKeys:
    """One instance's keyed records in one store."""

    def __init__(
        self,
        store: ObjectStore,
        base: str,
        indices: LRUCache[NodeIndex],
        values: LRUCache[bytes],
    ) -> None:
        self.store = store
        self.base = base
        self.indices = indices
        self.values = values

    def _record_path(self, node_uuid: str, hexkey: str) -> str:
        return f"{self.base}/v/{node_uuid}/{hexkey}"

    def record_path(self, node_uuid: str, key: str) -> str:
        """Where a node keeps its record of ``key`` (400 for a key no record can have)."""
        return self._record_path(node_uuid, encode_key(key))

    def _index_path(self, node_uuid: str) -> str:
        return f"{self.base}/index/{node_uuid}"

    # --- per-node records ----------------------------------------------------------------

    def _scan(self, node_uuid: str) -> NodeIndex:
        """Every record a node holds, straight from a store listing (one call)."""
        prefix = f"{self.base}/v/{node_uuid}/"
        return NodeIndex(
            {info.key[len(prefix) :]: info.size == 0 for info in self.store.list(prefix)}
        )

    def node_records(self, node_uuid: str) -> NodeIndex:
        """Every record a node holds now (one listing; for an open node, nothing cached)."""
        return self._scan(node_uuid)

    def read_values(self, node_uuid: str, hexkeys: list[str]) -> list[bytes | Tombstone | None]:
        """The records a node holds for ``hexkeys``: a value, TOMBSTONE, or None where it
        holds none; fetched overlapped and not cached (bulk reads would flush the cache)."""

        def read(hexkey: str) -> bytes | Tombstone | None:
            blob = self.store.get(self._record_path(node_uuid, hexkey))
            if blob is None:
                return None
            return blob.data[1:] if blob.data else TOMBSTONE

        return parallel.each(read, hexkeys, overlap=self.store.overlap_calls)

    def index(self, node_uuid: str) -> NodeIndex:
        """The index of a locked node: memory, else its stored index, else built once from
        a listing (a commit interrupted before writing it) and stored."""
        path = self._index_path(node_uuid)
        cached = self.indices.get(path)
        if cached is not None:
            return cached
        blob = self.store.get(path)
        if blob is not None:
            index = NodeIndex.from_bytes(blob.data)
        else:
            index = self._scan(node_uuid)
            try:
                self.store.put(path, index.to_bytes(), if_absent=True)
            except PreconditionFailed:  # a concurrent reader stored it first
                stored = self.store.get(path)
                if stored is not None:
                    index = NodeIndex.from_bytes(stored.data)
        self.indices.put(path, index)
        return index

    def locked_value(self, node_uuid: str, hexkey: str) -> bytes | None:
        """A value recorded at a locked node: it never changes, so it is cached."""
        path = self._record_path(node_uuid, hexkey)
        value = self.values.get(path)
        if value is None:
            blob = self.store.get(path)
            if blob is None or not blob.data:
                return None
            value = blob.data[1:]
            self.values.put(path, value)
        return value

    def seal(self, node_uuid: str) -> None:
        """Called when a node is committed: persist its index for every later reader."""
        self.index(node_uuid)

    def write(self, node_uuid: str, key: str, value: bytes) -> None:
        self.store.put(self._record_path(node_uuid, encode_key(key)), VALUE_TAG + value)

    def write_many(self, node_uuid: str, items: Iterable[tuple[str, bytes]]) -> None:
        encoded = [(encode_key(k), v) for k, v in items]  # validate all before writing any
        for hexkey, value in encoded:
            self.store.put(self._record_path(node_uuid, hexkey), VALUE_TAG + value)

    def delete(self, node_uuid: str, key: str) -> None:
        self.store.put(self._record_path(node_uuid, encode_key(key)), b"")

    def drop(self) -> int:
        """Remove everything the instance stored."""
        return self.store.delete_prefix(f"{self.base}/")

    def at(self, dag: VersionDAG, node: Node, mutable: bool) -> KeyView:
        return KeyView(self, dag, node, mutable)


class KeyView:
    """What a read at one node sees (README §2.2 of the spec: nearest record wins,
    tombstones hide, differing records along different merge parents conflict)."""

    def __init__(self, keys: VersionedKeys, dag: VersionDAG, node: Node, mutable: bool) -> None:
        self.keys = keys
        self.dag = dag
        self.node = node
        self.mutable = mutable
        self._own: NodeIndex | None = None

    @property
    def overlap_calls(self) -> bool:
        """Whether reads of many keys go out overlapped (:func:`parallel.each`)."""
        return self.keys.store.overlap_calls

    def records_of(self, version_id: int) -> NodeIndex:
        """The records ``version_id`` wrote (this node's own, if open, from a listing)."""
        return self._records_of(version_id)

    def holders(self, hexkey: str) -> list[int]:
        """The versions holding the values a read of ``hexkey`` here sees: none (absent
        or deleted), one (the answer) or several (a merge conflict). Tombstones shadow
        only what they descend from (:meth:`_read_winner`)."""
        winners = self._winners(hexkey, [self.node.version_id])
        return [v for v in winners if not self._records_of(v).records[hexkey]]

    def _records_of(self, version_id: int) -> NodeIndex:
        node = self.dag.by_id[version_id]
        if node is self.node and self.mutable:
            if self._own is None:
                self._own = self.keys._scan(node.uuid)
            return self._own
        return self.keys.index(node.uuid)

    def _winners(self, hexkey: str, starts: list[int]) -> list[int]:
        return self.dag.nearest_records(starts, lambda v: hexkey in self._records_of(v).records)

    def _read_winner(self, hexkey: str, winners: list[int]) -> bytes | None:
        """The value of the one unshadowed record holding a value.

        Tombstones only shadow what they descend from: beside a value on another merge
        path they yield to it (that is how ``resolve`` settles a conflict). Values from
        two different versions conflict even if equal, as in DVID.
        """
        holders = [v for v in winners if not self._records_of(v).records[hexkey]]
        if len(holders) > 1:
            raise Conflict(
                f"key {decode_key(hexkey)!r} has conflicting values from the parents of "
                f"merged node {self.node.uuid}: write it at that node or resolve the merge"
            )
        if not holders:
            return None
        return self.keys.locked_value(self.dag.by_id[holders[0]].uuid, hexkey)

    def get(self, key: str) -> bytes | None:
        """The visible value, or None if absent or deleted; Conflict if merge parents
        hold different values."""
        hexkey = encode_key(key)
        own = self._own_record(hexkey)
        if own is not None:
            return None if isinstance(own, Tombstone) else own
        return self._read_winner(hexkey, self._ancestor_winners(hexkey))

    def values(self, key: str) -> list[bytes]:
        """Every value a read of ``key`` could see: one normally, several where merge
        parents disagree (for data that merges them, such as extents)."""
        hexkey = encode_key(key)
        own = self._own_record(hexkey)
        if own is not None:
            return [] if isinstance(own, Tombstone) else [own]
        winners = self._ancestor_winners(hexkey)
        holders = [v for v in winners if not self._records_of(v).records[hexkey]]
        found = (self.keys.locked_value(self.dag.by_id[v].uuid, hexkey) for v in holders)
        return [value for value in found if value is not None]

    def _own_record(self, hexkey: str) -> bytes | Tombstone | None:
        """At an open node, its own record probed directly: the value, TOMBSTONE, or
        None if the node holds none."""
        if not self.mutable:
            return None
        # The read the dispatcher may have started for this request (Data.read_ahead).
        blob = readahead.get(self.keys.store, self.keys._record_path(self.node.uuid, hexkey))
        if blob is None:
            return None
        return blob.data[1:] if blob.data else TOMBSTONE

    def _ancestor_winners(self, hexkey: str) -> list[int]:
        starts = self.node.parents if self.mutable else [self.node.version_id]
        return self._winners(hexkey, starts)

    def visible_version(self, hexkey: str) -> int | None:
        """The version whose value a read sees (the first, if several disagree), or None
        if the nearest records are tombstones or there are none."""
        for version in self._winners(hexkey, [self.node.version_id]):
            if not self._records_of(version).records[hexkey]:
                return version
        return None

    def candidate_keys(self) -> set[str]:
        found: set[str] = set()
        for version in self.dag.ancestors(self.node.version_id):
            found.update(self._records_of(version).records)
        return found

    def keys_in_range(self, lo: str | None = None, hi: str | None = None) -> list[str]:
        """Visible keys with ``lo <= key <= hi`` (byte order), sorted."""
        lo_hex = encode_key(lo) if lo else None
        hi_hex = encode_key(hi) if hi else None
        visible = []
        for hexkey in sorted(self.candidate_keys()):
            if (lo_hex and hexkey < lo_hex) or (hi_hex and hexkey > hi_hex):
                continue
            winners = self._winners(hexkey, [self.node.version_id])
            records = {self._records_of(v).records[hexkey] for v in winners}
            if records != {True}:  # some winner holds a value (conflicts still list)
                visible.append(decode_key(hexkey))
        return visible
