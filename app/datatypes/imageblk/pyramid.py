"""Image pyramids: ``<name>_1``, ``<name>_2``... each a 2x2x2 mean of the level above."""

from __future__ import annotations

import numpy as np

from app.api.instances import make_context
from app.blocks.geometry import Box
from app.context import InstanceContext
from app.repo import Instance, Repo, new_uuid


def downsample_mean(volume: np.ndarray, rgba: bool) -> np.ndarray:
    """2x2x2 mean of a ZYX volume with even sides; integers are rounded."""
    nz, ny, nx = volume.shape
    if rgba:
        channels = volume.view(np.uint8).reshape(nz, ny, nx, 4).astype(np.float32)
        mean = channels.reshape(nz // 2, 2, ny // 2, 2, nx // 2, 2, 4).mean(axis=(1, 3, 5))
        return np.rint(mean).astype(np.uint8).view(volume.dtype).reshape(nz // 2, ny // 2, nx // 2)
    mean = (
        volume.astype(np.float64).reshape(nz // 2, 2, ny // 2, 2, nx // 2, 2).mean(axis=(1, 3, 5))
    )
    if volume.dtype.kind in "ui":
        mean = np.rint(mean)
    return mean.astype(volume.dtype)


def _level_instance(ctx: InstanceContext, level: int) -> Instance:
    """The instance holding ``level`` of ``ctx.instance``'s pyramid, created if missing
    (same type, block size, compression and store; voxel size scaled by 2^level)."""
    base = ctx.instance
    name = f"{base.name}_{level}"

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
            repo_uuid=ctx.node.uuid,
            versioned=base.versioned,
            compression=base.compression,
            checksum=base.checksum,
            store=base.store,
            settings=settings,
        )
        repo.touch()
        return repo.instances[name]

    if name in ctx.repo.instances:
        return ctx.repo.instances[name]
    return ctx.services.catalog.update(ctx.repo.root, edit)


def build_pyramid(ctx: InstanceContext, box: Box, levels: int) -> int:
    """Rewrite ``box`` (scale-0 voxels) in each of the ``levels`` lower scales."""
    source, region = ctx, box
    rgba = ctx.instance.typename == "rgba8blk"
    for level in range(1, levels + 1):
        instance = _level_instance(ctx, level)
        target = make_context(ctx.services, ctx.repo, ctx.node.uuid, instance)
        lo = tuple(o // 2 for o in region.offset)
        hi = tuple(-(-e // 2) for e in region.end)
        target_box = Box.from_bounds(lo, hi)  # type: ignore[arg-type]
        source_box = Box.from_bounds(tuple(2 * v for v in lo), tuple(2 * v for v in hi))  # type: ignore[arg-type]
        volume = source.datatype.volume(source.services, source.instance)
        data = volume.read(source.repo.dag, source.version, source.mutable, source_box)
        target.datatype.volume(target.services, instance).write(
            target.repo.dag, target.version, target_box, downsample_mean(data, rgba)
        )
        target.datatype.grow_extents(target, target_box)
        source, region = target, target_box
    return levels
