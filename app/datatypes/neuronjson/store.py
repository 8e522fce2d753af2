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
from dataclasses import dataclass

import numpy as np
import orjson

from app.cache import LRUCache
from app.dag import Node, VersionDAG
from app.datatypes.neuronjson.table import DocTable, DocView, from_bytes, to_bytes
from app.storage import parallel
from app.storage.keyed import NodeIndex, VersionedKeys, decode_key
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
        out[int(decode_key(hexkey))] = orjson.loads(value) if value is not None else None
    return out


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
        values = parallel.each(view.get, keys)
        return DocTable.build(
            (int(k), orjson.loads(v)) for k, v in zip(keys, values, strict=True) if v is not None
        )

    def view(self, node: Node, mutable: bool, seq: int | None = None) -> DocView:
        """What a whole-version read at ``node`` sees; ``seq`` is the open node's
        transaction sequence number (read before its records are listed)."""
        if not mutable:
            return DocView([(self.table(node), None)])
        if len(node.parents) > 1:
            return DocView([(self._full(node, mutable=True), None)])
        key = f"{self._cache_key(node)}/open"
        layer = _OPEN.get(key)
        if layer is None or seq is None or layer.seq != seq:
            own = docs_of(node.uuid, self.keys, self.keys.node_records(node.uuid))
            table = DocTable.build((k, v) for k, v in own.items() if v is not None)
            changed = np.array(sorted(own), np.uint64)
            keep = None
            if node.parents:
                parent = self.table(self.dag.by_id[node.parents[0]])
                keep = ~np.isin(parent.ids, changed)
            layer = OpenLayer(seq if seq is not None else -1, table, changed, keep)
            if seq is not None:
                _OPEN.put(key, layer)
        layers: list[tuple[DocTable, np.ndarray | None]] = [(layer.table, None)]
        if node.parents:
            layers.insert(0, (self.table(self.dag.by_id[node.parents[0]]), layer.keep))
        return DocView(layers)
