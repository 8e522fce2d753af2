"""Array handles found by store and path (app.volumes.arrays.ArrayHandles.existing): each
store's own array, however many stores a process holds with the same paths."""

from __future__ import annotations

import numpy as np

from app.volumes.arrays import ArrayHandles, VolumeSpec
from backends.memory import MemoryStore

SPEC = VolumeSpec(np.dtype(np.uint8), (4, 4, 4))
PATH = "data/a/s0/node/"


def _write(handles: ArrayHandles, store: MemoryStore, value: int) -> None:
    kvstore = store.tensorstore_kvstore(PATH)
    array = handles.open(kvstore, SPEC, True, store.tensorstore_context())
    array[0:4, 0:4, 0:4].write(np.full((4, 4, 4), value, np.uint8)).result()


def test_each_store_reads_its_own_array() -> None:
    handles = ArrayHandles()
    stores = [MemoryStore(), MemoryStore()]
    for value, store in enumerate(stores, start=1):
        _write(handles, store, value)
    for _ in range(2):  # opened, then found again
        for value, store in enumerate(stores, start=1):
            voxels = handles.existing(store, PATH, SPEC)[0:4, 0:4, 0:4].read().result()
            assert (voxels == value).all()
    assert handles.existing(stores[0], PATH, SPEC) is handles.existing(stores[0], PATH, SPEC)
