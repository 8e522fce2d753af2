"""Image encodings of voxel arrays: PNG/JPEG slices and DVID's JPEG blocks."""

from __future__ import annotations

import io
import struct
import zlib
from typing import TYPE_CHECKING

import numpy as np
import simplejpeg

from app.errors import BadRequest

if TYPE_CHECKING:  # PIL is imported where it is used: a raw chunk read needs none of it
    from PIL.Image import Image as PILImage

DEFAULT_JPEG_QUALITY = 80
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "tiff": "image/tiff", "bmp": "image/bmp"}


def parse_format(text: str | None, default: str) -> tuple[str, int]:
    """``png`` | ``jpg[:q]`` | ``jpeg[:q]`` | ``tif`` | ``tiff`` | ``bmp`` -> (name, quality)."""
    name, _, quality = (text or default).lower().partition(":")
    name = {"jpg": "jpeg", "tif": "tiff"}.get(name, name)
    if name not in MEDIA_TYPES and name != "raw":
        raise BadRequest(f"unknown image format {text!r}: use png, jpg[:quality], tif or bmp")
    if quality and (not quality.isdigit() or not 1 <= int(quality) <= 100):
        raise BadRequest(f"JPEG quality {quality!r} must be 1 to 100")
    return name, int(quality) if quality else DEFAULT_JPEG_QUALITY


def to_image(plane: np.ndarray, typename: str) -> PILImage:
    """A 2-D voxel plane as DVID renders it: 8/16-bit gray, RGBA, or the value's
    little-endian bytes as RGBA channels for 32-bit types."""
    from PIL import Image

    plane = np.ascontiguousarray(plane)
    if plane.dtype in (np.uint8, np.uint16):
        return Image.fromarray(plane.astype(plane.dtype.newbyteorder("=")))  # L or I;16
    if plane.dtype.itemsize == 4:
        rgba = plane.astype(plane.dtype.newbyteorder("<")).view(np.uint8)
        return Image.fromarray(np.ascontiguousarray(rgba.reshape(*plane.shape, 4)))  # RGBA
    raise BadRequest(f"{typename} slices can only be read as raw bytes, not as images")


def png_rgba16(plane: np.ndarray) -> bytes:
    """A uint64 plane as a 16-bit RGBA PNG whose 8 sample bytes per pixel (R hi, R lo,
    G hi, ...) are the value's little-endian bytes: DVID's rendering, which Pillow cannot
    write, so the PNG is assembled here."""
    h, w = plane.shape
    rows = np.ascontiguousarray(plane.astype("<u8")).view(np.uint8).reshape(h, w * 8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def encode(plane: np.ndarray, fmt: str, quality: int, typename: str) -> bytes:
    if fmt == "jpeg" and plane.dtype == np.uint8:
        return jpeg_gray(plane, quality)
    if fmt == "png" and plane.dtype.itemsize == 8:
        return png_rgba16(plane)
    image = to_image(plane, typename)
    out = io.BytesIO()
    if fmt == "jpeg":
        if image.mode not in ("L", "RGB"):
            raise BadRequest(f"{typename} cannot be encoded as JPEG")
        image.save(out, format="JPEG", quality=quality)
    else:
        image.save(out, format=fmt.upper())
    return out.getvalue()


def sniff(data: bytes) -> str | None:
    """``png`` or ``jpeg`` from an encoded image's signature, else None: enough to refuse
    a body that is not the image it should be without decoding it."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def decode_gray(data: bytes) -> np.ndarray:
    """An encoded image (PNG, JPEG...) as a uint8 plane; colour images are converted to
    8-bit gray as Go's ``draw.Draw`` onto a gray image converts them. 400 if undecodable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("L"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise BadRequest(f"stored image cannot be decoded: {e}") from None


def resize(plane: np.ndarray, width: int, height: int, typename: str) -> np.ndarray:
    """A gray plane resized (bilinear) to ``width`` x ``height``: isotropic reads stretch
    the coarser axis to the requested size."""
    if plane.shape == (height, width):
        return plane
    from PIL import Image

    image = to_image(plane, typename).resize((width, height), Image.Resampling.BILINEAR)
    if image.mode not in ("L", "I;16"):
        raise BadRequest(f"isotropic resizing of {typename} is not supported")
    return np.asarray(image).astype(plane.dtype)


def jpeg_gray(plane: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """A uint8 plane as a grayscale JPEG."""
    return simplejpeg.encode_jpeg(
        np.ascontiguousarray(plane)[..., np.newaxis], quality=quality, colorspace="GRAY"
    )


def jpeg_volume(volume: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """A ZYX uint8 volume as one JPEG of width nx and height ny*nz (DVID's layout for 3-D
    JPEG reads and JPEG blocks: row = z*ny + y)."""
    if volume.dtype != np.uint8:
        raise BadRequest("only uint8 volumes can be read as JPEG")
    nz, ny, nx = volume.shape
    return jpeg_gray(volume.reshape(nz * ny, nx), quality)
