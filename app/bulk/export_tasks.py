"""Planning and running ``dvid-cloud export``: a volume instance at one version written as
a static neuroglancer precomputed volume by tensorstore's ``neuroglancer_precomputed``
driver.

The export is what the server's own precomputed view (:mod:`app.volumes.precomputed`)
serves at that version: the same ``info`` scales (keys, resolutions, bounds, chunk
sizes, encodings, pyramid instances), chunk for chunk the same voxels — a labelmap's body
ids at the version, an rgba8blk's four uint8 channels — only encoded by tensorstore and,
with ``--sharded``, packed into ``neuroglancer_uint64_sharded_v1`` shards whose layout
tensorstore chooses so that each shard is a box of about ``--task-mb``.

The command creates every scale first (the ``info``, all metadata checked against what
the destination may already hold), then each task reads one box of one scale from the
store and writes it. Boxes are whole write chunks of the output (single chunks, or whole
shards), so no two tasks write the same file and a shard is written once, in one
tensorstore transaction. Running again over the same destination rewrites it; a
destination holding a different volume is refused before anything is written.

The version is pinned by UUID when the command starts (``:master`` may move meanwhile).
A committed version exports exactly; an open one is read as each task finds it, so
writes to it during the export may show in some chunks and not in others.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorstore as ts

from app.bulk.destination import Spec, describe
from app.bulk.instances import bound, pinned
from app.bulk.runner import Target
from app.datatypes.labelmap import Labelmap
from app.errors import NotFound
from app.volumes import images, precomputed
from app.volumes.base import VolumeData
from app.volumes.geometry import Box, vec


@dataclass(frozen=True)
class Job:
    """What every task of one export shares: the instance at a pinned version, and the
    destination. ``run`` names this run's output handles in each worker."""

    target: Target
    dest: Spec
    sharded: bool
    run: str


@dataclass(frozen=True)
class Region:
    """One task: a box of scale ``level`` (voxels of that scale) made of whole write
    chunks of the output, holding ``chunks`` chunks."""

    level: int
    key: str
    box: Box
    chunks: int


@dataclass(frozen=True)
class Plan:
    job: Job
    regions: list[Region]
    #: Bytes of one exported voxel (all channels).
    voxel_bytes: int
    scales: int


@dataclass(frozen=True)
class Done:
    voxels: int
    chunks: int


def plan(target: Target, dest: Spec, sharded: bool, max_scales: int | None, task_mb: float) -> Plan:
    """Check the instance and version, create the destination's scales, cut them into
    regions of about ``task_mb`` megabytes of exported voxels. Nothing is written before
    the checks pass; the ``info`` (with every scale) is written before any task runs."""
    data = bound(target, VolumeData, "a volume instance (imageblk types, labelmap)")
    info = precomputed.info(data)
    layout = data.precomputed_layout()
    voxel_bytes = np.dtype(layout.data_type).itemsize * layout.num_channels
    job = Job(pinned(target, data), dest, sharded, uuid.uuid4().hex)
    budget = max(1, int(task_mb * 1e6) // voxel_bytes)
    regions: list[Region] = []
    scales = info["scales"][:max_scales]
    for level, entry in enumerate(scales):
        store = _create_scale(dest, info, entry, sharded, budget)
        regions.extend(_regions(level, entry, store.chunk_layout, budget))
    return Plan(job, regions, voxel_bytes, len(scales))


def _create_scale(
    dest: Spec, info: dict[str, Any], entry: dict[str, Any], sharded: bool, budget: int
) -> ts.TensorStore:
    """Add scale ``entry`` of ``info`` to the destination (or open it, if an earlier run
    created the same); a ValueError, in one line, if the destination cannot take it."""
    scale: dict[str, Any] = {
        "key": entry["key"],
        "resolution": entry["resolution"],
        "voxel_offset": entry["voxel_offset"],
        "size": entry["size"],
        "chunk_size": entry["chunk_sizes"][0],
        "encoding": entry["encoding"],
    }
    if "compressed_segmentation_block_size" in entry:
        scale["compressed_segmentation_block_size"] = entry["compressed_segmentation_block_size"]
    if entry["encoding"] == "jpeg":
        scale["jpeg_quality"] = images.DEFAULT_JPEG_QUALITY
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": dest,
        "multiscale_metadata": {k: info[k] for k in ("type", "data_type", "num_channels")},
        "scale_metadata": scale,
    }
    options: dict[str, Any] = {}
    if sharded:
        # At least two chunks a side (a scale of one chunk stays unsharded: tensorstore's
        # choice, and all the same to readers).
        chunk = entry["chunk_sizes"][0]
        shard = _grow(chunk, entry["size"], max(budget, 8 * math.prod(chunk)))
        grid = ts.ChunkLayout.Grid(shape_soft_constraint=[*shard, info["num_channels"]])
        options["chunk_layout"] = ts.ChunkLayout(write_chunk=grid)
    try:
        return ts.open(spec, create=True, open=True, **options).result()
    except ValueError as e:
        raise ValueError(
            f"cannot write scale {entry['key']} to {describe(dest)}: {_first(e)}"
        ) from None


