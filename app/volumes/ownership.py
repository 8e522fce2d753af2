"""Which chunks each version node wrote: one roaring bitmap of chunk ids per node.

While a node is open its bitmap is an object updated by compare-and-swap after the chunks
themselves are written (so a chunk is never visible before its data); once the node is
locked the bitmap never changes and is kept in memory. Resolving which node holds a chunk
for a read at node N walks N's ancestry in memory, intersecting bitmaps: the store is
never probed ancestor by ancestor.
"""

from __future__ import annotations

import numpy as np
from pyroaring import BitMap64

from app.cache import LRUCache
from app.dag import Node, VersionDAG
from app.errors import BadRequest, Conflict
from backends import ObjectStore, PreconditionFailed

MAX_CAS_ATTEMPTS = 64


class ChunkOwnership:
    """Per-node written-chunk bitmaps of one chunk array (an instance at one scale)."""

    def __init__(self, store: ObjectStore, base: str, cache: LRUCache[BitMap64]) -> None:
        self.store = store
        self.base = base
        self.cache = cache

    def _path(self, node_uuid: str) -> str:
        return f"{self.base}/owned/{node_uuid}.roaring"

    def written(self, node: Node, mutable: bool) -> BitMap64:
        """The chunks ``node`` wrote; cached once the node can no longer change."""
        path = self._path(node.uuid)
        if not mutable:
            cached = self.cache.get(path)
            if cached is not None:
                return cached
        blob = self.store.get(path)
        bitmap = BitMap64.deserialize(blob.data) if blob is not None else BitMap64()
        if not mutable:
            self.cache.put(path, bitmap)
        return bitmap

    def add(self, node_uuid: str, ids: np.ndarray) -> None:
        """Record that ``node_uuid`` wrote chunks ``ids`` (compare-and-swap)."""
        path = self._path(node_uuid)
        for _ in range(MAX_CAS_ATTEMPTS):
            blob = self.store.get(path)
            bitmap = BitMap64.deserialize(blob.data) if blob is not None else BitMap64()
            before = len(bitmap)
            bitmap.update(ids.astype(np.uint64))
            if blob is not None and len(bitmap) == before:
                return
            try:
                if blob is None:
                    self.store.put(path, bitmap.serialize(), if_absent=True)
                else:
                    self.store.put(path, bitmap.serialize(), if_match=blob.token)
                return
            except PreconditionFailed:
                continue
        raise BadRequest(f"too much contention recording chunks of {node_uuid}")

    def owners(
        self, dag: VersionDAG, node: Node, mutable: bool, ids: np.ndarray
    ) -> dict[int, np.ndarray]:
        """For each version holding some of ``ids`` (nearest along the ancestry), the ids
        it holds. Ids no version wrote are absent from the result (background)."""
        remaining = BitMap64(ids.astype(np.uint64))
        found: dict[int, BitMap64] = {}
        current: Node | None = node
        while current is not None and remaining:
            if len(current.parents) > 1:
                self._resolve_merge(dag, current, remaining, found)
                break
            is_open = mutable and current is node
            owned = remaining & self.written(current, is_open)
            if owned:
                found[current.version_id] = owned
                remaining -= owned
            current = dag.by_id[current.parents[0]] if current.parents else None
        return {v: np.array(bitmap.to_array(), dtype=np.uint64) for v, bitmap in found.items()}

    def _resolve_merge(
        self, dag: VersionDAG, merge: Node, remaining: BitMap64, found: dict[int, BitMap64]
    ) -> None:
        """Below a merge, resolve chunk by chunk with the shadowing rule (README §2.2);
        chunks written along two merge paths conflict."""
        own = remaining & self.written(merge, mutable=not merge.locked)
        if own:
            found.setdefault(merge.version_id, BitMap64()).update(own)
            remaining = remaining - own
        bitmaps: dict[int, BitMap64] = {}

        def holds(version: int, chunk: int) -> bool:
            if version not in bitmaps:
                bitmaps[version] = self.written(dag.by_id[version], mutable=False)
            return chunk in bitmaps[version]

        for chunk in remaining:
            winners = dag.nearest_records(merge.parents, lambda v, c=chunk: holds(v, c))
            if len(winners) > 1:
                raise Conflict(
                    f"block {chunk} was written on more than one path into merged node "
                    f"{merge.uuid}: write it at that node to resolve the conflict"
                )
            if winners:
                found.setdefault(winners[0], BitMap64()).add(chunk)
