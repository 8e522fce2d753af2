"""imagetile: precomputed 2-D tiles (XY, XZ, YZ) of an image volume at several scales,
served as stored (PNG or JPEG) and stitched into arbitrary 2-D images.

Each tile is one keyed record (the encoded image bytes), the tile metadata is one more,
so both are copy-on-write per version like keyvalue values (:mod:`app.storage.keyed`).
The tiles are POSTed by clients or built from a uint8 volume by ``dvid-cloud tiles
generate`` (:mod:`app.datatypes.imagetile.generate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from fastapi import APIRouter

from app.datatypes import register
from app.datatypes.base import parse_bool
from app.datatypes.imagetile.tiles import METADATA_KEY, Metadata, TileAddress, metadata_from_record
from app.datatypes.keyed import KeyedData
from app.errors import BadRequest
from app.storage import parallel
from app.volumes import images

#: DVID's ``Format`` setting -> the stored encoding (``lz4`` tiles are not supported).
FORMATS = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg"}
#: ``Extended.Encoding``: DVID's ``imagetile.Format`` enum (LZ4, PNG, JPG).
ENCODING_NUMBERS = {"png": 1, "jpeg": 2}
NO_METADATA = "Tile metadata has not been POSTed yet.  GET requests require metadata to be POST."


@register
class ImageTile(KeyedData):
    typename = "imagetile"
    immutable_reads = frozenset({"tile", "raw"})
    type_version = "0.1"
    help_text = (Path(__file__).parent / "help.txt").read_text()
    #: Tile writes of ``tiles generate`` run as transactions; a reader at an open version
    #: completes one whose writer died (DVID writes tiles one by one, unguarded).
    transactional: ClassVar[bool] = True

    @classmethod
    def routes(cls) -> APIRouter:
        from app.datatypes.imagetile.routes import router

        return router

    @classmethod
    def parse_settings(cls, config: dict[str, str]) -> dict:
        """``Format`` (png, jpg), ``Source`` (the uint8blk ``tiles generate`` reads by
        default), ``Placeholder`` and ``Quality`` (JPEG, 1-100)."""
        fmt = config.get("format", "png").strip().lower()
        if fmt == "lz4":
            raise BadRequest("lz4 tile encoding is not supported here: use png or jpg")
        if fmt not in FORMATS:
            raise BadRequest(f"Unknown encoding specified: {fmt!r} (should be 'png' or 'jpg')")
        quality = config.get("quality", str(images.DEFAULT_JPEG_QUALITY)).strip()
        if not quality.isdigit() or not 1 <= int(quality) <= 100:
            raise BadRequest(f"setting 'Quality' must be 1 to 100, not {quality!r}")
        return {
            "Source": config.get("source", ""),
            "Placeholder": parse_bool(config.get("placeholder", "false"), "Placeholder"),
            "Encoding": FORMATS[fmt],
            "Quality": int(quality),
        }

    # --- settings --------------------------------------------------------------------------

    @property
    def encoding(self) -> str:
        """``png`` or ``jpeg``: how tiles are stored and served."""
        return str(self.settings.get("Encoding", "png"))

    @property
    def media_type(self) -> str:
        return images.MEDIA_TYPES[self.encoding]

    @property
    def quality(self) -> int:
        return int(self.settings.get("Quality", images.DEFAULT_JPEG_QUALITY))

    # --- metadata --------------------------------------------------------------------------

    def metadata(self) -> Metadata | None:
        record = self.view().get(METADATA_KEY)
        return None if record is None else metadata_from_record(record)

    def require_metadata(self, message: str = NO_METADATA) -> Metadata:
        found = self.metadata()
        if found is None:
            raise BadRequest(message)
        return found

    def set_metadata(self, metadata: Metadata) -> None:
        self.write(METADATA_KEY, metadata.to_json())

    # --- tiles -----------------------------------------------------------------------------

    def tile_bytes(self, tile: TileAddress) -> bytes | None:
        """The stored tile, or None. Negative tile coordinates never hold one (DVID)."""
        if any(c < 0 for c in tile.coord):
            return None
        return self.view().get(tile.key())

    def tile_image(self, tile: TileAddress) -> np.ndarray | None:
        data = self.tile_bytes(tile)
        return None if data is None else images.decode_gray(data)

    def tile_images(self, tiles: list[TileAddress]) -> list[np.ndarray | None]:
        """Several tiles, read overlapped (a stitched image needs a few)."""
        return parallel.each(self.tile_image, tiles)

    def encode_tile(self, plane: np.ndarray) -> bytes:
        """A uint8 plane in the instance's encoding."""
        return images.encode(plane, self.encoding, self.quality, self.typename)

    def check_tile_body(self, body: bytes) -> None:
        """400 unless ``body`` is an image in the instance's encoding (DVID stores any
        bytes, and serves them under the instance's image type)."""
        if images.sniff(body) != self.encoding:
            raise BadRequest(
                f"tile body must be a {self.encoding.upper()} image (this imagetile's Format)"
            )

    def extended_json(self) -> dict:
        """DVID's ``Properties``; the metadata parts are those at the bound version."""
        metadata = self.metadata()
        return {
            "Source": self.settings.get("Source", ""),
            "MinTileCoord": list(metadata.min_tile) if metadata else [0, 0, 0],
            "MaxTileCoord": list(metadata.max_tile) if metadata else [0, 0, 0],
            "Levels": metadata.levels_json() if metadata else None,
            "Placeholder": bool(self.settings.get("Placeholder", False)),
            "Encoding": ENCODING_NUMBERS[self.encoding],
            "Quality": self.quality,
        }


__all__ = ["ImageTile"]
