"""Which chunks each version node wrote: one roaring bitmap of chunk ids per node.

While a node is open its bitmap is an object updated conditionally
(:func:`app.storage.conditional.update`) after the chunks themselves are written (so a
chunk is never visible before its data); once the node is locked the bitmap never changes
and is kept in memory. Resolving which node holds a chunk for a read at node N never
probes the store ancestor by ancestor: an open N's own bitmap is read, and the locked
ancestry above it is flattened once into one sorted table of chunk -> owner
(:class:`FlatOwners`, up to the first merge node; below a merge, chunks are resolved one
by one with the shadowing rule), so a read costs the same at any depth.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
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


@dataclass(frozen=True)
class FlatOwners:
    """The chunks a locked node's linear ancestry wrote, each with the node a read at that
    node resolves it to: the node and its ancestors up to (not including) the first merge
    node, flattened once. Every node in it is locked, so it never changes; a read then
    costs a binary search instead of one bitmap per ancestor, the same at depth 1 and at
    depth 100. Owners are node UUIDs (the same in every store a version is pushed to),
    not VersionIDs (each store numbers its own)."""

    #: Chunk ids, sorted.
    ids: np.ndarray
    #: Per id, the index of its owner in :attr:`nodes`.
    owner: np.ndarray
    nodes: tuple[str, ...]
    #: The UUID of the merge node where the chain stopped (then resolved chunk by
    #: chunk), or None at the root.
    stop: str | None

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.owner.nbytes) + 64 * (len(self.nodes) + 1)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(a mask of the ``ids`` found here, the index in :attr:`nodes` of each found
        one's owner)."""
        if self.ids.size == 0:
            return np.zeros(ids.size, bool), self.owner[:0]
        at = np.searchsorted(self.ids, ids)
        at[at == self.ids.size] = 0
        hit = self.ids[at] == ids
        return hit, self.owner[at[hit]]


def _by_owner(ids: np.ndarray, owner: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``ids`` (sorted) grouped by ``owner`` (one per id), each group still sorted. Most
    reads find one owner, so that case skips the sort."""
    if owner.size == 0:
        return []
    if (owner == owner[0]).all():
        return [(int(owner[0]), ids)]
    order = np.argsort(owner, kind="stable")
    owner = owner[order]
    starts = np.flatnonzero(np.concatenate(([True], owner[1:] != owner[:-1])))
    return list(zip(owner[starts].tolist(), np.split(ids[order], starts[1:]), strict=True))


#: Flattened ancestries, process-wide (like the bitmaps they are built from, a locked
#: node's never change): keyed by array and node UUID.
FLATS: LRUCache[FlatOwners] = LRUCache(64 << 20, weigh=lambda flat: flat.nbytes)


class ChunkOwnership:
    """Per-node written-chunk bitmaps of one chunk array (an instance at one scale), as
    seen from one version."""

    def __init__(
        self,
        store: ObjectStore,
        base: str,
        cache: LRUCache[BitMap64],
        at: VersionContext,
        flats: LRUCache[FlatOwners] = FLATS,
        settled: str | None = None,
    ) -> None:
        self.store = store
        self.base = base
        self.cache = cache
        self.at = at
        self.flats = flats
        #: The open node's settled journal stamp (:meth:`app.storage.journal.Journal.recover`),
        #: read before anything else of the node: its bitmap is kept under it.
        self.settled = settled

    def written(self, node: Node, mutable: bool) -> BitMap64:
        """The chunks ``node`` wrote; cached once the node can no longer change, and while
        it can, for as long as its journal's settled stamp stays the same (any write there
        puts the journal head first, so a reader that saw the stamp again missed none)."""
        path = keys.owned(self.base, node.uuid)
        if not mutable:
            key: str | None = path
        elif self.settled is not None and node is self.at.node:
            key = f"{path}@{self.settled}"
        else:
            key = None
        if key is not None:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        blob = self.store.get(path)
        bitmap = BitMap64.deserialize(blob.data) if blob is not None else BitMap64()
        if key is not None:
            self.cache.put(key, bitmap)
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
        wanted = np.unique(np.asarray(ids, dtype=np.uint64))
        found: dict[int, list[np.ndarray]] = defaultdict(list)
        current: Node | None = at.node
        while current is not None and wanted.size:
            if len(current.parents) > 1:
                resolved: dict[int, BitMap64] = {}
                self._resolve_merge(current, BitMap64(wanted.tolist()), resolved, conflicts)
                for version, bitmap in resolved.items():
                    found[version].append(np.array(bitmap.to_array(), dtype=np.uint64))
                break
            if at.is_open(current):  # its own bitmap may change: read, then the parent
                owned = self.written(current, mutable=True) & BitMap64(wanted.tolist())
                if owned:
                    held = np.isin(wanted, np.array(owned.to_array(), dtype=np.uint64))
                    found[current.version_id].append(wanted[held])
                    wanted = wanted[~held]
                current = at.owner(current.parents[0]) if current.parents else None
                continue
            flat = self._flat(current)
            held, owner = flat.lookup(wanted)
            for index, group in _by_owner(wanted[held], owner):
                found[at.dag.by_uuid[flat.nodes[index]].version_id].append(group)
            wanted = wanted[~held]
            current = at.dag.by_uuid[flat.stop] if flat.stop is not None else None
        return {
            version: parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))
            for version, parts in found.items()
        }

    def _flat(self, node: Node) -> FlatOwners:
        """``node``'s :class:`FlatOwners` (locked: built once per process, then cached)."""
        key = keys.owned(self.base, node.uuid)
        flat = self.flats.get(key)
        if flat is not None:
            return flat
        seen = BitMap64()
        parts: list[np.ndarray] = []
        nodes: list[str] = []
        current: Node | None = node
        while current is not None and len(current.parents) <= 1:
            written = self.written(current, mutable=False)
            new = written - seen
            if new:
                parts.append(np.array(new.to_array(), dtype=np.uint64))
                nodes.append(current.uuid)
                seen |= written
            current = self.at.owner(current.parents[0]) if current.parents else None
        ids = np.concatenate(parts) if parts else np.empty(0, np.uint64)
        owner = np.repeat(np.arange(len(parts), dtype=np.int32), [len(p) for p in parts])
        order = np.argsort(ids, kind="stable")
        stop = current.uuid if current is not None else None
        flat = FlatOwners(ids[order], owner[order], tuple(nodes), stop)
        self.flats.put(key, flat)
        return flat

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
