"""The imageblk family: uint8blk, uint16blk, uint32blk, uint64blk, float32blk, rgba8blk.

Voxels live in versioned zarr v3 chunk arrays (:mod:`app.blocks.volume`); the per-version
extents are keyed records (:mod:`app.storage.keyed`). Pyramids are separate instances named
``<name>_1``, ``<name>_2``..., each 2x down, as neuroglancer's DVID source expects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi import APIRouter

from app.context import InstanceContext
from app.datatypes import register
from app.datatypes.base import parse_bool
from app.datatypes.volume import VolumeType
from app.errors import BadRequest

HELP = (Path(__file__).parent / "help.txt").read_text()
DEFAULT_BLOCK_SIZE = (32, 32, 32)


class ImageBlockType(VolumeType):
    """One imageblk voxel type; all six share routes and storage."""

    version = "0.2"
    help_text = HELP
    default_compression = "lz4"

    def __init__(self, name: str, dtype: str, values: list[dict[str, str]]) -> None:
        self.name = name  # type: ignore[misc]
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.values = values

    @property
    def url(self) -> str:
        # DVID names image types by their source file, e.g. .../imageblk/uint8.go
        return f"github.com/janelia-flyem/dvid/datatype/imageblk/{self.name[:-3]}.go"

    def own_routes(self) -> APIRouter:
        from app.datatypes.imageblk.routes import router

        return router

    def parse_settings(self, config: dict[str, str]) -> dict:
        settings = self.parse_volume_settings(config)
        try:
            background = float(config.get("background", "0"))
        except ValueError:
            raise BadRequest("setting 'Background' must be a number") from None
        if self.dtype.kind in "ui":
            info = np.iinfo(self.dtype)
            if background != int(background) or not info.min <= background <= info.max:
                raise BadRequest(f"Background {background} does not fit {self.dtype.name}")
            background = int(background)
        settings["Background"] = background
        parse_bool(config.get("interpolable", "true"), "Interpolable")
        return settings

    def check_compression(self, compression: str) -> None:
        if compression.startswith("jpeg") and self.name != "uint8blk":
            raise BadRequest("jpeg compression is only possible for uint8blk")

    def post_info(self, ctx: InstanceContext) -> None:
        raise BadRequest("imageblk instances do not accept POST /info")


def _values(dtype: str) -> list[dict[str, str]]:
    return [{"DataType": dtype, "Label": dtype}]


RGBA = [{"DataType": "uint8", "Label": c} for c in ("red", "green", "blue", "alpha")]

IMAGE_TYPES = {
    t.name: register(t)
    for t in (
        ImageBlockType("uint8blk", "uint8", _values("uint8")),
        ImageBlockType("uint16blk", "uint16", _values("uint16")),
        ImageBlockType("uint32blk", "uint32", _values("uint32")),
        ImageBlockType("uint64blk", "uint64", _values("uint64")),
        ImageBlockType("float32blk", "float32", _values("float32")),
        # rgba8 voxels are stored as little-endian uint32: bytes r, g, b, a.
        ImageBlockType("rgba8blk", "uint32", RGBA),
    )
}

__all__ = ["IMAGE_TYPES", "ImageBlockType"]
