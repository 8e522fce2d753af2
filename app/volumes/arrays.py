"""Versioned chunk arrays: one zarr v3 array per (instance, scale, version node), written
and read with tensorstore on the instance's store, holding only the chunks that node wrote.

A read at node N asks :class:`ChunkOwnership` which ancestor holds each chunk, then reads
those chunks from those nodes' arrays concurrently, as one tensorstore overlay of the
arrays copied into the answer; chunks no ancestor wrote are the background value. The
arrays of locked nodes keep the chunks they decode in a bounded chunk cache, since those
never change. A write at an open node writes whole chunks (partial ones are read, merged
and rewritten) and then records them as the node's own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import tensorstore as ts

from app.dag import Node
from app.storage.journal import Stage, Transaction
from app.volumes import keys
from app.volumes.geometry import COORD_LIMIT, BlockGrid, Box, Vec, pack, unpack, vec
from app.volumes.ownership import ChunkOwnership
from backends import ObjectStore

#: Storage compression setting -> zarr v3 codecs after "bytes".
_CODECS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "gzip": [{"name": "gzip", "configuration": {"level": 5}}],
    "lz4": [
        {"name": "blosc", "configuration": {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"}}
    ],
    "zstd": [{"name": "zstd", "configuration": {"level": 3}}],
}


def codecs_for(compression: str) -> str:
    """The chunk codec for a DVID compression setting (jpeg and snappy store as lz4:
    JPEG is produced on demand, and zarr has no snappy codec)."""
    fmt = compression.partition(":")[0]
    return {"none": "none", "gzip": "gzip"}.get(fmt, "lz4")


@dataclass(frozen=True)
class VolumeSpec:
    """What a chunk array holds: voxel type, block shape, background, codec."""

    dtype: np.dtype
    block_size: Vec
    background: float | int = 0
    codec: str = "lz4"

    @property
    def grid(self) -> BlockGrid:
        return BlockGrid(self.block_size)

    def zarr_metadata(self) -> dict[str, Any]:
        bx, by, bz = self.block_size
        offsets = self.offsets()
        codecs = [{"name": "bytes", "configuration": {"endian": "little"}}]
        for codec in _CODECS[self.codec]:
            if codec["name"] == "blosc":
                codec = {
                    "name": "blosc",
                    "configuration": {**codec["configuration"], "typesize": self.dtype.itemsize},
                }
            codecs.append(codec)
        return {
            "shape": [2 * o for o in offsets],
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [bz, by, bx]}},
            "chunk_key_encoding": {"name": "default"},
            "data_type": self.dtype.name,
            "fill_value": self.background,
            "codecs": codecs,
            "dimension_names": ["z", "y", "x"],
        }

    def offsets(self) -> tuple[int, int, int]:
        """Index of voxel 0 along z, y, x: a block multiple at least 2^30, so that signed
        voxel coordinates map to non-negative array indices on block boundaries."""
        bx, by, bz = self.block_size
        return vec(-(-COORD_LIMIT // b) * b for b in (bz, by, bx))


class Voxels(Protocol):
    """One scale of a volume instance as its routes use it: a versioned chunk array
    (:class:`VersionedVolume`), or a remote read through a proxy
    (:class:`app.volumes.proxy.ProxyVolume`)."""

    grid: BlockGrid

    def read(self, box: Box) -> np.ndarray: ...

    def read_blocks(self, blocks: np.ndarray) -> list[tuple[Vec, np.ndarray]]: ...

    def write(self, box: Box, data: np.ndarray) -> None: ...

    def write_blocks(self, blocks: list[tuple[Vec, np.ndarray]]) -> None: ...


class ArrayHandles:
    """Open tensorstore arrays, shared by all requests of a process (bounded LRU)."""

    def __init__(self, capacity: int = 512, chunk_cache_bytes: int = 0) -> None:
        self.context = ts.Context()
        self.capacity = capacity
        self.chunk_cache_bytes = chunk_cache_bytes
        self._handles: OrderedDict[tuple[str, VolumeSpec, int], ts.TensorStore] = OrderedDict()
        self._lock = threading.Lock()
        self._by_path: OrderedDict[
            tuple[int, str, VolumeSpec, bool], tuple[ObjectStore, ts.TensorStore]
        ] = OrderedDict()
        self._children: dict[tuple[str, int], ts.Context] = {}

    def _child_context(self, context: ts.Context, purpose: str) -> ts.Context:
        """``context`` with one resource changed, made once per parent and ``purpose``:

        * ``staging``, for a transaction's stage in a local folder: up to 64 chunk files
          written at once, not tensorstore's default of 4. Each staged chunk file and its
          folder are synced (:class:`app.storage.journal.Stage` says why), and the syncs
          are waits for the device, not work for the CPU: the 64 chunks of a 256³ POST
          were staged 16 rounds of 4 syncs deep (in-process into a fresh stage, medians
          of 10 at load 2.4: 52 -> 35 ms).
        * ``immutable``, for arrays of locked versions: a cache pool of
          ``chunk_cache_bytes`` holding decoded chunks, shared by every such array on
          the parent's store. Their chunks never change, so a cached chunk is never
          checked again; a 256³ read that finds its 64 chunks there copies them (about
          10 ms) instead of reading and decoding them (20-25 ms, same run)."""
        resources = {
            "staging": {"file_io_concurrency": {"limit": 64}},
            "immutable": {"cache_pool": {"total_bytes_limit": self.chunk_cache_bytes}},
        }[purpose]
        with self._lock:
            child = self._children.get((purpose, id(context)))
            if child is None:  # the child holds its parent: that id is not reused
                child = ts.Context(resources, parent=context)
                self._children[(purpose, id(context))] = child
            return child

    def open(
        self,
        kvstore: dict[str, Any],
        spec: VolumeSpec,
        create: bool,
        context: Any = None,
        staging: bool = False,
        immutable: bool = False,
    ) -> ts.TensorStore:
        """A handle on the array at ``kvstore``. A ``staging`` array (a transaction's,
        used once) is not kept, and stores chunks equal to the background too: its
        chunks replace whatever the final array holds. It writes no metadata either: the
        stage holds chunks only, and the final array's metadata exists before anything
        is staged for it (:meth:`VersionedVolume.stage_array`). An ``immutable`` array
        (a locked version's) keeps the chunks it reads in the chunk cache, if there is
        one."""
        context = context or self.context
        if staging and kvstore.get("driver") == "file":
            context = self._child_context(context, "staging")
        cached = immutable and self.chunk_cache_bytes > 0
        if cached:
            context = self._child_context(context, "immutable")
        # Not repr(spec): printing its dtype took most of a lookup (6 of 9 µs).
        key = (repr(sorted(kvstore.items())), spec, id(context))
        with self._lock:
            handle = self._handles.get(key)
            if handle is not None:
                self._handles.move_to_end(key)
                return handle
        opened = ts.open(
            {
                "driver": "zarr3",
                "kvstore": kvstore,
                "metadata": spec.zarr_metadata(),
                "store_data_equal_to_fill_value": staging,
                # Tensorstore's default checks a cached chunk against the store on every
                # read; a locked version's chunks never change.
                "recheck_cached_data": not cached,
            },
            context=context,
            open=True,
            create=create and not staging,
            assume_metadata=staging,
        ).result()
        oz, oy, ox = spec.offsets()
        handle = opened[ts.d[:].translate_by[-oz, -oy, -ox]]
        if staging:
            return handle
        with self._lock:
            self._handles[key] = handle
            while len(self._handles) > self.capacity:
                self._handles.popitem(last=False)
        return handle

    def existing(
        self, store: ObjectStore, path: str, spec: VolumeSpec, immutable: bool = False
    ) -> ts.TensorStore:
        """A handle on ``store``'s existing array at ``path`` (``immutable``: see
        :meth:`open`), found by that path: a read at depth 100 reads the arrays of 64
        versions, and making each one's kvstore spec and key for :meth:`open` took longer
        than finding which versions hold the chunks (0.6 ms against 0.3 ms; 0.09 ms found
        by path)."""
        key = (id(store), path, spec, immutable)  # kept with its handle: the id is not reused
        with self._lock:
            found = self._by_path.get(key)
            if found is not None and found[0] is store:
                self._by_path.move_to_end(key)
                return found[1]
        kvstore = store.tensorstore_kvstore(path)
        handle = self.open(kvstore, spec, False, store.tensorstore_context(), immutable=immutable)
        with self._lock:
            self._by_path[key] = (store, handle)
            while len(self._by_path) > self.capacity:
                self._by_path.popitem(last=False)
        return handle


def chunk_object(store: ObjectStore, base: str, node_uuid: str, index: Vec) -> bytes | None:
    """The stored (encoded) bytes of the chunk at array position ``index`` (z, y, x) of
    the array ``node_uuid`` wrote under ``base``, or None if it holds none (never written,
    or all background). Read as an object where tensorstore shares the store's keys, else
    through tensorstore's own kvstore (the in-memory store)."""
    path = keys.chunk(base, node_uuid, index)
    if store.tensorstore_shares_keys():
        blob = store.get(path)
        return None if blob is None else blob.data
    spec = store.tensorstore_kvstore(keys.node_array(base, node_uuid))
    kvstore = ts.KvStore.open(spec, context=store.tensorstore_context()).result()
    found = kvstore.read(path[len(keys.node_array(base, node_uuid)) :]).result()
    return bytes(found.value) if found.state == "value" else None


