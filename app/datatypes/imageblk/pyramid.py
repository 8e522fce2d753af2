"""Image pyramids: ``<name>_1``, ``<name>_2``... each a 2x2x2 mean of the level above."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from app.repo import Instance, Repo, new_uuid
from app.volumes.geometry import Box

if TYPE_CHECKING:
    from app.datatypes.imageblk import ImageBlock


def downsample_mean(volume: np.ndarray, channels: int = 1) -> np.ndarray:
    """2x2x2 mean of a ZYX volume with even sides; integers are rounded. With several
    ``channels``, each voxel is that many uint8 values (rgba8), averaged apart."""
    nz, ny, nx = volume.shape
    if channels > 1:
        split = volume.view(np.uint8).reshape(nz, ny, nx, channels).astype(np.float32)
        mean = split.reshape(nz // 2, 2, ny // 2, 2, nx // 2, 2, channels).mean(axis=(1, 3, 5))
        return np.rint(mean).astype(np.uint8).view(volume.dtype).reshape(nz // 2, ny // 2, nx // 2)
    mean = (
        volume.astype(np.float64).reshape(nz // 2, 2, ny // 2, 2, nx // 2, 2).mean(axis=(1, 3, 5))
    )
    if volume.dtype.kind in "ui":
        mean = np.rint(mean)
    return mean.astype(volume.dtype)


def level_name(base: Instance, level: int) -> str:
    """The name of the instance holding ``level`` of ``base``'s pyramid."""
    return f"{base.name}_{level}"


def _level_instance(data: ImageBlock, level: int) -> Instance:
    """The instance holding ``level`` of ``data``'s pyramid, created if missing (same type,
    block size, compression and store; voxel size scaled by 2^level)."""
    base = data.instance
    name = level_name(base, level)

    def edit(repo: Repo) -> Instance:
        existing = repo.instances.get(name)
        if existing is not None:
            return existing
        settings = {k: v for k, v in base.settings.items() if k not in ("MinPoint", "MaxPoint")}
        settings["VoxelSize"] = [v * 2**level for v in base.settings["VoxelSize"]]
        settings["MaxDownresLevel"] = 0
        repo.instances[name] = Instance(
            name=name,
            typename=base.typename,
            data_uuid=new_uuid(),
            repo_uuid=data.node.uuid,
            versioned=base.versioned,
            compression=base.compression,
            checksum=base.checksum,
            store=base.store,
            settings=settings,
        )
        repo.touch()
        return repo.instances[name]

    if name in data.repo.instances:
        return data.repo.instances[name]
    return data.services.catalog.update(data.repo.root, edit)


def build_pyramid(data: ImageBlock, box: Box, levels: int) -> int:
    """Rewrite ``box`` (scale-0 voxels) in each of the ``levels`` lower scales."""
    source, region = data, box
    for level in range(1, levels + 1):
        target = data.sibling(_level_instance(data, level))
        lo = [o // 2 for o in region.offset]
        hi = [-(-e // 2) for e in region.end]
        target_box = Box.from_bounds(lo, hi)
        source_box = Box.from_bounds((2 * v for v in lo), (2 * v for v in hi))
        voxels = source.volume().read(source_box)
        with target.transaction():  # each level publishes whole, before the next reads it
            target.write(target_box, data.downsample(voxels))
        source, region = target, target_box
    return levels
