"""What differs between two versions, and what a merge of several would conflict on,
computed from the per-version indexes (key indexes, chunk ownership bitmaps), never from
voxels.

Only versions that one side descends from and the other does not can make the sides
differ: ``ancestors(A) ^ ancestors(B)``. The records or chunks those versions wrote are the
candidates; a candidate differs when a read at A and a read at B resolve it to different
*holders* (the versions whose records the read sees). Keyed records whose holders differ
are then compared by their bytes, so rewriting a value unchanged is no change; chunks are
not read (a chunk rewritten on a branch is listed even if its voxels came out the same).

A merge of parents P1..Pn is judged three-way against the merge bases (the newest
versions every parent descends from): an item written on one side only is no conflict;
one written on two or more sides conflicts when the values those sides see differ from the
base and from each other. Here values are compared by bytes: stored records, or stored
chunk objects (the encoded chunk, not decoded voxels); the same bytes on both sides is no
conflict.

The machinery is generic over keyed records (:class:`VersionedKeys`) and chunk arrays
(:class:`ChunkOwnership`); each datatype says which of its stores to compare and how to
show the result (``Data.diff`` and ``Data.merge_conflicts``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from pyroaring import BitMap64

from app.dag import Node, VersionDAG
from app.storage import parallel
from app.storage.idmap import IdMap
from app.storage.keyed import KeyView, VersionedKeys, decode_key
from app.volumes.ownership import ChunkOwnership

#: The versions whose records a read sees: () none, (v,) one, several a merge conflict.
Holders = tuple[int, ...]
#: What a read sees, comparable by bytes: None (absent), the bytes, or for a conflicted
#: read the sorted bytes of every holder.
Value = bytes | tuple[bytes | None, ...] | None

T = TypeVar("T", bound=Hashable)


def divergent(dag: VersionDAG, a: Node, b: Node) -> frozenset[int]:
    """The versions exactly one of ``a`` and ``b`` descends from (itself included)."""
    return dag.ancestors(a.version_id) ^ dag.ancestors(b.version_id)


@dataclass(frozen=True)
class MergeSides:
    """The parents of a merge seen three-way: per parent, the versions not every parent
    descends from (its *side*), and the merge bases (the newest common ancestors)."""

    parents: list[Node]
    sides: list[frozenset[int]]
    bases: list[Node]

    @classmethod
    def of(cls, dag: VersionDAG, parents: list[Node]) -> MergeSides:
        lines = [dag.ancestors(p.version_id) for p in parents]
        common = frozenset.intersection(*lines)
        # Common ancestry is closed under parents, so a common version is a newest one
        # exactly when none of its children is common.
        bases = [
            dag.by_id[v]
            for v in sorted(common)
            if not any(c in common for c in dag.by_id[v].children)
        ]
        return cls(parents, [line - common for line in lines], bases)


S = TypeVar("S", set[str], BitMap64)


def _on_several(sides: list[S], found: S) -> S:
    """The items (keys or chunk ids) in two or more of ``sides``, added to the empty
    ``found``: pairwise intersections, set operations in C, where counting item by item
    in Python costs ten times more."""
    for i, side in enumerate(sides):
        for other in sides[i + 1 :]:
            found |= side & other
    return found


def _value(holders: Holders, values: dict[tuple[int, T], bytes | None], item: T) -> Value:
    if not holders:
        return None
    if len(holders) == 1:
        return values[(holders[0], item)]
    found = {values[(v, item)] for v in holders}
    if len(found) == 1:  # a conflicted read whose holders agree byte for byte
        return found.pop()
    return tuple(sorted(found, key=lambda b: (b is not None, b or b"")))


def _fetch(
    wanted: Iterable[tuple[int, T]], read: Callable[[int, list[T]], list[bytes | None]]
) -> dict[tuple[int, T], bytes | None]:
    """The bytes of every (version, item) in ``wanted``, read version by version."""
    by_version: dict[int, list[T]] = {}
    for version, item in wanted:
        by_version.setdefault(version, []).append(item)
    found: dict[tuple[int, T], bytes | None] = {}
    for version, items in by_version.items():
        for item, value in zip(items, read(version, items), strict=True):
            found[(version, item)] = value
    return found


def _conflicting(
    items: list[T],
    parent_holders: list[dict[T, Holders]],
    base_holders: list[dict[T, Holders]],
    read: Callable[[int, list[T]], list[bytes | None]],
) -> list[T]:
    """The items whose values differ from the bases' on two or more sides, and differ
    from each other there (three-way, by bytes)."""
    undecided = [i for i in items if len({h[i] for h in parent_holders}) > 1]
    wanted = {(v, i) for i in undecided for h in (*parent_holders, *base_holders) for v in h[i]}
    values = _fetch(wanted, read)
    found = []
    for item in undecided:
        base = {_value(h[item], values, item) for h in base_holders} or {None}
        changed = {_value(h[item], values, item) for h in parent_holders} - base
        if len(changed) > 1:
            found.append(item)
    return found


# --- keyed records -----------------------------------------------------------------------


@dataclass
class KeyChanges:
    """Keys of a keyed store that differ between two versions (sorted by key bytes)."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.deleted)

    def to_json(self) -> dict[str, list[str]]:
        return {"added": self.added, "changed": self.changed, "deleted": self.deleted}