def _zyx(box: Box) -> tuple[slice, slice, slice]:
    (x0, y0, z0), (x1, y1, z1) = box.offset, box.end
    return slice(z0, z1), slice(y0, y1), slice(x0, x1)


#: The pseudo-version of chunks staged by the running transaction (never a VersionID).
STAGED = -1


class VersionedVolume:
    """One instance's voxels at one scale, copy-on-write per version node, as seen from
    the version it is bound to.

    Inside a transaction, writes go to the transaction's stage (published whole at its
    commit) and reads see the chunks staged so far (read-your-writes)."""

    def __init__(
        self,
        store: ObjectStore,
        base: str,
        spec: VolumeSpec,
        ownership: ChunkOwnership,
        arrays: ArrayHandles,
        txn: Transaction | None = None,
    ) -> None:
        self.store = store
        self.base = base
        self.spec = spec
        self.grid = spec.grid
        self.ownership = ownership
        self.at = ownership.at
        self.arrays = arrays
        self.txn = txn
        self._path = keys.node_array(base, self.at.node.uuid)
        self._stage: ts.TensorStore | None = None

    def _array(self, node: Node) -> ts.TensorStore:
        """``node``'s array; a locked node's keeps what it reads in the chunk cache (every
        ancestor of the bound node is locked, and so is the node once committed)."""
        path = keys.node_array(self.base, node.uuid)
        return self.arrays.existing(self.store, path, self.spec, not self.at.is_open(node))

    def _node_array(self) -> ts.TensorStore:
        """The bound node's own array, created if it has none yet."""
        kvstore = self.store.tensorstore_kvstore(self._path)
        return self.arrays.open(kvstore, self.spec, True, self.store.tensorstore_context())

    def _write_array(self) -> ts.TensorStore:
        """Where this request writes: its transaction's stage, else the node's array."""
        if self.txn is None:
            return self._node_array()
        if self._stage is None:
            self._stage = self.stage_array(self.txn.stage_path(self._path))
        return self._stage

    def stage_array(self, path: str) -> ts.TensorStore:
        """This node's array staged at ``path``: chunks only. The node's own array (its
        ``zarr.json``) is created first, once per process, outside any transaction: an
        empty array is harmless, and publishing then moves chunks alone (each staged
        ``zarr.json`` was written, synced and renamed over an equal one at every POST:
        a 256³ stage write took 21.6 ms with it, 19.5 ms without, medians of 12)."""
        self._node_array()
        kvstore = self.store.tensorstore_kvstore(path)
        context = self.store.tensorstore_context()
        return self.arrays.open(kvstore, self.spec, True, context, staging=True)

    def _owner_array(self, version: int) -> ts.TensorStore:
        if version == STAGED:
            return self._write_array()
        return self._array(self.at.owner(version))

    def _staged(self) -> set[int]:
        """Chunk ids the running transaction staged in this array."""
        return self.txn.staged.setdefault(self._path, set()) if self.txn is not None else set()

    def _owners(self, ids: np.ndarray) -> dict[int, np.ndarray]:
        owners = self.ownership.owners(ids)
        staged = self._staged()
        if not staged:
            return owners
        mine = np.fromiter(staged, dtype=np.uint64, count=len(staged))
        found = {}
        for version, owned in owners.items():
            rest = owned[~np.isin(owned, mine)]
            if rest.size:
                found[version] = rest
        hits = ids.astype(np.uint64)[np.isin(ids.astype(np.uint64), mine)]
        if hits.size:
            found[STAGED] = np.unique(hits)
        return found

    def owners(self, box: Box) -> dict[int, np.ndarray]:
        """Chunk ids covering ``box`` grouped by the version holding them."""
        return self._owners(pack(self.grid.blocks(box)))

    def read(self, box: Box) -> np.ndarray:
        """The voxels of ``box`` (ZYX array) as seen at the bound version.

        The answer is one virtual array (``ts.overlay``) copied in one call into an
        array numpy allocated, so that tensorstore decodes every chunk in parallel
        straight into the answer, with no per-chunk result copied into place (a kept
        256³ answer lives in fresh memory, whose page faults cost a tenth of the read on
        a VM; app/buffers.py says why numpy is not asked for huge pages). If one
        version holds at least half the box's chunks, its array over the whole box is
        the bottom layer (chunks it lacks read as background); the chunks other versions
        hold are laid over it, later layers winning. The bottom layer may also fetch
        chunks a nearer version shadows, or probe chunks its version never wrote: at
        most twice the chunk reads, against assembling every chunk one by one (a third
        slower for a mostly-inherited 256³ read). Without such a version, chunks nobody
        wrote come from a background layer."""
        zyx = _zyx(box)
        origin = [s.start for s in zyx]
        owners = self.owners(box)
        lo, hi = self.grid.block_range(box)
        nblocks = (hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2])
        major = max(owners, key=lambda version: len(owners[version]), default=None)
        layers: list[ts.TensorStore] = []
        covered = 0
        if major is not None and 2 * len(owners[major]) >= nblocks:
            layers.append(self._owner_array(major)[zyx])
            covered = box.voxels
            del owners[major]
        if owners:  # one layer per chunk of the other versions
            arrays = [self._owner_array(version) for version in owners]
            held = list(owners.values())
            which = np.repeat(np.arange(len(held)), [len(ids) for ids in held]).tolist()
            parts = self._parts(np.concatenate(held), box)
            covered += int(np.prod(parts[:, 3:] - parts[:, :3], axis=1).sum())
            for k, (z0, y0, x0, z1, y1, x1) in zip(which, parts.tolist(), strict=True):
                layers.append(arrays[k][z0:z1, y0:y1, x0:x1])
        if covered < box.voxels:  # chunks no version wrote read as the background
            # One value seen everywhere (a zero-stride view): no 16 MiB to fill.
            value = np.array(self.spec.background, dtype=self.spec.dtype)
            background = ts.array(np.broadcast_to(value, box.shape_zyx), copy=False)
            layers.insert(0, background.translate_to[origin])
        source = layers[0] if len(layers) == 1 else ts.overlay(layers)[zyx]
        answer = np.empty(box.shape_zyx, dtype=self.spec.dtype)
        ts.array(answer, copy=False, write=True).translate_to[origin].write(source).result()
        return answer

    def _parts(self, ids: np.ndarray, box: Box) -> np.ndarray:
        """The part of ``box`` each chunk of ``ids`` (chunks covering it) holds, as rows of
        array bounds z0, y0, x0, z1, y1, x1: computed for all at once, as Python geometry
        per chunk took longer than the rest of a 64-chunk read's set-up."""
        size = np.array(self.grid.block_size, dtype=np.int64)
        start = unpack(ids) * size
        low = np.maximum(start, box.offset)
        high = np.minimum(start + size, box.end)
        return np.concatenate([low[:, ::-1], high[:, ::-1]], axis=1)

    def read_blocks(self, blocks: np.ndarray) -> list[tuple[Vec, np.ndarray]]:
        """Existing blocks among ``blocks`` (n, 3), each as (coordinate, ZYX voxels), in
        the order given; blocks no version wrote are left out."""
        ids = pack(blocks)
        owners = self._owners(ids)
        owner_of = {int(i): v for v, owned in owners.items() for i in owned}
        pending = []
        with ts.Batch() as batch:
            for block, chunk in zip(blocks, ids, strict=True):
                version = owner_of.get(int(chunk))
                if version is None:
                    continue
                coord = vec(block)
                array = self._owner_array(version)
                pending.append((coord, array[_zyx(self.grid.block_box(coord))].read(batch=batch)))
        return [(coord, future.result()) for coord, future in pending]

    def write(self, box: Box, data: np.ndarray) -> None:
        """Write ``data`` (ZYX, shaped like ``box``) at the bound (open) version."""
        aligned = self.grid.aligned(box)
        if aligned != box:
            merged = self.read(aligned)
            merged[box.slices_in(aligned)] = data
            data = merged
        self._write_array()[_zyx(aligned)].write(data).result()
        self._record(pack(self.grid.blocks(aligned)))

    def write_blocks(self, blocks: list[tuple[Vec, np.ndarray]]) -> None:
        """Write whole blocks at the bound (open) version."""
        self._record(self._put_blocks(self._write_array(), blocks))

    def stage_blocks(self, stage: Stage, blocks: list[tuple[Vec, np.ndarray]]) -> None:
        """Encode and store whole blocks into ``stage`` before its transaction holds the
        lock (:meth:`app.storage.journal.Journal.prestage`); :meth:`adopt_staged` inside
        that transaction then counts them as written."""
        ids = self._put_blocks(self.staging_array(stage), blocks)
        self.prestaged(stage, ids)

    def staging_array(self, stage: Stage) -> ts.TensorStore:
        """This array's chunks in ``stage``, to write whole blocks into; what is written
        there counts once :meth:`prestaged` names it and :meth:`adopt_staged` adopts it."""
        return self.stage_array(stage.path(self._path))

    def stage_box(self, array: ts.TensorStore, box: Box, voxels: np.ndarray) -> None:
        """Write the block-aligned ``box`` (ZYX ``voxels``) into a :meth:`staging_array`
        in one call: tensorstore cuts and encodes its chunks in parallel."""
        array[_zyx(box)].write(voxels).result()

    def prestaged(self, stage: Stage, ids: np.ndarray) -> None:
        """Record chunks ``ids`` as written into ``stage`` (for :meth:`adopt_staged`)."""
        stage.prestaged.setdefault(self._path, set()).update(int(i) for i in ids)

    def adopt_staged(self) -> None:
        """Inside the transaction given a prestaged stage: from now on the chunks staged
        there for this array are its writes (reads see them; the commit publishes them
        as the node's own). Reads before this see only what the version holds."""
        assert self.txn is not None, "adopting staged chunks needs the transaction"
        ids = self.txn.stage.prestaged.pop(self._path, set())
        self._record(np.fromiter(ids, dtype=np.uint64, count=len(ids)))

    def _put_blocks(
        self, array: ts.TensorStore, blocks: list[tuple[Vec, np.ndarray]]
    ) -> np.ndarray:
        """Write whole blocks into ``array`` concurrently; their chunk ids."""
        futures = [array[_zyx(self.grid.block_box(c))].write(v) for c, v in blocks]
        for future in futures:
            future.result()
        return pack(np.array([c for c, _ in blocks], dtype=np.int64).reshape(-1, 3))

    def _record(self, ids: np.ndarray) -> None:
        """Count written chunks as the node's own (in a transaction: once it commits)."""
        self._staged().update(int(i) for i in ids)
        self.ownership.add(ids)
