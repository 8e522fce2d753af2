"""Any volume instance, at any version, as a neuroglancer *precomputed* volume.

URL scheme (relative to ``/api/node/{uuid}/{dataname}``; ``{uuid}`` is any version
reference the server takes: a UUID or unique prefix, ``:master``, ``prefix:branch~n``)::

    GET precomputed/info                          the precomputed ``info`` JSON
    GET precomputed/{scale_key}/{x0}-{x1}_{y0}-{y1}_{z0}-{z1}   one chunk

so ``precomputed://http://HOST:PORT/api/node/{uuid}/{dataname}/precomputed`` opens it in
neuroglancer, CloudVolume, or TensorStore's ``neuroglancer_precomputed`` driver (http
kvstore with that ``base_url``). Any other file under ``precomputed/`` (``provenance``,
``transform.json``...) answers 404, which readers take as "absent".

The ``info``: one scale per level, keys ``s0``, ``s1``... Which instances and scales make
up the pyramid, the precomputed type and encoding, and how a chunk is encoded are the
volume datatype's to say (:class:`app.volumes.base.VolumeData`); today:

* labelmap: levels 0..``MaxDownresLevel`` of the instance, each with the scale-0 extents
  halved per level (rounded outward) and the voxel size doubled; ``type`` segmentation,
  uint64 *body* ids (supervoxels mapped at the version), ``compressed_segmentation``
  chunks with 8x8x8 encoding blocks.
* imageblk family: level 0 is the instance, level k the pyramid instance ``<name>_k``
  with its own extents and voxel size, for k = 1, 2... while such an instance of the same
  type exists and holds data at the version. ``raw`` chunks (little-endian, x fastest),
  ``jpeg`` for a uint8blk created with jpeg compression; rgba8blk is 4 uint8 channels.
* ``resolution`` is the VoxelSize in nanometers (converted from other VoxelUnits),
  ``voxel_offset``/``size`` the extents at the version, ``chunk_sizes`` the block size.

Chunks are named as the precomputed spec defines (voxel coordinates of the scale, the grid
starting at ``voxel_offset``, the last chunk clipped at the volume's end), and the body
holds exactly the voxels of the named box. The server does not insist on the grid: any
well-formed box up to :data:`MAX_CHUNK_VOXELS` (or one block) is answered, and voxels no
version wrote read as the instance's background (never 404), so a reader holding an older
``info`` of a growing open version still gets correct data. A malformed chunk name or an
unknown scale key answers 400. ``info`` of a version with nothing written answers 404.

Caching: chunks of a locked version of a versioned instance, named by UUID (not by a
branch reference, which moves), never change: ``Cache-Control: public, max-age=31536000,
immutable``, and :mod:`app.immutable` keeps their encoded bytes. Their ``info`` gets
``max-age=300`` (the voxel size and the pyramid instances are repo-wide settings that can
still change). Everything else is ``no-cache``. Raw and compressed_segmentation chunks are
gzipped (``Content-Encoding: gzip``) when the request accepts gzip.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass

import numpy as np

from app.errors import BadRequest, NotFound, TooLarge
from app.volumes.base import VolumeData
from app.volumes.geometry import COORD_LIMIT, Box, Vec
from app.volumes.requests import bounded

#: A chunk request may ask for at most this many voxels (or one block, if larger).
MAX_CHUNK_VOXELS = 1 << 24
IMMUTABLE = "public, max-age=31536000, immutable"
LOCKED_INFO = "public, max-age=300"
NO_CACHE = "no-cache"

_CHUNK_NAME = re.compile(r"^(-?\d+)-(-?\d+)_(-?\d+)-(-?\d+)_(-?\d+)-(-?\d+)$")
_SCALE_KEY = re.compile(r"^s(\d{1,3})$")
#: VoxelUnits -> nanometers.
_NANOMETERS = {
    "nanometers": 1.0,
    "nanometer": 1.0,
    "nm": 1.0,
    "micrometers": 1e3,
    "micrometer": 1e3,
    "microns": 1e3,
    "micron": 1e3,
    "um": 1e3,
    "millimeters": 1e6,
    "millimeter": 1e6,
    "mm": 1e6,
    "angstroms": 0.1,
    "angstrom": 0.1,
}
#: JPEG images are at most 65535 pixels high (y * z of a chunk).
_JPEG_MAX_SIDE = 65535


@dataclass(frozen=True)
class Scale:
    """One precomputed scale of the ``info``: its key, box, resolution and chunk shape."""

    key: str
    bounds: Box
    resolution: list[float]
    chunk_size: Vec


def _nanometers(data: VolumeData, scale: int = 0) -> list[float]:
    s = data.settings
    units = s.get("VoxelUnits") or ["nanometers"] * 3
    return [
        float(v) * 2**scale * _NANOMETERS.get(str(u).strip().lower(), 1.0)
        for v, u in zip(s["VoxelSize"], units, strict=True)
    ]


def _chunk_size(data: VolumeData, encoding: str) -> Vec:
    bx, by, bz = data.block_size
    if encoding == "jpeg":
        # A jpeg chunk is one image nx wide and ny*nz high: keep it within JPEG's limit
        # (halving z keeps chunks whole fractions of blocks).
        while by * bz > _JPEG_MAX_SIDE and bz > 1:
            bz = -(-bz // 2)
    return (bx, by, bz)


def _downscaled(box: Box, level: int) -> Box:
    f = 2**level
    lo = tuple(o // f for o in box.offset)
    hi = tuple(-(-e // f) for e in box.end)
    return Box.from_bounds(lo, hi)


def scales(data: VolumeData) -> list[Scale]:
    """The precomputed scales of ``data`` at its version (404 if it is empty): level k is
    the chunk-array scale and instance :meth:`VolumeData.pyramid_source` names, bounded by
    that instance's extents halved per scale, with its voxel size doubled per scale."""
    extents = data.extents()
    if extents is None:
        raise NotFound(
            f"{data.name!r} holds no voxels at version {data.node.uuid}: "
            "nothing to serve as precomputed"
        )
    encoding = data.precomputed_layout().encoding
    found = []
    for level in range(256):
        source = data.pyramid_source(level)
        if source is None:
            break
        level_data, scale = source
        level_extents = extents if level_data is data else level_data.extents()
        if level_extents is None:
            break
        found.append(
            Scale(
                f"s{level}",
                _downscaled(level_extents, scale),
                _nanometers(level_data, scale),
                _chunk_size(level_data, encoding),
            )
        )
    return found


