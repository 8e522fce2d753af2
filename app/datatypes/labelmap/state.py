"""labelmap's versioned label state besides voxels: the supervoxel -> body mapping, the
per-body label index, and label counters.

All of it is copy-on-write per version node, like the voxels:

* **Mapping**: supervoxels are hashed into 4096 partitions; a node that changes the mapping
  writes whole partitions (sorted arrays of supervoxels and their bodies) under its own
  prefix and records which partitions it wrote in a roaring bitmap
  (:class:`ChunkOwnership`, the same mechanism as chunks). A lookup loads only the
  partitions it needs, from the nearest ancestor that wrote each, so a fresh process answers
  its first query after reading a few small objects, whatever the mapping's size.
* **Label index**: one DVID ``LabelIndex`` protobuf per body, as a keyed record
  (:class:`VersionedKeys`): per block, voxel counts of each supervoxel.
* **Counters**: the largest label written per version (keyed record) and the repo-wide
  largest label handed out (a compare-and-swap object), so new ids never repeat.
"""

from __future__ import annotations

import io

import numpy as np

from app.blocks.ownership import ChunkOwnership
from app.cache import LRUCache
from app.dag import Node, VersionDAG
from app.errors import BadRequest
from app.storage.keyed import KeyView, VersionedKeys
from app.proto import labelmap_pb2 as pb
from backends import ObjectStore, PreconditionFailed

PARTITION_BITS = 12
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def partitions(svs: np.ndarray) -> np.ndarray:
    """The mapping partition of each supervoxel (a multiplicative hash's top bits)."""
    with np.errstate(over="ignore"):
        return (svs.astype(np.uint64) * _GOLDEN) >> np.uint64(64 - PARTITION_BITS)


