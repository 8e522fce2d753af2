"""What one bulk task does to one box of a volume instance at an open version: write the
voxels a source holds there (ingest), or rebuild the lower scales from scale 0 (downres).

A task writes as a request would: it binds the instance afresh at the node, announces
itself in flight (a commit waits for it), refuses a locked node, and writes in one
transaction through the datatype's own write path: imageblk's ``VolumeData.write`` (what
``POST raw`` calls), labelmap's ``write_blocks`` (label index, counters, extents and
lower scales; one :class:`Stamp` for the whole ingest, as one ``POST raw`` would give),
``build_pyramid`` and ``downres_blocks``. So the store ends as if the volume had been
POSTed through a server, and running servers see it at once.

Transactions on one instance at one version take turns, so what can happen outside one
does: reading and decoding the source, converting it, cutting it into blocks, and
deciding whether the box is already written. Encoding chunks, the label index and the
lower scales are the datatype's work inside the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyroaring import BitMap64

from app.bulk.runner import services_for
from app.bulk.sources import Source
from app.datatypes import bind
from app.datatypes.imageblk import ImageBlock
from app.datatypes.imageblk.pyramid import build_pyramid
from app.datatypes.labelmap import Labelmap
from app.datatypes.labelmap.ingest import Block, Stamp, downres_blocks, write_blocks
from app.errors import BadRequest
from app.services import Services
from app.settings import Settings
from app.volumes.arrays import VersionedVolume
from app.volumes.base import VolumeData
from app.volumes.geometry import BlockGrid, Box, Vec, pack, unpack


@dataclass(frozen=True)
class VolumeTask:
    """A box of an instance at a node (full UUID), and the settings to open the stores."""

    settings: Settings
    node: str
    instance: str
    box: Box


@dataclass(frozen=True)
class IngestTask(VolumeTask):
    source: Source
    #: Where the source's voxel (0, 0, 0) lands, x, y, z.
    origin: Vec
    #: The label index stamp of the whole ingest (labelmap with indexed labels).
    stamp: Stamp | None


@dataclass(frozen=True)
class DownresTask(VolumeTask):
    #: imageblk pyramid levels to rebuild (a labelmap rebuilds all its scales).
    levels: int


@dataclass(frozen=True)
class Done:
    """What a task did: voxels and scale-0 chunks written (ingest) or read (downres)."""

    voxels: int
    chunks: int
    nbytes: int
    skipped: bool = False


def warm_up(settings: Settings) -> None:
    """Import the datatypes and open the stores before the first task (run on every
    worker), so the tasks' time is the work's."""
    services_for(settings)


def writable(services: Services, node: str, instance: str) -> VolumeData:
    """The imageblk or labelmap ``instance`` at ``node``, bound now; 400 if it is
    neither or cannot be written there (a locked node, a proxy)."""
    repo, found = services.catalog.resolve(node)
    data = bind(services, repo, found.uuid, repo.instance(instance))
    if not isinstance(data, ImageBlock | Labelmap):
        raise BadRequest(f"instance {instance!r} is a {data.typename}, not an image or labelmap")
    data.require_writable()
    return data


def ingest_box(task: IngestTask) -> Done:
    """Write the source's voxels in ``task.box``, unless the node already holds exactly
    them there (a rerun after an interruption)."""
    services = services_for(task.settings)
    data = writable(services, task.node, task.instance)
    box = task.box
    lo = [b - o for b, o in zip(box.offset, task.origin, strict=True)]
    hi = [e - o for e, o in zip(box.end, task.origin, strict=True)]
    voxels = task.source.read((lo[2], lo[1], lo[0]), (hi[2], hi[1], hi[0]))
    voxels = voxels.astype(data.dtype, copy=False)
    grid = data.volume().grid
    chunks = len(grid.blocks(box))
    if _holds(data, box, voxels):
        return Done(box.voxels, chunks, voxels.nbytes, skipped=True)
    with services.inflight.writing(task.node):
        if grid.is_aligned(box):
            _write_whole(services, task, data, _blocks(grid, box, voxels))
        else:
            fresh = writable(services, task.node, task.instance)
            with fresh.transaction():
                if isinstance(fresh, Labelmap):
                    write_blocks(fresh, _merged(fresh, box, voxels), stamp=task.stamp)
                else:
                    fresh.write(box, voxels)
    return Done(box.voxels, chunks, voxels.nbytes)


def _write_whole(
    services: Services, task: IngestTask, data: VolumeData, blocks: list[Block]
) -> None:
    """Write the whole blocks of a block-aligned box: encoded and uploaded into a
    prestaged stage before the transaction lock is taken (so tasks on one instance and
    version overlap there; ``data`` is the instance as bound for the task), then adopted
    and published in the transaction, bound afresh, which holds the lock only for the
    bookkeeping (label index, scales, extents)."""
    volume = data.volume()
    assert isinstance(volume, VersionedVolume)  # writable: not a proxy
    with data.journal().prestage() as stage:
        volume.stage_blocks(stage, blocks)
        fresh = writable(services, task.node, task.instance)
        with fresh.transaction(stage):
            if isinstance(fresh, Labelmap):
                write_blocks(fresh, blocks, stamp=task.stamp, staged=True)
            else:
                fresh.publish_staged(task.box)


def _holds(data: VolumeData, box: Box, voxels: np.ndarray) -> bool:
    """Whether the bound node itself wrote every block of ``box`` and holds ``voxels``
    there: exact, whoever wrote them (a transaction publishes whole, so the index and
    lower scales written with them are there too)."""
    volume = data.volume()
    assert isinstance(volume, VersionedVolume)  # writable: not a proxy
    ids = BitMap64(pack(volume.grid.blocks(box)).tolist())
    if not ids <= volume.ownership.written(data.version, mutable=True):
        return False
    return bool(np.array_equal(volume.read(box), voxels))


def _blocks(grid: BlockGrid, box: Box, voxels: np.ndarray) -> list[Block]:
    """The whole blocks of a block-aligned ``box``, as ``write_blocks`` takes them."""
    return [
        (coord, np.ascontiguousarray(voxels[grid.block_box(coord).slices_in(box)]))
        for coord in grid.iter_blocks(box)
    ]


def _merged(data: Labelmap, box: Box, voxels: np.ndarray) -> list[Block]:
    """The blocks around an unaligned ``box``: what the version holds, overlaid with
    ``voxels`` (read inside the transaction, so no other write slips in between)."""
    volume = data.volume()
    aligned = volume.grid.aligned(box)
    merged = volume.read(aligned)
    merged[box.slices_in(aligned)] = voxels
    return _blocks(volume.grid, aligned, merged)


def downres_box(task: DownresTask) -> Done:
    """Rebuild the lower scales of ``task.box`` from its scale-0 voxels: the labelmap's
    scales 1..MaxDownresLevel (mode) or the imageblk pyramid instances (mean)."""
    services = services_for(task.settings)
    data = writable(services, task.node, task.instance)
    if isinstance(data, Labelmap):
        volume = data.volume()
        assert isinstance(volume, VersionedVolume)
        owned = list(volume.owners(task.box).values())
        if not owned:
            return Done(0, 0, 0)
        coords = unpack(np.unique(np.concatenate(owned)))
        with services.inflight.writing(task.node):
            fresh = writable(services, task.node, task.instance)
            assert isinstance(fresh, Labelmap)
            with fresh.transaction():
                downres_blocks(fresh, coords, 0)
        voxels = len(coords) * int(np.prod(volume.grid.block_size))
        return Done(voxels, len(coords), voxels * data.dtype.itemsize)
    with services.inflight.writing(task.node):
        fresh = writable(services, task.node, task.instance)
        assert isinstance(fresh, ImageBlock)
        build_pyramid(fresh, task.box, task.levels)
    chunks = len(data.volume().grid.blocks(task.box))
    return Done(task.box.voxels, chunks, task.box.voxels * data.dtype.itemsize)