def info(data: VolumeData) -> dict:
    """The precomputed ``info`` JSON of ``data`` at its version."""
    shape = data.precomputed_layout()
    out_scales = []
    for scale in scales(data):
        entry: dict = {
            "key": scale.key,
            "resolution": scale.resolution,
            "voxel_offset": list(scale.bounds.offset),
            "size": list(scale.bounds.size),
            "chunk_sizes": [list(scale.chunk_size)],
            "encoding": shape.encoding,
        }
        if shape.encoding == "compressed_segmentation":
            entry["compressed_segmentation_block_size"] = [8, 8, 8]
        out_scales.append(entry)
    return {
        "@type": "neuroglancer_multiscale_volume",
        "type": shape.type,
        "data_type": shape.data_type,
        "num_channels": shape.num_channels,
        "scales": out_scales,
    }


def parse_chunk_name(name: str) -> Box:
    """``x0-x1_y0-y1_z0-z1`` (end exclusive) as a box; 400 if malformed."""
    match = _CHUNK_NAME.match(name)
    if match is None:
        raise BadRequest(f"chunk name {name!r} is not x0-x1_y0-y1_z0-z1")
    x0, x1, y0, y1, z0, z1 = (int(v) for v in match.groups())
    lo, hi = (x0, y0, z0), (x1, y1, z1)
    if any(h <= a for a, h in zip(lo, hi, strict=True)):
        raise BadRequest(f"chunk {name!r} is empty: each end must exceed its start")
    if any(abs(v) > COORD_LIMIT for v in (*lo, *hi)):
        raise BadRequest(f"chunk {name!r} is outside the addressable volume (±2^30)")
    return Box.from_bounds(lo, hi)


def _level(data: VolumeData, key: str) -> tuple[VolumeData, int]:
    """The instance and chunk-array scale behind scale ``key`` (400 if none). Chunk reads
    need no extents, so this looks none up."""
    match = _SCALE_KEY.match(key)
    if match is None:
        raise BadRequest(f"unknown scale key {key!r}: keys are s0, s1, ...")
    level = int(match.group(1))
    source = data.pyramid_source(level)
    if source is None:
        raise BadRequest(f"scale {key!r} does not exist: {data.pyramid_missing(level)}")
    return source


def immutable(data: VolumeData, ref: str) -> bool:
    """Whether what ``ref`` names can never change: a locked version of a versioned
    instance, named by UUID (a branch reference such as ``:master`` moves)."""
    return not data.mutable and ":" not in ref


def chunk(
    data: VolumeData, ref: str, scale_key: str, name: str, gzip_ok: bool
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one chunk file."""
    box = parse_chunk_name(name)
    level_data, scale = _level(data, scale_key)
    limit = max(MAX_CHUNK_VOXELS, int(np.prod(level_data.block_size)))
    if box.voxels > limit:
        raise TooLarge(f"chunk of {box.voxels} voxels is over the {limit} voxel limit")
    bounded(data, box)
    encoding = data.precomputed_layout().encoding
    if encoding == "jpeg" and box.size[1] * box.size[2] > _JPEG_MAX_SIDE:
        raise BadRequest(f"a jpeg chunk is at most {_JPEG_MAX_SIDE} voxels in y times z")
    compress = gzip_ok and encoding != "jpeg"
    headers = {"Vary": "Accept-Encoding"}
    if compress:
        headers["Content-Encoding"] = "gzip"
    headers["Cache-Control"] = IMMUTABLE if immutable(data, ref) else NO_CACHE
    voxels = level_data.volume(scale).read(box)
    body = level_data.encode_precomputed(voxels, encoding)
    if compress:
        body = gzip.compress(body, compresslevel=1, mtime=0)
    return body, headers


def media_type(data: VolumeData) -> str:
    jpeg = data.precomputed_layout().encoding == "jpeg"
    return "image/jpeg" if jpeg else "application/octet-stream"
