"""A partitioned uint64 -> uint64 map, copy-on-write per version node.

Ids are hashed into ``2**bits`` partitions; a node that changes the map writes whole
partitions (sorted numpy arrays of ids and values) under its own prefix and records which
partitions it wrote in a roaring bitmap (:class:`ChunkOwnership`, the same mechanism as
chunks). A lookup loads only the partitions it needs, from the nearest ancestor that wrote
each, so a fresh process answers its first query after reading a few small objects,
whatever the map's size. labelmap keeps its supervoxel mapping this way, labelsz its counts.
"""

from __future__ import annotations

import io
import re
import threading
import zipfile

import numpy as np
from pyroaring import BitMap64

from app.cache import LRUCache
from app.context import VersionContext
from app.dag import Node
from app.storage import parallel
from app.storage.journal import is_buffered
from app.volumes.ownership import ChunkOwnership
from backends import ObjectStore
from backends.base import UNCHANGED, Blob, Unchanged

#: The default partition count is 2**12: labelmap's supervoxel mapping.
PARTITION_BITS = 12
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def partitions(ids: np.ndarray, bits: int = PARTITION_BITS) -> np.ndarray:
    """The partition of each id (a multiplicative hash's top ``bits`` bits)."""
    with np.errstate(over="ignore"):
        return (ids.astype(np.uint64) * _GOLDEN) >> np.uint64(64 - bits)


def partition_path(base: str, node_uuid: str, part: int) -> str:
    """The object holding partition ``part`` as of ``node_uuid``."""
    return f"{base}/{node_uuid}/{part:03x}.npz"


#: Parsed partitions, shared by every map in the process: labelmap mappings and labelsz
#: counts compete for one memory budget. Each is kept with the store's token of the
#: object it was parsed from: a locked node's never change (the token is not checked),
#: an open node's are checked with a conditional read before each use
#: (:meth:`ObjectStore.get_if_changed`: a stat, a 304), so that a write, which looks up
#: hundreds of partitions at its open node, does not read and unzip them every time,
#: and still sees what another process wrote since.
PARTITIONS: LRUCache[tuple[np.ndarray, np.ndarray, str]] = LRUCache(
    256 << 20, weigh=lambda kv: kv[0].nbytes + kv[1].nbytes
)

#: The token of a partition parsed at a locked node (no store's token looks like it).
_FINAL = "\x00final"


