"""Which chunks each version node wrote: one roaring bitmap of chunk ids per node.

While a node is open its bitmap is an object updated conditionally
(:func:`app.storage.conditional.update`) after the chunks themselves are written (so a
chunk is never visible before its data); once the node is locked the bitmap never changes
and is kept in memory. Resolving which node holds a chunk for a read at node N walks N's
ancestry in memory, intersecting bitmaps: the store is never probed ancestor by ancestor.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from pyroaring import BitMap64

from app.cache import LRUCache
from app.context import VersionContext
from app.dag import Node
from app.errors import Conflict
from app.storage import conditional
from app.volumes import keys
from backends import ObjectStore


class ChunkOwnership:
    """Per-node written-chunk bitmaps of one chunk array (an instance at one scale), as
    seen from one version."""

    def __init__(
        self, store: ObjectStore, base: str, cache: LRUCache[BitMap64], at: VersionContext
    ) -> None:
        self.store = store
        self.base = base
        self.cache = cache
        self.at = at

    def written(self, node: Node, mutable: bool) -> BitMap64:
        """The chunks ``node`` wrote; cached once the node can no longer change."""
        path = keys.owned(self.base, node.uuid)
        if not mutable:
            cached = self.cache.get(path)
            if cached is not None:
                return cached
        blob = self.store.get(path)
        bitmap = BitMap64.deserialize(blob.data) if blob is not None else BitMap64()
        if not mutable:
            self.cache.put(path, bitmap)
        return bitmap

    def add(self, ids: np.ndarray) -> None:
        """Record that the bound (open) node wrote chunks ``ids``."""
        node_uuid = self.at.node.uuid

        def edit(current: bytes | None) -> bytes | None:
            bitmap = BitMap64.deserialize(current) if current is not None else BitMap64()
            before = len(bitmap)
            bitmap.update(ids.astype(np.uint64))
            if current is not None and len(bitmap) == before:
                return None
            return bitmap.serialize()

        conditional.update(
            self.store, keys.owned(self.base, node_uuid), edit, what=f"chunks of {node_uuid}"
        )

    def owners(
        self, ids: np.ndarray, conflicts: dict[int, list[int]] | None = None
    ) -> dict[int, np.ndarray]:
        """For each version holding some of ``ids`` (nearest along the ancestry), the ids
        it holds. Ids no version wrote are absent from the result (background). Below a
        merge, a chunk written along two merge paths raises :class:`Conflict`, or, given
        ``conflicts``, is left out and recorded there with its holders (for diffs)."""
        at = self.at
        remaining = BitMap64(ids.astype(np.uint64))
        found: dict[int, BitMap64] = {}
        current: Node | None = at.node
        while current is not None and remaining:
            if len(current.parents) > 1:
                self._resolve_merge(current, remaining, found, conflicts)
                break
            owned = remaining & self.written(current, at.is_open(current))
            if owned:
                found[current.version_id] = owned
                remaining -= owned
            current = at.owner(current.parents[0]) if current.parents else None
        return {v: np.array(bitmap.to_array(), dtype=np.uint64) for v, bitmap in found.items()}

    def _resolve_merge(
        self,
        merge: Node,
        remaining: BitMap64,
        found: dict[int, BitMap64],
        conflicts: dict[int, list[int]] | None = None,
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
                bitmaps[version] = self.written(self.at.owner(version), mutable=False)
            return chunk in bitmaps[version]

        for chunk in remaining:
            winners = self.at.dag.nearest_records(merge.parents, partial(holds, chunk=chunk))
            if len(winners) > 1 and conflicts is not None:
                conflicts[chunk] = sorted(winners)
            elif len(winners) > 1:
                raise Conflict(
                    f"block {chunk} was written on more than one path into merged node "
                    f"{merge.uuid}: write it at that node to resolve the conflict"
                )
            if winners:
                found.setdefault(winners[0], BitMap64()).add(chunk)
