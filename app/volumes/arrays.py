"""Versioned chunk arrays: one zarr v3 array per (instance, scale, version node), written
and read with tensorstore on the instance's store, holding only the chunks that node wrote.

A read at node N asks :class:`ChunkOwnership` which ancestor holds each chunk, then reads
those chunks from those nodes' arrays concurrently (one tensorstore batch) and assembles
them with numpy; chunks no ancestor wrote are the background value. A write at an open
node writes whole chunks (partial ones are read, merged and rewritten) and then records
them as the node's own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorstore as ts

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


class ArrayHandles:
    """Open tensorstore arrays, shared by all requests of a process (bounded LRU)."""

    def __init__(self, capacity: int = 512) -> None:
        self.context = ts.Context()
        self.capacity = capacity
        self._handles: OrderedDict[str, ts.TensorStore] = OrderedDict()
        self._lock = threading.Lock()

    def open(
        self, kvstore: dict[str, Any], spec: VolumeSpec, create: bool, context: Any = None
    ) -> ts.TensorStore:
        context = context or self.context
        key = repr((sorted(kvstore.items()), spec, id(context)))
        with self._lock:
            handle = self._handles.get(key)
            if handle is not None:
                self._handles.move_to_end(key)
                return handle
        opened = ts.open(
            {"driver": "zarr3", "kvstore": kvstore, "metadata": spec.zarr_metadata()},
            context=context,
            open=True,
            create=create,
        ).result()
        oz, oy, ox = spec.offsets()
        handle = opened[ts.d[:].translate_by[-oz, -oy, -ox]]
        with self._lock:
            self._handles[key] = handle
            while len(self._handles) > self.capacity:
                self._handles.popitem(last=False)
        return handle


def _zyx(box: Box) -> tuple[slice, slice, slice]:
    (x0, y0, z0), (x1, y1, z1) = box.offset, box.end
    return slice(z0, z1), slice(y0, y1), slice(x0, x1)


class VersionedVolume:
    """One instance's voxels at one scale, copy-on-write per version node, as seen from
    the version it is bound to."""

    def __init__(
        self,
        store: ObjectStore,
        base: str,
        spec: VolumeSpec,
        ownership: ChunkOwnership,
        arrays: ArrayHandles,
    ) -> None:
        self.store = store
        self.base = base
        self.spec = spec
        self.grid = spec.grid
        self.ownership = ownership
        self.at = ownership.at
        self.arrays = arrays

    def _array(self, node_uuid: str, create: bool = False) -> ts.TensorStore:
        kvstore = self.store.tensorstore_kvstore(keys.node_array(self.base, node_uuid))
        return self.arrays.open(kvstore, self.spec, create, self.store.tensorstore_context())

    def _owner_array(self, version: int) -> ts.TensorStore:
        return self._array(self.at.owner(version).uuid)

    def owners(self, box: Box) -> dict[int, np.ndarray]:
        """Chunk ids covering ``box`` grouped by the version holding them."""
        return self.ownership.owners(pack(self.grid.blocks(box)))

    def read(self, box: Box) -> np.ndarray:
        """The voxels of ``box`` (ZYX array) as seen at the bound version."""
        owners = self.owners(box)
        total = sum(len(ids) for ids in owners.values())
        nblocks = int(np.prod([h - a for a, h in zip(*self.grid.block_range(box), strict=True)]))
        if len(owners) == 1 and total == nblocks:
            # One version holds every chunk: tensorstore's own buffer is the answer.
            (version,) = owners
            return self._owner_array(version)[_zyx(box)].read().result()
        out = np.full(box.shape_zyx, self.spec.background, dtype=self.spec.dtype)
        if not owners:
            return out
        pending = []
        with ts.Batch() as batch:
            for version, ids in owners.items():
                array = self._owner_array(version)
                for block in unpack(ids):
                    part = self.grid.block_box(block).intersect(box)
                    if part is not None:
                        pending.append((part, array[_zyx(part)].read(batch=batch)))
        for part, future in pending:
            out[part.slices_in(box)] = future.result()
        return out

    def read_blocks(self, blocks: np.ndarray) -> list[tuple[Vec, np.ndarray]]:
        """Existing blocks among ``blocks`` (n, 3), each as (coordinate, ZYX voxels), in
        the order given; blocks no version wrote are left out."""
        ids = pack(blocks)
        owners = self.ownership.owners(ids)
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
        self._array(self.at.node.uuid, create=True)[_zyx(aligned)].write(data).result()
        self.ownership.add(pack(self.grid.blocks(aligned)))

    def write_blocks(self, blocks: list[tuple[Vec, np.ndarray]]) -> None:
        """Write whole blocks at the bound (open) version."""
        array = self._array(self.at.node.uuid, create=True)
        futures = [array[_zyx(self.grid.block_box(c))].write(v) for c, v in blocks]
        for future in futures:
            future.result()
        coords = np.array([c for c, _ in blocks], dtype=np.int64).reshape(-1, 3)
        self.ownership.add(pack(coords))
