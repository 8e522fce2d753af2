"""2-D images of a BrainMaps volume: the formats asked for, black images where there is
no volume, and edge images padded to the size asked for.

BrainMaps encodes its tiles itself (PNG or JPEG); a tile wholly inside a geometry is
passed on as it comes. One crossing the geometry's edge is asked for its inside part,
decoded, placed on a black image of the requested size and encoded again (DVID pads the
encoded bytes as if they were pixels, which corrupts them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.errors import BadRequest
from app.volumes import images
from app.volumes.geometry import Box
from backends.remote import RemoteError

#: The largest compression parameter per format: PNG level, JPEG quality.
LEVEL_LIMITS = {"png": 9, "jpeg": 100}


@dataclass(frozen=True)
class ImageFormat:
    """``png`` or ``jpeg``, and the PNG compression level or JPEG quality if given."""

    name: str
    level: int | None = None

    @property
    def brainmaps(self) -> str:
        """The ``imageFormat`` BrainMaps names it by."""
        return self.name.upper()

    @property
    def media_type(self) -> str:
        return images.MEDIA_TYPES[self.name]

    def encode(self, plane: np.ndarray) -> bytes:
        """A uint8 plane in this format (JPEG quality 1 at least; PNG at Pillow's level)."""
        quality = images.DEFAULT_JPEG_QUALITY if self.level is None else max(1, self.level)
        return images.encode(plane, self.name, quality, "googlevoxels")


def parse_format(text: str | None) -> ImageFormat:
    """``png[:0-9]`` (the default) or ``jpg``/``jpeg[:0-100]``; 400 otherwise."""
    name, colon, level = (text or "png").lower().partition(":")
    name = "jpeg" if name == "jpg" else name
    if name not in LEVEL_LIMITS:
        raise BadRequest(f"googlevoxels images are png[:0-9] or jpg[:0-100], not {text!r}")
    if not colon:
        return ImageFormat(name)
    if not level.isdigit() or int(level) > LEVEL_LIMITS[name]:
        raise BadRequest(f"{name} level {level!r} must be 0 to {LEVEL_LIMITS[name]}")
    return ImageFormat(name, int(level))


def blank(width: int, height: int, fmt: ImageFormat) -> bytes:
    """A black 8-bit image, DVID's answer for a tile outside the volume."""
    return fmt.encode(np.zeros((height, width), dtype=np.uint8))


def pad(encoded: bytes, box: Box, inside: Box, axes: tuple[int, int], fmt: ImageFormat) -> bytes:
    """The remote's image of ``inside`` placed where it lies in a black image of ``box``
    (both one voxel thick; ``axes`` are the image's columns and rows), encoded in ``fmt``.
    A remote image that does not decode or has another size is a :class:`RemoteError`:
    the remote answered wrongly, not the client."""
    try:
        plane = images.decode_gray(encoded)
    except BadRequest:
        raise RemoteError(f"BrainMaps answered an undecodable {fmt.brainmaps} tile") from None
    across, down = axes
    expected = (inside.size[down], inside.size[across])
    if plane.shape != expected:
        raise RemoteError(
            f"BrainMaps answered a {plane.shape[1]}x{plane.shape[0]} tile for "
            f"{expected[1]}x{expected[0]} pixels"
        )
    column = inside.offset[across] - box.offset[across]
    row = inside.offset[down] - box.offset[down]
    out = np.zeros((box.size[down], box.size[across]), dtype=np.uint8)
    out[row : row + expected[0], column : column + expected[1]] = plane
    return fmt.encode(out)
