"""Documents at a version: one keyed record per body, plus per-version tables for queries.

Records (:mod:`app.storage.keyed`, key = decimal body id) keep single-key reads and writes
cheap and versioned. Whole-version reads (queries, ``all``, ``fields``) use a
:class:`~app.datatypes.neuronjson.table.DocTable` of every visible document instead, as
DVID keeps its in-memory map per version (memstore.go), but without holding every version:

* a **locked** version's table never changes: it is kept in a byte-bounded LRU per process,
  and persisted once as a snapshot object (``data/<DataUUID>/snapshot/<node>``) so a fresh
  process loads it with one read. Without a snapshot it is derived from the records (the
  parent's table plus the node's own records) and the snapshot written then;
* an **open** version is its parent's table minus the bodies it rewrote, plus a small
  table of its own records (one listing, then its records). That small table is reused
  only while the version's transaction sequence number (one small get) is unchanged, so
  a replica never serves another replica's writes stale.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import orjson

from app.cache import LRUCache
from app.dag import Node, VersionDAG
from app.datatypes.neuronjson.table import DocTable, DocView, from_bytes, to_bytes
from app.storage import parallel
from app.storage.journal import Journal
from app.storage.keyed import NodeIndex, VersionedKeys, decode_key, encode_key
from backends import ObjectStore, PreconditionFailed

#: Tables of locked versions, per process (a 200,000-body Clio table is about 30 MB).
TABLE_CACHE_BYTES = 1 << 30
#: Tables of open versions' own records, reused while their sequence number holds.
OPEN_CACHE_BYTES = 256 << 20


@dataclass(frozen=True)
class OpenLayer:
    """An open version's own documents, valid while its journal says ``seq``."""

    seq: int
    table: DocTable
    changed: np.ndarray  # uint64: ids the version wrote or deleted
    keep: np.ndarray | None  # rows of the parent's table still visible (None: no parent)

    @property
    def nbytes(self) -> int:
        return self.table.nbytes + int(self.changed.nbytes) + 64


_TABLES: LRUCache[DocTable] = LRUCache(TABLE_CACHE_BYTES, weigh=lambda t: t.nbytes)
_OPEN: LRUCache[OpenLayer] = LRUCache(OPEN_CACHE_BYTES, weigh=lambda layer: layer.nbytes)


def docs_of(node_uuid: str, keys: VersionedKeys, records: NodeIndex) -> dict[int, dict | None]:
    """The documents a node recorded, by body id (None: deleted at that node)."""
    hexkeys = sorted(records.records)
    values = keys.read_values(node_uuid, [k for k in hexkeys if not records.records[k]])
    found = iter(values)
    out: dict[int, dict | None] = {}
    for hexkey in hexkeys:
        value = None if records.records[hexkey] else next(found)
        out[int(decode_key(hexkey))] = orjson.loads(value) if isinstance(value, bytes) else None
    return out


def logged_bodies(
    entries: Iterable[tuple[int, list[dict]]], after: int, upto: int
) -> set[int] | None:
    """The body ids the transactions ``after+1 .. upto`` wrote, from their logged events;
    None if an entry is missing (then only a full re-read is safe)."""
    bodies: set[int] = set()
    expected = after + 1
    for seq, events in entries:
        if seq > upto:
            break
        if seq != expected:
            return None
        expected += 1
        for event in events:
            key = event.get("Key")
            if isinstance(key, str) and key.isascii() and key.isdigit():
                bodies.add(int(key))
    return bodies if expected == upto + 1 else None