def _first(error: Exception) -> str:
    """tensorstore's message without the spec it appends."""
    return str(error).split(" [tensorstore_spec=", 1)[0]


def _grow(unit: list[int], size: list[int], budget: int) -> list[int]:
    """``unit`` doubled along x, y, z in turn while it stays within ``budget`` voxels
    and short of ``size`` along the doubled axis."""
    shape = list(unit)
    refused = 0
    axis = 0
    while refused < 3:
        grown = shape[axis] * 2
        if shape[axis] < size[axis] and math.prod(shape) * 2 <= budget:
            shape[axis] = grown
            refused = 0
        else:
            refused += 1
        axis = (axis + 1) % 3
    return shape


def _regions(level: int, entry: dict[str, Any], layout: Any, budget: int) -> list[Region]:
    """The scale cut into boxes of whole write chunks (grown to about ``budget`` voxels
    when the write chunk is smaller), clipped at the scale's bounds."""
    bounds = Box(vec(entry["voxel_offset"]), vec(entry["size"]))
    write = [int(s) for s in layout.write_chunk.shape[:3]]
    origin = [int(o) for o in layout.grid_origin[:3]]
    chunk = entry["chunk_sizes"][0]
    step = _grow(write, list(bounds.size), budget)
    regions = []
    for z in range(origin[2], bounds.end[2], step[2]):
        for y in range(origin[1], bounds.end[1], step[1]):
            for x in range(origin[0], bounds.end[0], step[0]):
                cell = Box((x, y, z), vec(step)).intersect(bounds)
                if cell is None:
                    continue
                chunks = math.prod(-(-n // c) for n, c in zip(cell.size, chunk, strict=True))
                regions.append(Region(level, entry["key"], cell, chunks))
    return regions


def precomputed_values(data: VolumeData, voxels: np.ndarray) -> np.ndarray:
    """What the precomputed view shows of ZYX ``voxels`` read from ``data``, as the
    driver's x, y, z, channel array: a labelmap's body ids at the bound version; the
    channels of a multi-channel layout are a voxel's bytes (rgba8blk: r, g, b, a)."""
    if isinstance(data, Labelmap):
        voxels = data.bodies(voxels)
    layout = data.precomputed_layout()
    voxels = np.ascontiguousarray(voxels)
    as_type = voxels.view(np.dtype(layout.data_type).newbyteorder("<"))
    return as_type.reshape(*voxels.shape, layout.num_channels).transpose(2, 1, 0, 3)


_OUTPUTS: dict[str, ts.TensorStore] = {}


def _output(job: Job, key: str) -> ts.TensorStore:
    """The destination's scale ``key``, opened once per run in a worker."""
    name = json.dumps([job.run, key])
    store = _OUTPUTS.get(name)
    if store is None:
        if len(_OUTPUTS) > 64:
            _OUTPUTS.clear()  # handles of earlier runs
        spec = {
            "driver": "neuroglancer_precomputed",
            "kvstore": job.dest,
            "scale_metadata": {"key": key},
        }
        store = _OUTPUTS[name] = ts.open(spec, open=True, write=True).result()
    return store


def warm_up(job: Job) -> None:
    """Run in each worker before the clock starts: imports this module and opens the
    stores and the instance, so the summary times the export, not the start-up."""
    bound(job.target, VolumeData, "a volume instance")


def export_region(job: Job, region: Region) -> Done:
    """Read ``region`` at the job's version from the store and write it to the output."""
    data = bound(job.target, VolumeData, "a volume instance")
    source = data.pyramid_source(region.level)
    if source is None:
        raise NotFound(
            f"scale {region.key} of {data.name!r} is gone: {data.pyramid_missing(region.level)}"
        )
    level_data, scale = source
    values = precomputed_values(level_data, level_data.volume(scale).read(region.box))
    (x0, y0, z0), (x1, y1, z1) = region.box.offset, region.box.end
    output = _output(job, region.key)
    if job.sharded:
        # One transaction: each shard of the region is assembled and written once.
        with ts.Transaction() as txn:
            output.with_transaction(txn)[x0:x1, y0:y1, z0:z1].write(values).result()
    else:
        output[x0:x1, y0:y1, z0:z1].write(values).result()
    return Done(region.box.voxels, region.chunks)
