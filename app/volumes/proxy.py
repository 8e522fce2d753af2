"""Proxy instances: a volume type's voxels read from a remote service (BOSS, BrainMaps)
instead of the instance's chunk arrays.

At creation the remote's metadata (voxel type, voxel size, extents and resolution
levels) is read once and kept in the instance's settings under ``Proxy``; credentials
stay in the server configuration. Reads go through :class:`ProxyVolume`, which serves the
same calls as a chunk array (``grid``, ``read``, ``read_blocks``) from blocks of the
instance's grid, fetched from the remote in as few requests as cover them and kept in the
process's remote cache: the remote is not versioned here, so its voxels never change and
every version node sees the same data. Writes are refused.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import numpy as np

from app.cache import LRUCache
from app.errors import BadRequest
from app.remotes import creating_from
from app.volumes.geometry import BlockGrid, Box, Vec, vec
from backends.remote import (
    SCHEMES,
    RemoteLevel,
    RemoteVolume,
)

if TYPE_CHECKING:
    from app.services import Services

#: Scattered blocks are fetched one request each when they fill less of their bounding
#: box than this; denser sets are fetched as that box in one (split) read.
DENSE_FILL = 0.5


def parse_proxy(url: Any) -> dict[str, Any]:
    """The ``proxy`` creation setting: a remote URL, checked for its scheme here and for
    the rest by the remote's backend at :func:`describe_remote`."""
    if not isinstance(url, str) or not url.startswith(SCHEMES):
        raise BadRequest(
            f"setting 'proxy' must be boss://<collection>/<experiment>/<channel> or "
            f"brainmaps://<volume id>, not {url!r}"
        )
    return {"URL": url}


def describe_remote(services: Services, url: str, dtype: np.dtype, typename: str) -> dict:
    """Read the remote's metadata for a new proxy instance of ``typename`` (whose voxels
    are ``dtype``): the ``Proxy`` settings. 400 when the remote has no such volume, refuses
    the credentials, or holds another voxel type; 502/504 when it cannot be reached."""
    with creating_from(f"proxy {url}"):
        meta = services.remote(url).metadata()
    if meta.dtype != dtype:
        raise BadRequest(
            f"cannot proxy {url} as {typename}: the remote holds {meta.dtype.name} voxels, "
            f"{typename} holds {dtype.name}"
        )
    if not meta.levels:
        raise BadRequest(f"cannot proxy {url}: the remote lists no resolution levels")
    return {
        "URL": url,
        "VoxelUnit": meta.voxel_unit,
        "Levels": [_level_json(lv) for lv in meta.levels],
    }


def _level_json(level: RemoteLevel) -> dict[str, list]:
    return {
        "Offset": list(level.offset),
        "Size": list(level.size),
        "VoxelSize": list(level.voxel_size),
        "Chunk": list(level.chunk),
    }


def level_box(proxy: dict, scale: int) -> Box:
    """The voxels that exist at ``scale`` (in that scale's coordinates)."""
    level = proxy["Levels"][scale]
    return Box(vec(level["Offset"]), vec(level["Size"]))


class ProxyVolume:
    """One scale of a proxy instance, read through the remote in blocks of ``grid``."""

    def __init__(
        self,
        remote: RemoteVolume,
        scale: int,
        extent: Box,
        block_size: Vec,
        dtype: np.dtype,
        cache: LRUCache[np.ndarray],
        pool: Executor,
    ) -> None:
        self.remote = remote
        self.scale = scale
        self.extent = extent
        self.grid = BlockGrid(block_size)
        self.dtype = dtype
        self.cache = cache
        self.pool = pool
        self._key = f"{remote.url}|{scale}|{block_size}|"

    def read(self, box: Box) -> np.ndarray:
        """The voxels of ``box`` (ZYX); outside the remote's extent they are 0."""
        out = np.zeros(box.shape_zyx, dtype=self.dtype)
        inside = box.intersect(self.extent)
        if inside is None:
            return out
        for coord, voxels in self.read_blocks(self.grid.blocks(inside)):
            block = self.grid.block_box(coord)
            part = block.intersect(box)
            if part is not None:
                out[part.slices_in(box)] = voxels[part.slices_in(block)]
        return out

    def read_blocks(self, blocks: np.ndarray) -> list[tuple[Vec, np.ndarray]]:
        """The blocks among ``blocks`` (n, 3) that meet the remote's extent, each as
        (coordinate, ZYX voxels), in the order given."""
        coords = [vec(b) for b in np.asarray(blocks, dtype=np.int64).reshape(-1, 3).tolist()]
        coords = [c for c in coords if self.grid.block_box(c).intersect(self.extent) is not None]
        found = {c: self.cache.get(self._key + str(c)) for c in coords}
        missing = [c for c, v in found.items() if v is None]
        if missing:
            for coord, voxels in self._fetch(missing):
                voxels.flags.writeable = False
                self.cache.put(self._key + str(coord), voxels)
                found[coord] = voxels
        return [(c, v) for c in coords if (v := found[c]) is not None]

    def _fetch(self, coords: list[Vec]) -> list[tuple[Vec, np.ndarray]]:
        """Read ``coords`` from the remote: their bounding box in one read when they fill
        most of it, else one read per block, run concurrently."""
        boxes = [self.grid.block_box(c) for c in coords]
        span = boxes[0]
        for box in boxes[1:]:
            span = span.union(box)
        if len(boxes) * boxes[0].voxels >= DENSE_FILL * span.voxels:
            voxels = self.remote.read(self.scale, span.offset, span.size)
            return [
                (c, voxels[b.slices_in(span)].copy()) for c, b in zip(coords, boxes, strict=True)
            ]
        parts = self.pool.map(lambda b: self.remote.read(self.scale, b.offset, b.size), boxes)
        return list(zip(coords, parts, strict=True))

    def _refuse(self) -> None:
        raise BadRequest(f"{self.remote.url} is read through a proxy: it cannot be written")

    def write(self, box: Box, data: np.ndarray) -> None:
        self._refuse()

    def write_blocks(self, blocks: list[tuple[Vec, np.ndarray]]) -> None:
        self._refuse()