class Documents:
    """The tables of one neuronjson instance."""

    def __init__(self, keys: VersionedKeys, store: ObjectStore, dag: VersionDAG, base: str):
        self.keys = keys
        self.store = store
        self.dag = dag
        self.base = base

    def snapshot_path(self, node: Node) -> str:
        return f"{self.base}/snapshot/{node.uuid}"

    def _cache_key(self, node: Node) -> str:
        return f"{self.base}/{node.uuid}"

    def _cached(self, node: Node) -> DocTable | None:
        """From memory, else from the node's snapshot."""
        table = _TABLES.get(self._cache_key(node))
        if table is None:
            blob = self.store.get(self.snapshot_path(node))
            if blob is not None:
                table = from_bytes(blob.data)
                _TABLES.put(self._cache_key(node), table)
        return table

    def table(self, node: Node) -> DocTable:
        """Every document visible at locked ``node``. Derived (and its snapshot written)
        down the chain of primary parents from the nearest node that has one."""
        chain: list[Node] = []
        at: Node | None = node
        base: DocTable | None = None
        while at is not None:
            base = self._cached(at)
            if base is not None:
                break
            chain.append(at)
            if len(at.parents) != 1:
                break
            at = self.dag.by_id[at.parents[0]]
        for step in reversed(chain):
            if len(step.parents) > 1:
                base = self._full(step, mutable=False)
            else:
                own = docs_of(step.uuid, self.keys, self.keys.index(step.uuid))
                base = (base or DocTable.empty()).overlaid(own)
            self._keep(step, base)
        assert base is not None
        return base

    def _keep(self, node: Node, table: DocTable) -> None:
        _TABLES.put(self._cache_key(node), table)
        # Another process may have derived the same snapshot first: theirs stands.
        with contextlib.suppress(PreconditionFailed):
            self.store.put(self.snapshot_path(node), to_bytes(table), if_absent=True)

    def _full(self, node: Node, mutable: bool) -> DocTable:
        """Every visible document through the keyed view (merged nodes: each key is
        resolved as a single-key read would, conflicts included)."""
        view = self.keys.at(self.dag, node, mutable)
        keys = view.keys_in_range()
        values = parallel.each(view.get, keys, overlap=view.overlap_calls)
        return DocTable.build(
            (int(k), orjson.loads(v)) for k, v in zip(keys, values, strict=True) if v is not None
        )

    def view(
        self, node: Node, mutable: bool, seq: int = 0, journal: Journal | None = None
    ) -> DocView:
        """What a whole-version read at ``node`` sees. For an open node, ``seq`` is its
        journal's sequence number, read before anything else: the node's own table is
        reused at that number, brought up to date from the log since the cached one, or
        (without ``journal``, or after a gap) read whole."""
        if not mutable:
            return DocView([(self.table(node), None)])
        if len(node.parents) > 1:
            return DocView([(self._full(node, mutable=True), None)])
        key = f"{self._cache_key(node)}/open"
        layer = _OPEN.get(key) if journal is not None else None
        parent = self.table(self.dag.by_id[node.parents[0]]) if node.parents else None
        if layer is not None and journal is not None and layer.seq != seq:
            layer = self._refresh(node, layer, seq, journal, parent)
        if layer is None or layer.seq != seq:
            own = docs_of(node.uuid, self.keys, self.keys.node_records(node.uuid))
            layer = self._layer(seq, DocTable.empty().overlaid(own), set(own), parent)
        if journal is not None:
            _OPEN.put(key, layer)
        layers: list[tuple[DocTable, np.ndarray | None]] = [(layer.table, None)]
        if parent is not None:
            layers.insert(0, (parent, layer.keep))
        return DocView(layers)

    @staticmethod
    def _layer(seq: int, table: DocTable, changed: set[int], parent: DocTable | None) -> OpenLayer:
        ids = np.array(sorted(changed), np.uint64)
        keep = None if parent is None else ~np.isin(parent.ids, ids)
        return OpenLayer(seq, table, ids, keep)

    def _refresh(
        self, node: Node, layer: OpenLayer, seq: int, journal: Journal, parent: DocTable | None
    ) -> OpenLayer | None:
        """``layer`` brought up to ``seq`` by re-reading only the bodies the logged
        transactions since its own sequence number wrote; None if the log has a gap."""
        if seq < layer.seq:
            return None
        bodies = logged_bodies(journal.entries(after=layer.seq), layer.seq, seq)
        if bodies is None:
            return None
        ordered = sorted(bodies)
        records = self.keys.read_values(node.uuid, [encode_key(str(b)) for b in ordered])
        changes: dict[int, dict | None] = {}
        changed = set(layer.changed.tolist())
        for bodyid, record in zip(ordered, records, strict=True):
            changes[bodyid] = orjson.loads(record) if isinstance(record, bytes) else None
            if record is None:  # no record at this node: the parent's document shows
                changed.discard(bodyid)
            else:
                changed.add(bodyid)
        return self._layer(seq, layer.table.overlaid(changes), changed, parent)
