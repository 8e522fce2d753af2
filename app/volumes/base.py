"""The shared base of volume datatypes (imageblk family, labelmap): DVID's volume
settings, one versioned chunk array per scale, per-version extents, and the ``Extended``
JSON neuroglancer reads."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter

from app.blocks.geometry import Box
from app.blocks.ownership import ChunkOwnership
from app.blocks.volume import VersionedVolume, VolumeSpec, codecs_for
from app.context import InstanceContext
from app.datatypes.base import DataType
from app.errors import BadRequest
from app.storage.keyed import VersionedKeys
from app.repo import Instance
from app.services import Services


def _floats(value: str, name: str) -> list[float]:
    try:
        parts = [float(p) for p in value.split(",")]
    except ValueError:
        raise BadRequest(f"setting {name!r} must be numbers separated by commas") from None
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or any(p <= 0 for p in parts):
        raise BadRequest(f"setting {name!r} must be 1 or 3 positive numbers")
    return parts


def _ints(value: str, name: str, positive: bool = False) -> list[int]:
    try:
        parts = [int(p) for p in value.split(",")]
    except ValueError:
        raise BadRequest(f"setting {name!r} must be integers separated by commas") from None
    if len(parts) == 1 and positive:
        parts *= 3
    if len(parts) != 3 or (positive and any(p <= 0 for p in parts)):
        raise BadRequest(f"setting {name!r} must be 3 {'positive ' if positive else ''}integers")
    return parts


class VolumeType(DataType):
    """A datatype whose voxels live in versioned chunk arrays, one per scale."""

    #: Voxel type as stored (little-endian).
    dtype: np.dtype
    #: ``Extended.Values``.
    values: list[dict[str, str]]
    default_block_size = "32,32,32"
    interpolable = True

    def routes(self) -> APIRouter:
        """The shared volume endpoints plus the type's own (:meth:`own_routes`)."""
        from app.datatypes.volume_routes import router as shared

        router = APIRouter()
        router.include_router(shared)
        router.include_router(self.own_routes())
        return router

    def own_routes(self) -> APIRouter:
        raise NotImplementedError

    def parse_volume_settings(self, config: dict[str, str]) -> dict:
        """BlockSize, VoxelSize, VoxelUnits, MaxDownresLevel and initial extents."""
        block_size = _ints(config.get("blocksize", self.default_block_size), "BlockSize", True)
        voxel_size = _floats(config.get("voxelsize", "8,8,8"), "VoxelSize")
        units = [u.strip() for u in config.get("voxelunits", "nanometers").split(",")]
        if len(units) == 1:
            units *= 3
        if len(units) != 3:
            raise BadRequest("setting 'VoxelUnits' must be 1 or 3 names")
        try:
            max_level = int(config.get("maxdownreslevel", "0") or 0)
        except ValueError:
            raise BadRequest("setting 'MaxDownresLevel' must be an integer") from None
        if not 0 <= max_level <= 255:
            raise BadRequest("setting 'MaxDownresLevel' must be 0 to 255")
        settings = {
            "BlockSize": block_size,
            "VoxelSize": voxel_size,
            "VoxelUnits": units,
            "Background": 0,
            "MaxDownresLevel": max_level,
        }
        for key in ("MinPoint", "MaxPoint"):
            if key.lower() in config:
                settings[key] = _ints(config[key.lower()], key)
        return settings

    # --- storage -------------------------------------------------------------------------

    def spec(self, instance: Instance) -> VolumeSpec:
        s = instance.settings
        return VolumeSpec(
            self.dtype, tuple(s["BlockSize"]), s["Background"], codecs_for(instance.compression)
        )

    def volume(self, services: Services, instance: Instance, scale: int = 0) -> VersionedVolume:
        """The chunk array of ``instance`` at ``scale``."""
        store = services.store(instance.store)
        base = f"data/{instance.data_uuid}/s{scale}"
        return VersionedVolume(
            store,
            base,
            self.spec(instance),
            ChunkOwnership(store, base, services.bitmap_cache),
            services.arrays,
        )

    def extents_store(self, services: Services, instance: Instance) -> VersionedKeys:
        return VersionedKeys(
            services.store(instance.store),
            f"data/{instance.data_uuid}/extents",
            services.index_cache,
            services.value_cache,
        )

    def seal(self, services: Services, instance: Instance, node_uuid: str) -> None:
        self.extents_store(services, instance).seal(node_uuid)

    # --- extents -------------------------------------------------------------------------

    def extents(self, ctx: InstanceContext) -> Box | None:
        """The voxel bounding box of everything written at ``ctx``'s version (at a merge,
        the union of what the parents saw)."""
        view = self.extents_store(ctx.services, ctx.instance).at(
            ctx.repo.dag, ctx.version, ctx.mutable
        )
        boxes = [_parse_extents(record) for record in view.values("extents")]
        settings = ctx.instance.settings
        if not boxes and "MinPoint" in settings and "MaxPoint" in settings:
            boxes = [_bounds(settings["MinPoint"], settings["MaxPoint"])]
        if not boxes:
            return None
        union = boxes[0]
        for box in boxes[1:]:
            union = union.union(box)
        return union

    def set_extents(self, ctx: InstanceContext, box: Box) -> None:
        lo = ",".join(str(v) for v in box.offset)
        hi = ",".join(str(e - 1) for e in box.end)
        self.extents_store(ctx.services, ctx.instance).write(
            ctx.version.uuid, "extents", f"{lo};{hi}".encode()
        )

    def grow_extents(self, ctx: InstanceContext, box: Box) -> None:
        current = self.extents(ctx)
        grown = box if current is None else current.union(box)
        if grown != current:
            self.set_extents(ctx, grown)

    def extended_json(self, ctx: InstanceContext) -> dict:
        s = ctx.instance.settings
        extents = self.extents(ctx)
        block = s["BlockSize"]
        min_point = list(extents.offset) if extents else None
        max_point = [e - 1 for e in extents.end] if extents else None
        return {
            "Values": self.values,
            "Interpolable": self.interpolable,
            "BlockSize": block,
            "VoxelSize": s["VoxelSize"],
            "VoxelUnits": s["VoxelUnits"],
            "MinPoint": min_point,
            "MaxPoint": max_point,
            "MinIndex": [p // b for p, b in zip(min_point, block, strict=True)]
            if min_point
            else None,
            "MaxIndex": [p // b for p, b in zip(max_point, block, strict=True)]
            if max_point
            else None,
            "Background": s["Background"],
            "GridStore": "",
            "ScaleLevel": 0,
            "MaxDownresLevel": s.get("MaxDownresLevel", 0),
        }

    def extra_json(self, ctx: InstanceContext) -> dict:
        extended = self.extended_json(ctx)
        return {"Extents": {"MinPoint": extended["MinPoint"], "MaxPoint": extended["MaxPoint"]}}


def _bounds(lo: list[int], hi_inclusive: list[int]) -> Box:
    return Box.from_bounds(tuple(lo), tuple(h + 1 for h in hi_inclusive))  # type: ignore[arg-type]


def _parse_extents(record: bytes) -> Box:
    """``x0,y0,z0;x1,y1,z1`` (inclusive) as stored by :meth:`ImageBlockType.set_extents`."""
    lo, hi = ([int(v) for v in part.split(",")] for part in record.decode().split(";"))
    return _bounds(lo, hi)