def _key_reader(keys: VersionedKeys, dag: VersionDAG) -> Callable[[int, list[str]], list]:
    def read(version: int, hexkeys: list[str]) -> list[bytes | None]:
        found = keys.read_values(dag.by_id[version].uuid, hexkeys)
        return [v if isinstance(v, bytes) else None for v in found]

    return read


def key_diff(keys: VersionedKeys, a: KeyView, b: KeyView) -> KeyChanges:
    """What a read of ``keys`` at ``b`` sees differently from one at ``a``."""
    dag = a.dag
    in_a = dag.ancestors(a.node.version_id)
    candidates: set[str] = set()
    for version in divergent(dag, a.node, b.node):
        view = a if version in in_a else b
        candidates.update(view.records_of(version).records)
    changes = KeyChanges()
    pending: list[tuple[str, Holders, Holders]] = []
    for hexkey in sorted(candidates):
        was, now = tuple(a.holders(hexkey)), tuple(b.holders(hexkey))
        if was == now:
            continue
        if not was:
            changes.added.append(decode_key(hexkey))
        elif not now:
            changes.deleted.append(decode_key(hexkey))
        else:
            pending.append((hexkey, was, now))
    values = _fetch(
        {(v, k) for k, *sides in pending for h in sides for v in h}, _key_reader(keys, dag)
    )
    changes.changed = [
        decode_key(k) for k, was, now in pending if _value(was, values, k) != _value(now, values, k)
    ]
    return changes


def key_conflicts(keys: VersionedKeys, dag: VersionDAG, merge: MergeSides) -> list[str]:
    """Keys a merge of ``merge.parents`` would conflict on (three-way, by bytes)."""
    views = [keys.at(dag, parent, mutable=False) for parent in merge.parents]
    written: list[set[str]] = []
    for side, view in zip(merge.sides, views, strict=True):
        written.append(set().union(*(view.records_of(v).records for v in side)))
    candidates = sorted(_on_several(written, set()))
    bases = [keys.at(dag, base, mutable=False) for base in merge.bases]
    found = _conflicting(
        candidates,
        [{k: tuple(view.holders(k)) for k in candidates} for view in views],
        [{k: tuple(view.holders(k)) for k in candidates} for view in bases],
        _key_reader(keys, dag),
    )
    return [decode_key(k) for k in found]


# --- partitioned id maps ------------------------------------------------------------------