class IdMap:
    """A partitioned uint64 -> uint64 map of one instance as seen from one version,
    copy-on-write per node (ids without an entry map to themselves)."""

    def __init__(
        self,
        store: ObjectStore,
        base: str,
        bitmaps: LRUCache[BitMap64],
        at: VersionContext,
        bits: int = PARTITION_BITS,
        arrays: LRUCache[tuple[np.ndarray, np.ndarray, str]] = PARTITIONS,
    ) -> None:
        self.store = store
        self.bits = bits
        self.base = base
        self.at = at
        self.ownership = ChunkOwnership(store, base, bitmaps, at)
        self.arrays = arrays

    def _load(self, node: Node, part: int) -> tuple[np.ndarray, np.ndarray]:
        """Partition ``part`` as ``node`` wrote it (read-only arrays, shared)."""
        path = partition_path(self.base, node.uuid, part)
        cached = self.arrays.get(path)
        if cached is not None and cached[2] == _FINAL:
            return cached[0], cached[1]
        found: Blob | Unchanged | None
        if cached is None:
            found = self.store.get(path)
        else:
            # parsed while the node was open: another process may have rewritten it since
            found = self.store.get_if_changed(path, cached[2])
        if isinstance(found, Blob):
            keys_, values = _parse_partition(found.data)
        elif found is UNCHANGED and cached is not None:
            keys_, values = cached[0], cached[1]
        else:
            keys_, values = np.empty(0, np.uint64), np.empty(0, np.uint64)
        if not self.at.is_open(node):
            self.arrays.put(path, (keys_, values, _FINAL))
        elif isinstance(found, Blob) and not is_buffered(found.token):
            self.arrays.put(path, (keys_, values, found.token))
        elif found is not UNCHANGED:
            self.arrays.discard(path)
        return keys_, values

    def lookup(self, svs: np.ndarray) -> np.ndarray:
        """Values of ``svs``; ids without an entry map to themselves."""
        return self.lookup_explicit(svs)[0]

    def lookup_explicit(self, svs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values of ``svs``, and a mask of the ids that have an entry."""
        svs = np.asarray(svs, dtype=np.uint64)
        bodies = svs.copy()
        found = np.zeros(svs.size, dtype=bool)
        if svs.size == 0:
            return bodies, found
        parts = partitions(svs, self.bits)
        order = np.argsort(parts, kind="stable")
        sorted_parts = parts[order]
        wanted, starts = np.unique(sorted_parts, return_index=True)
        ends = np.append(starts[1:], sorted_parts.size)
        span = {int(p): (lo, hi) for p, lo, hi in zip(wanted, starts, ends, strict=True)}
        where = [
            (self.at.owner(version), part)
            for version, owned in self.ownership.owners(wanted).items()
            for part in owned.tolist()
        ]
        loaded = parallel.each(lambda at: self._load(*at), where, overlap=self.store.overlap_calls)
        for (_, part), (keys_, values) in zip(where, loaded, strict=True):
            if keys_.size == 0:
                continue
            lo, hi = span[part]
            sel = order[lo:hi]
            pos = np.minimum(np.searchsorted(keys_, svs[sel]), keys_.size - 1)
            hit = keys_[pos] == svs[sel]
            bodies[sel[hit]] = values[pos[hit]]
            found[sel[hit]] = True
        return bodies, found

    def update(self, svs: np.ndarray, bodies: np.ndarray) -> None:
        """Set ``svs -> bodies`` at the bound (open) node (whole partitions are rewritten;
        later pairs win over earlier ones and over what the partition held)."""
        svs = np.asarray(svs, dtype=np.uint64)
        bodies = np.asarray(bodies, dtype=np.uint64)
        parts = partitions(svs, self.bits)
        order = np.argsort(parts, kind="stable")
        svs, bodies, parts = svs[order], bodies[order], parts[order]
        touched, starts = np.unique(parts, return_index=True)
        ends = np.append(starts[1:], parts.size)
        owners = self.ownership.owners(touched)
        owner_of = {int(p): v for v, owned in owners.items() for p in owned}
        node = self.at.node

        def current(part: int) -> tuple[np.ndarray, np.ndarray]:
            version = owner_of.get(part)
            if version is None:
                return np.empty(0, np.uint64), np.empty(0, np.uint64)
            return self._load(self.at.owner(version), part)

        parts = touched.tolist()
        for part, (keys_, values), lo, hi in zip(
            parts,
            parallel.each(current, parts, overlap=self.store.overlap_calls),
            starts.tolist(),
            ends.tolist(),
            strict=True,
        ):
            new_keys, new_values = _merge_sorted(keys_, values, svs[lo:hi], bodies[lo:hi])
            out = io.BytesIO()
            np.savez(out, sv=new_keys, body=new_values)
            self.store.put(partition_path(self.base, node.uuid, part), out.getvalue())
        self.ownership.add(touched)

    def partition_at(self, part: int) -> tuple[np.ndarray, np.ndarray]:
        """The entries (ids sorted) of partition ``part`` as a read at the bound version
        sees them. Where merge parents wrote it along different paths (a read would
        conflict), every path's entries, later versions' winning: a diff must not fail."""
        conflicts: dict[int, list[int]] = {}
        owners = self.ownership.owners(np.array([part], dtype=np.uint64), conflicts)
        versions = sorted({*owners, *conflicts.get(part, [])})
        found = [self._load(self.at.owner(v), part) for v in versions]
        keys_, values = np.empty(0, np.uint64), np.empty(0, np.uint64)
        for more_keys, more_values in found:
            keys_, values = _merge_sorted(keys_, values, more_keys, more_values)
        return keys_, values

    def entries(self, ordered: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Every entry visible at the bound node, sorted by id unless ``ordered`` is
        false (a ranking by value needs no id order)."""
        all_parts = np.arange(1 << self.bits, dtype=np.uint64)
        where = [
            (self.at.owner(version), int(part))
            for version, owned in self.ownership.owners(all_parts).items()
            for part in owned
        ]
        if not where:
            return np.empty(0, np.uint64), np.empty(0, np.uint64)
        loaded = parallel.each(lambda at: self._load(*at), where, overlap=self.store.overlap_calls)
        k = np.concatenate([keys_ for keys_, _ in loaded])
        v = np.concatenate([values for _, values in loaded])
        if not ordered:
            return k, v
        order = np.argsort(k)
        return k[order], v[order]


#: numpy parses an array header with ``ast.literal_eval``, which CPython 3.11 does not
#: make safe across threads (gh-106905: "AST constructor recursion depth mismatch"
#: under the parallel partition loads); parses take turns.
_PARSE_LOCK = threading.Lock()

#: The one header ``np.savez`` writes for a 1-D little-endian uint64 array (``.npy``
#: format 1.0, padded with spaces to a multiple of 64 bytes): every partition's.
_UINT64_HEADER = re.compile(
    rb"\x93NUMPY\x01\x00..\{'descr': '<u8', 'fortran_order': False, 'shape': \((\d+),\), \} *\n",
    re.DOTALL,
)


def _parse_partition(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A partition's ids and values (read-only arrays). An edit or a write reads hundreds
    of partitions at an open node, where nothing is cached: their headers are matched
    here (no lock, no ``ast``: a fifth of the cost of ``np.load``), and anything but the
    form this module writes goes through ``np.load``."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        arrays = [_uint64_array(archive.read(name)) for name in ("sv.npy", "body.npy")]
    sv, body = arrays
    if sv is not None and body is not None:
        return sv, body
    with _PARSE_LOCK, np.load(io.BytesIO(data)) as npz:
        return npz["sv"], npz["body"]


def _uint64_array(member: bytes) -> np.ndarray | None:
    header = _UINT64_HEADER.match(member)
    if header is None:
        return None
    count = int(header[1])
    if len(member) != header.end() + 8 * count:
        return None
    return np.frombuffer(member, dtype="<u8", count=count, offset=header.end())


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
