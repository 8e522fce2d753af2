"""The imageblk family: uint8blk, uint16blk, uint32blk, uint64blk, float32blk, rgba8blk.

Voxels live in versioned zarr v3 chunk arrays (:mod:`app.volumes.arrays`); the per-version
extents are keyed records (:mod:`app.storage.keyed`). Pyramids are separate instances named
``<name>_1``, ``<name>_2``..., each 2x down, as neuroglancer's DVID source expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from fastapi import APIRouter

from app.datatypes import register
from app.datatypes.base import parse_bool
from app.datatypes.imageblk.pyramid import downsample_mean, level_name
from app.errors import BadRequest
from app.volumes.base import Layout, VolumeData

HELP = (Path(__file__).parent / "help.txt").read_text()
DEFAULT_BLOCK_SIZE = (32, 32, 32)


def _values(dtype: str) -> list[dict[str, str]]:
    return [{"DataType": dtype, "Label": dtype}]


def _channels(*labels: str) -> list[dict[str, str]]:
    return [{"DataType": "uint8", "Label": label} for label in labels]


class ImageBlock(VolumeData):
    """One imageblk voxel type; the six share routes and storage and differ in class
    variables (and rgba8blk in how its voxels are averaged and presented)."""

    type_version = "0.2"
    help_text = HELP
    default_compression = "lz4"
    #: Whether instances may be created with jpeg compression.
    jpeg_ok: ClassVar[bool] = False

    @classmethod
    def type_url(cls) -> str:
        # DVID names image types by their source file, e.g. .../imageblk/uint8.go
        return f"github.com/janelia-flyem/dvid/datatype/imageblk/{cls.typename[:-3]}.go"

    @classmethod
    def own_routes(cls) -> APIRouter:
        from app.datatypes.imageblk.routes import router

        return router

    @classmethod
    def parse_settings(cls, config: dict[str, str]) -> dict:
        settings = cls.parse_volume_settings(config)
        try:
            background: float | int = float(config.get("background", "0"))
        except ValueError:
            raise BadRequest("setting 'Background' must be a number") from None
        if cls.dtype.kind in "ui":
            info = np.iinfo(cls.dtype)
            if background != int(background) or not info.min <= background <= info.max:
                raise BadRequest(f"Background {background} does not fit {cls.dtype.name}")
            background = int(background)
        settings["Background"] = background
        parse_bool(config.get("interpolable", "true"), "Interpolable")
        return settings

    @classmethod
    def check_compression(cls, compression: str) -> None:
        if compression.startswith("jpeg") and not cls.jpeg_ok:
            raise BadRequest("jpeg compression is only possible for uint8blk")

    def post_info(self) -> None:
        raise BadRequest("imageblk instances do not accept POST /info")

    def downsample(self, volume: np.ndarray) -> np.ndarray:
        """The next pyramid level of a ZYX volume with even sides."""
        return downsample_mean(volume)

    def pyramid_source(self, level: int) -> tuple[VolumeData, int] | None:
        """Level k of the pyramid is the instance ``<name>_k`` of the same type (for a
        proxy, its remote's level k)."""
        if self.proxy is not None:
            return super().pyramid_source(level)
        if level == 0:
            return self, 0
        inst = self.repo.instances.get(level_name(self.instance, level))
        if inst is None or inst.typename != self.typename:
            return None
        return self.sibling(inst), 0

    def pyramid_missing(self, level: int) -> str:
        if self.proxy is not None:
            return super().pyramid_missing(level)
        return f"no {self.typename} instance {level_name(self.instance, level)}"


@register
class Uint8Blk(ImageBlock):
    typename = "uint8blk"
    dtype = np.dtype("<u1")
    values = _values("uint8")
    jpeg_ok = True

    def precomputed_layout(self) -> Layout:
        if self.instance.compression.startswith("jpeg"):
            return Layout("image", self.dtype.name, 1, "jpeg")
        return super().precomputed_layout()


@register
class Uint16Blk(ImageBlock):
    typename = "uint16blk"
    dtype = np.dtype("<u2")
    values = _values("uint16")


@register
class Uint32Blk(ImageBlock):
    typename = "uint32blk"
    dtype = np.dtype("<u4")
    values = _values("uint32")


@register
class Uint64Blk(ImageBlock):
    typename = "uint64blk"
    dtype = np.dtype("<u8")
    values = _values("uint64")


@register
class Float32Blk(ImageBlock):
    typename = "float32blk"
    dtype = np.dtype("<f4")
    values = _values("float32")


@register
class Rgba8Blk(ImageBlock):
    """rgba8 voxels are stored as little-endian uint32: bytes r, g, b, a."""

    typename = "rgba8blk"
    dtype = np.dtype("<u4")
    values = _channels("red", "green", "blue", "alpha")

    def downsample(self, volume: np.ndarray) -> np.ndarray:
        return downsample_mean(volume, channels=4)

    def precomputed_layout(self) -> Layout:
        return Layout("image", "uint8", 4, "raw")

    def encode_precomputed(self, voxels: np.ndarray, encoding: str) -> bytes:
        # [x, y, z, channel], x fastest: channel planes one after another.
        nz, ny, nx = voxels.shape
        rgba = np.ascontiguousarray(voxels).view(np.uint8).reshape(nz, ny, nx, 4)
        return np.ascontiguousarray(np.moveaxis(rgba, 3, 0)).tobytes()


__all__ = [
    "Float32Blk",
    "ImageBlock",
    "Rgba8Blk",
    "Uint8Blk",
    "Uint16Blk",
    "Uint32Blk",
    "Uint64Blk",
]