class Mapping:
    """The supervoxel -> body mapping of one instance, copy-on-write per node."""

    def __init__(
        self,
        store: ObjectStore,
        base: str,
        bitmaps: LRUCache,
        arrays: LRUCache[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        self.store = store
        self.base = base
        self.ownership = ChunkOwnership(store, base, bitmaps)
        self.arrays = arrays

    def _path(self, node_uuid: str, part: int) -> str:
        return f"{self.base}/{node_uuid}/{part:03x}.npz"

    def _load(self, node: Node, part: int, mutable: bool) -> tuple[np.ndarray, np.ndarray]:
        path = self._path(node.uuid, part)
        if not mutable:
            cached = self.arrays.get(path)
            if cached is not None:
                return cached
        blob = self.store.get(path)
        if blob is None:
            loaded = (np.empty(0, np.uint64), np.empty(0, np.uint64))
        else:
            with np.load(io.BytesIO(blob.data)) as npz:
                loaded = (npz["sv"], npz["body"])
        if not mutable:
            self.arrays.put(path, loaded)
        return loaded

    def lookup(
        self,
        dag: VersionDAG,
        node: Node,
        mutable: bool,
        svs: np.ndarray,
        explicit: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Bodies of ``svs`` as seen at ``node``; unmapped supervoxels map to themselves.
        With ``explicit``, also a mask of the ids that have a mapping entry."""
        svs = np.asarray(svs, dtype=np.uint64)
        bodies = svs.copy()
        found = np.zeros(svs.size, dtype=bool)
        if svs.size == 0:
            return (bodies, found) if explicit else bodies
        parts = partitions(svs)
        order = np.argsort(parts, kind="stable")
        sorted_parts = parts[order]
        wanted, starts = np.unique(sorted_parts, return_index=True)
        ends = np.append(starts[1:], sorted_parts.size)
        span = {int(p): (lo, hi) for p, lo, hi in zip(wanted, starts, ends, strict=True)}
        for version, owned in self.ownership.owners(dag, node, mutable, wanted).items():
            owner = dag.by_id[version]
            for part in owned.tolist():
                keys, values = self._load(owner, part, mutable and owner is node)
                if keys.size == 0:
                    continue
                lo, hi = span[part]
                sel = order[lo:hi]
                pos = np.minimum(np.searchsorted(keys, svs[sel]), keys.size - 1)
                hit = keys[pos] == svs[sel]
                bodies[sel[hit]] = values[pos[hit]]
                found[sel[hit]] = True
        return (bodies, found) if explicit else bodies

    def update(self, dag: VersionDAG, node: Node, svs: np.ndarray, bodies: np.ndarray) -> None:
        """Set ``svs -> bodies`` at the open ``node`` (whole partitions are rewritten;
        later pairs win over earlier ones and over what the partition held)."""
        svs = np.asarray(svs, dtype=np.uint64)
        bodies = np.asarray(bodies, dtype=np.uint64)
        parts = partitions(svs)
        order = np.argsort(parts, kind="stable")
        svs, bodies, parts = svs[order], bodies[order], parts[order]
        touched, starts = np.unique(parts, return_index=True)
        ends = np.append(starts[1:], parts.size)
        owners = self.ownership.owners(dag, node, True, touched)
        owner_of = {int(p): v for v, owned in owners.items() for p in owned}
        for part, lo, hi in zip(touched.tolist(), starts.tolist(), ends.tolist(), strict=True):
            version = owner_of.get(part)
            if version is None:
                keys, values = np.empty(0, np.uint64), np.empty(0, np.uint64)
            else:
                owner = dag.by_id[version]
                keys, values = self._load(owner, part, owner is node)
            new_keys, new_values = _merge_sorted(keys, values, svs[lo:hi], bodies[lo:hi])
            out = io.BytesIO()
            np.savez(out, sv=new_keys, body=new_values)
            self.store.put(self._path(node.uuid, part), out.getvalue())
        self.ownership.add(node.uuid, touched)

    def entries(self, dag: VersionDAG, node: Node, mutable: bool) -> tuple[np.ndarray, np.ndarray]:
        """Every explicit mapping entry visible at ``node`` (for ``GET /mappings``)."""
        all_parts = np.arange(1 << PARTITION_BITS, dtype=np.uint64)
        keys, values = [], []
        for version, owned in self.ownership.owners(dag, node, mutable, all_parts).items():
            owner = dag.by_id[version]
            for part in owned:
                k, v = self._load(owner, int(part), mutable and owner is node)
                keys.append(k)
                values.append(v)
        if not keys:
            return np.empty(0, np.uint64), np.empty(0, np.uint64)
        k, v = np.concatenate(keys), np.concatenate(values)
        order = np.argsort(k)
        return k[order], v[order]


def _merge_sorted(
    keys: np.ndarray, values: np.ndarray, new_keys: np.ndarray, new_values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted union of two key/value sets; for a repeated key the last pair wins."""
    all_keys = np.concatenate([keys, new_keys])
    all_values = np.concatenate([values, new_values])
    order = np.argsort(all_keys, kind="stable")
    sorted_keys = all_keys[order]
    last = np.append(sorted_keys[1:] != sorted_keys[:-1], True)
    return sorted_keys[last], all_values[order][last]


def label_key(label: int) -> str:
    """Fixed-width hex, so keyed-record order is numeric order."""
    return f"{label:016x}"


class LabelIndices:
    """Per-body ``LabelIndex`` records of one instance."""

    def __init__(self, keys: VersionedKeys) -> None:
        self.keys = keys

    def get(self, view: KeyView, label: int) -> pb.LabelIndex | None:
        data = view.get(label_key(label))
        if data is None:
            return None
        index = pb.LabelIndex()
        index.ParseFromString(data)
        return index if index.blocks else None

    def put(self, node_uuid: str, index: pb.LabelIndex) -> None:
        if index.blocks:
            self.keys.write(node_uuid, label_key(index.label), index.SerializeToString())
        else:
            self.keys.delete(node_uuid, label_key(index.label))

    def labels(self, view: KeyView, start: int = 0, end: int | None = None) -> list[int]:
        lo = label_key(start)
        hi = label_key(end) if end is not None else None
        return [int(k, 16) for k in view.keys_in_range(lo, hi)]


class LabelCounter:
    """The repo-wide largest label handed out or written, advanced by compare-and-swap."""

    def __init__(self, store: ObjectStore, path: str) -> None:
        self.store = store
        self.path = path

    def current(self) -> int:
        blob = self.store.get(self.path)
        return int(blob.data) if blob is not None else 0

    def advance(self, at_least: int = 0, reserve: int = 0) -> tuple[int, int]:
        """Raise the counter to ``max(current, at_least) + reserve``; returns the
        (previous, new) values. Reserved ids are ``previous+1 .. new``."""
        for _ in range(64):
            blob = self.store.get(self.path)
            previous = int(blob.data) if blob is not None else 0
            new = max(previous, at_least) + reserve
            if new == previous:
                return previous, new
            try:
                if blob is None:
                    self.store.put(self.path, str(new).encode(), if_absent=True)
                else:
                    self.store.put(self.path, str(new).encode(), if_match=blob.token)
                return previous, new
            except PreconditionFailed:
                continue
        raise BadRequest("too much contention on the label counter")
