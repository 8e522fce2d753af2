"""Building an imagetile pyramid from an image volume (``dvid-cloud tiles generate``).

DVID generates tiles only from its own command line (``dvid node <uuid> <name> generate``);
this does the same work on the store directly, as DVID's ``ConstructTiles`` does:

* Metadata, if the version has none yet, is DVID's ``DefaultTileSpec``: square tiles of
  ``tile_size``, scale ``s`` at ``2^s`` times the source's voxel size, as many levels as it
  takes for one tile to cover the (tile-aligned) extents along every axis; ``MinTileCoord``
  and ``MaxTileCoord`` count tiles of the lowest resolution.
* For each slice of the source's extents along the plane's normal, the in-plane region,
  aligned to the footprint of the coarsest tile, is cut into tiles at scale 0, then
  halved for each further level by DVID's downsampling of uint8 images (its
  ``ScaleImage`` box filter at exactly 2x: the mean of each 2x2 pixel block, rounded
  down), and cut again. Tile coordinates are DVID's: in-plane tile indices at that scale,
  the normal coordinate in scale-0 voxels (every slice has tiles at every scale).
* Tiles are written in transactions of at most :data:`BATCH_BYTES` (the journal applies
  each one's records overlapped, :mod:`app.storage.parallel`), so a killed run leaves
  whole batches and no partial one. Metadata the run creates goes in its last
  transaction: until then the version has no metadata and serves no tile, and running
  again rewrites every tile, so an interrupted run is simply rerun.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from app.datatypes import bind
from app.datatypes.capabilities import ImageSource, require
from app.datatypes.imagetile import ImageTile
from app.datatypes.imagetile.tiles import (
    PLANE_NAMES,
    Level,
    Metadata,
    TileAddress,
    parse_plane,
    tile_shape,
)
from app.errors import BadRequest
from app.services import Services
from app.storage import parallel
from app.volumes.geometry import Box, vec

log = logging.getLogger("dvid_cloud")

DEFAULT_TILE_SIZE = 512
#: Encoded tiles per transaction, at most (the redo record holds them all).
BATCH_BYTES = 32 << 20
#: Source voxels read at once (a slab of slices along the normal).
SLAB_VOXELS = 64 << 20
#: At most this many slices per slab: a chunk array's block is rarely deeper.
SLAB_DEPTH = 64


def downsample(plane: np.ndarray) -> np.ndarray:
    """DVID's 2x downsampling of a uint8 image with even sides: the mean of each 2x2
    block, rounded down."""
    h, w = plane.shape
    blocks = plane.reshape(h // 2, 2, w // 2, 2).astype(np.uint16)
    return (blocks.sum(axis=(1, 3)) // 4).astype(np.uint8)


def default_metadata(
    extents: tuple[tuple[int, int, int], tuple[int, int, int]],
    voxel_size: tuple[float, float, float],
    tile_size: int,
) -> Metadata:
    """DVID's ``DefaultTileSpec`` for a source's extents (offset, size) and voxel size."""
    offset, size = extents
    lo = [o // tile_size * tile_size for o in offset]
    hi = [((o + s - 1) // tile_size + 1) * tile_size for o, s in zip(offset, size, strict=True)]
    levels_per_axis = [
        1 if h - a <= tile_size else math.ceil(math.log2((h - a) / tile_size)) + 1
        for a, h in zip(lo, hi, strict=True)
    ]
    count = max(levels_per_axis)
    side = (tile_size, tile_size, tile_size)
    levels = tuple(Level(vec_f(v * 2**s for v in voxel_size), side) for s in range(count))
    footprint = tile_size * 2 ** (count - 1)
    first = vec(o // footprint for o in offset)
    last = vec((o + s - 1) // footprint for o, s in zip(offset, size, strict=True))
    return Metadata(first, last, levels)


def vec_f(values: Iterator[float] | list[float]) -> tuple[float, float, float]:
    """Three resolutions, rounded to float32 as DVID keeps them."""
    x, y, z = (float(np.float32(v)) for v in values)
    return x, y, z


@dataclass
class PlaneJob:
    """One plane to tile: its axes and the source region (in-plane aligned to the
    coarsest tile's footprint; along the normal, the source's extents)."""

    axes: tuple[int, int]
    region: Box

    @property
    def normal(self) -> int:
        (axis,) = {0, 1, 2} - set(self.axes)
        return axis

    @property
    def slices(self) -> int:
        return self.region.size[self.normal]


@dataclass
class Job:
    """A planned generation: what it writes where, before anything is written."""

    services: Services
    node_uuid: str
    tiles: ImageTile
    source: ImageSource
    metadata: Metadata
    create_metadata: bool
    planes: list[PlaneJob]

    @property
    def total(self) -> int:
        """Slices to tile over all planes (the progress bar's length)."""
        return sum(p.slices for p in self.planes)

    def run(self, advance: Callable[[int], None] = lambda n: None) -> int:
        """Write every tile; ``advance(n)`` after each ``n`` slices. Returns the number
        of tiles written."""
        written = 0
        batch: list[tuple[str, bytes]] = []
        size = 0
        for plane in self.planes:
            log.info(
                "tiling plane",
                extra={"plane": PLANE_NAMES[plane.axes], "slices": plane.slices},
            )
            for slab_done, tiles in self._slabs(plane):
                for key, data in tiles:
                    batch.append((key, data))
                    size += len(data)
                    if size >= BATCH_BYTES:
                        written += self._commit(batch, last=False)
                        batch, size = [], 0
                advance(slab_done)
        written += self._commit(batch, last=True)
        return written

    def _slabs(self, plane: PlaneJob) -> Iterator[tuple[int, list[tuple[str, bytes]]]]:
        """(slices done, encoded tiles) per slab of slices read from the source."""
        region, normal = plane.region, plane.normal
        area = region.voxels // region.size[normal]
        depth = max(1, min(SLAB_DEPTH, SLAB_VOXELS // max(area, 1), region.size[normal]))
        start, end = region.offset[normal], region.end[normal]
        for first in range(start, end, depth):
            count = min(depth, end - first)
            offset, size = list(region.offset), list(region.size)
            offset[normal], size[normal] = first, count
            volume = self.source.read_uint8(vec(offset), vec(size))
            planned: list[tuple[TileAddress, np.ndarray]] = []
            for i in range(count):
                image = _plane_of(volume, plane.axes, i)
                planned.extend(self._tiles_of(plane, image, first + i))
            encoded = parallel.each(lambda item: self.tiles.encode_tile(item[1]), planned)
            yield count, [(t.key(), d) for (t, _), d in zip(planned, encoded, strict=True)]

    def _tiles_of(
        self, plane: PlaneJob, image: np.ndarray, at: int
    ) -> Iterator[tuple[TileAddress, np.ndarray]]:
        """Every tile of one slice at every scale."""
        a, b = plane.axes
        for scale, level in enumerate(self.metadata.levels):
            if scale:
                image = downsample(image)
            th, tw = tile_shape(level, plane.axes)
            first_x = plane.region.offset[a] // 2**scale // tw
            first_y = plane.region.offset[b] // 2**scale // th
            rows, cols = image.shape
            for j in range(rows // th):
                for i in range(cols // tw):
                    coord = [0, 0, 0]
                    coord[a], coord[b], coord[plane.normal] = first_x + i, first_y + j, at
                    tile = TileAddress(plane.axes, scale, (coord[0], coord[1], coord[2]))
                    yield tile, image[j * th : (j + 1) * th, i * tw : (i + 1) * tw]

    def _commit(self, items: list[tuple[str, bytes]], last: bool) -> int:
        """One transaction of tiles (and, in the last, metadata this run created), at the
        node as it is now: announced in flight, refused if the node was locked meanwhile."""
        services = self.services
        if not items and not (last and self.create_metadata):
            return 0
        with services.inflight.writing(self.node_uuid):
            repo, node = services.catalog.resolve(self.node_uuid)
            fresh = bind(services, repo, node.uuid, repo.instance(self.tiles.name))
            assert isinstance(fresh, ImageTile)
            fresh.require_writable()
            with fresh.transaction():
                fresh.write_many(items)
                if last and self.create_metadata and fresh.metadata() is None:
                    fresh.set_metadata(self.metadata)
        log.info("tiles written", extra={"tiles": len(items), "final": last})
        return len(items)


def _plane_of(volume: np.ndarray, axes: tuple[int, int], index: int) -> np.ndarray:
    """Slice ``index`` along the normal of a ZYX slab, rows = second in-plane axis."""
    if axes == (0, 1):
        return volume[index]
    if axes == (0, 2):
        return volume[:, index, :]
    return volume[:, :, index]


def _aligned_region(
    extents: tuple[tuple[int, int, int], tuple[int, int, int]],
    metadata: Metadata,
    axes: tuple[int, int],
) -> Box:
    """The source extents, in-plane widened to whole tiles of every level."""
    offset, size = extents
    lo, hi = list(offset), [o + s for o, s in zip(offset, size, strict=True)]
    for axis in axes:
        footprint = math.lcm(*(lv.tile_size[axis] * 2**s for s, lv in enumerate(metadata.levels)))
        lo[axis] = lo[axis] // footprint * footprint
        hi[axis] = -(-hi[axis] // footprint) * footprint
    return Box.from_bounds(lo, hi)


def prepare(
    services: Services,
    ref: str,
    name: str,
    source_name: str | None,
    planes: str = "xy",
    tile_size: int = DEFAULT_TILE_SIZE,
) -> Job:
    """Check everything and plan the run (400 on bad input; nothing is written)."""
    repo, node = services.catalog.resolve(ref)
    tiles = bind(services, repo, node.uuid, repo.instance(name))
    if not isinstance(tiles, ImageTile):
        raise BadRequest(f"instance {name!r} is a {tiles.typename}, not an imagetile")
    tiles.require_writable()
    tiles.prepare_read()
    chosen = source_name or str(tiles.settings.get("Source") or "")
    if not chosen:
        raise BadRequest(f"name the source volume: {name!r} has no Source setting")
    instance = repo.instance(chosen)
    require(instance, ImageSource, "an image volume")
    bound_source = bind(services, repo, node.uuid, instance)
    bound_source.prepare_read()
    assert isinstance(bound_source, ImageSource)
    source: ImageSource = bound_source
    if not 16 <= tile_size <= 8192:
        raise BadRequest(f"tile size {tile_size} must be 16 to 8192")
    axes = [parse_plane(p.strip()) for p in planes.split(",") if p.strip()]
    if not axes or len(set(axes)) != len(axes):
        raise BadRequest(f"planes {planes!r} must name xy, xz and/or yz, each once")
    extents = source.image_extents()
    if extents is None:
        raise BadRequest(f"source {chosen!r} holds no voxels at version {node.uuid}")
    source.read_uint8(extents[0], (1, 1, 1))  # 400 now if it is not a uint8 volume
    existing = tiles.metadata()
    metadata = existing or default_metadata(extents, source.image_voxel_size(), tile_size)
    return Job(
        services,
        node.uuid,
        tiles,
        source,
        metadata,
        existing is None,
        [PlaneJob(a, _aligned_region(extents, metadata, a)) for a in axes],
    )
