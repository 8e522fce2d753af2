"""DVID's ``compression=lz4`` for voxel bodies: one raw LZ4 block, no frame and no size
prefix (the reader knows the size from the request), shared by every volume type."""

from __future__ import annotations

import lz4.block
import numpy as np


def lz4_compress(data: bytes | memoryview | np.ndarray) -> bytes:
    """Compress into one raw LZ4 block (no frame, no size prefix), as DVID's ``lz4``."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).data
    return lz4.block.compress(data, store_size=False)