def map_diff(a: IdMap, b: IdMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids (sorted) whose value differs between ``a``'s and ``b``'s versions, with their
    values at each (an id without an entry is its own value). Only partitions whose
    copy comes from other versions (:func:`chunk_diff` of the partition bitmaps) are
    loaded."""
    ids, was, now = [], [], []
    for part in chunk_diff(a.ownership, b.ownership).tolist():
        (ka, va), (kb, vb) = a.partition_at(int(part)), b.partition_at(int(part))
        every = np.union1d(ka, kb)
        at_a, at_b = every.copy(), every.copy()
        at_a[np.searchsorted(every, ka)] = va
        at_b[np.searchsorted(every, kb)] = vb
        differ = at_a != at_b
        ids.append(every[differ])
        was.append(at_a[differ])
        now.append(at_b[differ])
    if not ids:
        empty = np.empty(0, np.uint64)
        return empty, empty, empty
    every = np.concatenate(ids)
    order = np.argsort(every)
    return every[order], np.concatenate(was)[order], np.concatenate(now)[order]


def map_conflicts(parents: list[IdMap], bases: list[IdMap], merge: MergeSides) -> np.ndarray:
    """Ids (sorted) whose value two or more sides of a merge changed, to different
    values (three-way per id, in the partitions written on two or more sides)."""
    written = [_written(m.ownership, side) for side, m in zip(merge.sides, parents, strict=True)]
    found: list[int] = []
    for part in sorted(_on_several(written, BitMap64())):
        sides = [m.partition_at(part) for m in parents]
        olds = [m.partition_at(part) for m in bases]
        every = np.unique(np.concatenate([k for k, _ in (*sides, *olds)]))

        def values(entries: tuple[np.ndarray, np.ndarray], every: np.ndarray = every) -> np.ndarray:
            out = every.copy()
            out[np.searchsorted(every, entries[0])] = entries[1]
            return out

        now = np.stack([values(e) for e in sides])
        was = np.stack([values(e) for e in olds]) if olds else every[None, :]
        for i in np.flatnonzero((now != now[0]).any(axis=0)).tolist():
            changed = set(now[:, i].tolist()) - set(was[:, i].tolist())
            if len(changed) > 1:
                found.append(int(every[i]))
    return np.array(sorted(found), dtype=np.uint64)


# --- chunk arrays --------------------------------------------------------------------------


def _written(ownership: ChunkOwnership, versions: Iterable[int]) -> BitMap64:
    at = ownership.at
    found = BitMap64()
    for version in versions:
        node = at.owner(version)
        found |= ownership.written(node, at.is_open(node))
    return found


#: In :func:`_chunk_owners`, a chunk no version wrote, and one held on several paths.
_NONE, _SEVERAL = -1, -2


def _chunk_owners(
    ownership: ChunkOwnership, ids: np.ndarray
) -> tuple[np.ndarray, dict[int, list[int]]]:
    """Per chunk of the sorted ``ids``, the version whose copy a read sees (vectorized:
    a diff may cover every chunk of a volume), and the chunks whose read would conflict
    with their holders."""
    conflicts: dict[int, list[int]] = {}
    found = np.full(ids.size, _NONE, dtype=np.int64)
    for version, owned in ownership.owners(ids, conflicts).items():
        found[np.searchsorted(ids, owned)] = version
    if conflicts:
        found[np.searchsorted(ids, np.array(list(conflicts), dtype=np.uint64))] = _SEVERAL
    return found, conflicts


def _chunk_holders(ownership: ChunkOwnership, ids: np.ndarray) -> dict[int, Holders]:
    """Per chunk id of the sorted ``ids``, the versions whose copy a read there sees."""
    found, conflicts = _chunk_owners(ownership, ids)
    held: dict[int, Holders] = {}
    for chunk, version in zip(ids.tolist(), found.tolist(), strict=True):
        held[chunk] = () if version == _NONE else (version,)
    for chunk, versions in conflicts.items():
        held[chunk] = tuple(versions)
    return held


def chunk_diff(a: ChunkOwnership, b: ChunkOwnership) -> np.ndarray:
    """Chunk ids (sorted) whose copy a read at ``b`` takes from other versions than one at
    ``a`` (ownership bitmaps only: no chunk is read)."""
    dag = a.at.dag
    in_a = dag.ancestors(a.at.node.version_id)
    changed = divergent(dag, a.at.node, b.at.node)
    candidates = _written(a, changed & in_a) | _written(b, changed - in_a)
    ids = np.array(candidates.to_array(), dtype=np.uint64)
    if ids.size == 0:
        return ids
    (was, was_several), (now, now_several) = _chunk_owners(a, ids), _chunk_owners(b, ids)
    differ = was != now
    for chunk in was_several.keys() & now_several.keys():
        if sorted(was_several[chunk]) == sorted(now_several[chunk]):
            differ[np.searchsorted(ids, np.uint64(chunk))] = False
    return ids[differ]


def chunk_conflicts(
    parents: list[ChunkOwnership],
    bases: list[ChunkOwnership],
    merge: MergeSides,
    read_chunk: Callable[[Node, int], bytes | None],
) -> np.ndarray:
    """Chunk ids (sorted) a merge would conflict on: written on two or more sides, with
    stored chunk objects (``read_chunk`` reads one) that differ three-way."""
    written = [_written(o, side) for side, o in zip(merge.sides, parents, strict=True)]
    candidates = [int(c) for c in _on_several(written, BitMap64())]
    ids = np.array(candidates, dtype=np.uint64)
    if ids.size == 0:
        return ids
    dag = parents[0].at.dag

    def read(version: int, chunks: list[int]) -> list[bytes | None]:
        node = dag.by_id[version]
        return parallel.each(lambda chunk: read_chunk(node, chunk), chunks)

    found = _conflicting(
        candidates,
        [_chunk_holders(o, ids) for o in parents],
        [_chunk_holders(o, ids) for o in bases],
        read,
    )
    return np.array(found, dtype=np.uint64)
