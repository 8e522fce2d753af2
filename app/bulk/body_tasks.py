"""Planning and running ``dvid-cloud meshes`` and ``dvid-cloud skeletons``: per-body
shapes of a labelmap at one version (:mod:`app.bulk.shapes`), kept where neuroglancer's
``dvid://`` source finds them and, optionally, in a precomputed export.

* Bodies: every body with a label index at the version, or those ``--labels`` names
  (each must be a body there). Tasks take batches of bodies in label order.
* A body's voxels are read as ``sparsevol`` reads them: the blocks its label index lists,
  each masked to the supervoxels the index lists for it (so merges and cleaves at the
  version count), at scale 0 — or, when the box around the body's blocks holds more than
  ``max_voxels`` voxels there, at the finest lower scale of the labelmap where it does
  not (the coarsest one if none), with that scale's voxel size. The summary counts the
  bodies done at each scale.
* Results go to the keyvalue instance ``<labelmap>_meshes`` (``<body>.ngmesh``) or
  ``<labelmap>_skeletons`` (``<body>_swc``), created if absent, at the version (so the
  version must be open), written as a ``POST keyvalues`` would be: announced in flight
  and refused once the version is locked. Bodies of one task are written together.
* With a destination, also as precomputed files there: ``mesh/<body>:0`` (manifest) and
  ``mesh/<body>:0:0`` (fragment) under a ``neuroglancer_legacy_mesh`` ``info``, or
  ``skeletons/<body>`` under a ``neuroglancer_skeletons`` one; the volume ``info`` there
  (from ``dvid-cloud export``), if any, then names the folder (``mesh``/``skeletons``).
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from app.bulk import destination, shapes
from app.bulk.destination import Spec
from app.bulk.instances import bound, pinned
from app.bulk.runner import Target, services_for
from app.datatypes.keyvalue import KeyValue
from app.datatypes.labelmap import Labelmap, codecs
from app.datatypes.labelmap.routes import _sparse_blocks
from app.errors import BadRequest
from app.proto import labelmap_pb2 as pb
from app.volumes import precomputed
from app.volumes.geometry import vec

#: Voxels of the box around a body read at once, at most (one byte each), by default.
MAX_MASK_VOXELS = 1 << 27
#: Bodies per task, at most.
MAX_BATCH = 32


class Shapes(ABC):
    """What one command computes and where it keeps it."""

    command: ClassVar[str]
    #: The keyvalue instance is named ``<labelmap><suffix>``.
    suffix: ClassVar[str]
    #: The folder in a precomputed destination, as the volume ``info`` names it.
    folder: ClassVar[str]
    member: ClassVar[str]
    folder_info: ClassVar[dict]

    @abstractmethod
    def key(self, body: int) -> str:
        """The keyvalue key of ``body``'s record."""

    @abstractmethod
    def make(
        self, body: int, mask: shapes.Mask, voxel_size: shapes.Nanometers
    ) -> tuple[bytes, list[tuple[str, bytes]]] | None:
        """The keyvalue record and the precomputed files of ``body`` (its voxels
        ``mask``; ``voxel_size`` that of scale 0); None if the body has no such shape."""


class Meshes(Shapes):
    command = "meshes"
    suffix = "_meshes"
    folder = "mesh"
    member = "mesh"
    folder_info = shapes.MESH_INFO

    def key(self, body: int) -> str:
        return f"{body}.ngmesh"

    def make(
        self, body: int, mask: shapes.Mask, voxel_size: shapes.Nanometers
    ) -> tuple[bytes, list[tuple[str, bytes]]] | None:
        value = shapes.mesh(mask).ngmesh()
        manifest = json.dumps({"fragments": [f"{body}:0:0"]}).encode()
        return value, [(f"{body}:0", manifest), (f"{body}:0:0", value)]


class Skeletons(Shapes):
    command = "skeletons"
    suffix = "_skeletons"
    folder = "skeletons"
    member = "skeletons"
    folder_info = shapes.SKELETON_INFO

    def key(self, body: int) -> str:
        return f"{body}_swc"

    def make(
        self, body: int, mask: shapes.Mask, voxel_size: shapes.Nanometers
    ) -> tuple[bytes, list[tuple[str, bytes]]] | None:
        found = shapes.skeleton(mask)
        if found is None:
            return None
        return found.swc(voxel_size).encode(), [(str(body), found.precomputed())]


@dataclass(frozen=True)
class Job:
    """What every task shares: the labelmap at a pinned version, what to compute, the
    keyvalue instance to write (None: none) and the precomputed folder (None: none)."""

    target: Target
    shapes: Shapes
    keyvalue: str | None
    dest: Spec | None
    max_voxels: int


@dataclass(frozen=True)
class Plan:
    job: Job
    batches: list[list[int]]
    #: Bytes of one labelmap block as read (for the summary's MB/s).
    block_bytes: int


@dataclass
class Done:
    """What tasks did: bodies with a shape, without one (kimimaro found no skeleton),
    gone since planning; body voxels and blocks read; bodies per scale read."""

    bodies: int = 0
    empty: int = 0
    gone: int = 0
    voxels: int = 0
    blocks: int = 0
    scales: dict[int, int] = field(default_factory=dict)

    def add(self, other: Done) -> None:
        self.bodies += other.bodies
        self.empty += other.empty
        self.gone += other.gone
        self.voxels += other.voxels
        self.blocks += other.blocks
        for scale, count in other.scales.items():
            self.scales[scale] = self.scales.get(scale, 0) + count


def parse_labels(text: str) -> list[int]:
    """``--labels L1,L2,...``: positive uint64 labels, each once (ValueError otherwise)."""
    labels: list[int] = []
    for part in text.split(","):
        item = part.strip()
        if not item.isdigit() or not 0 < int(item) < 2**64:
            raise ValueError(f"--labels: {part.strip()!r} is not a label (1 to 2^64-1)")
        if int(item) not in labels:
            labels.append(int(item))
    return labels


def plan(
    target: Target,
    kind: Shapes,
    labels: list[int] | None,
    dest: Spec | None,
    keyvalue: bool,
    max_voxels: int,
) -> Plan:
    """Check everything (400 on bad input, nothing written), then create the keyvalue
    instance if it is missing and the destination's folder ``info``, and batch the
    bodies."""
    data = bound(target, Labelmap, "a labelmap")
    data.require_indexed()
    where = f"{data.name!r} at version {data.node.uuid}"
    indices = data.indices()
    if labels is None:
        bodies = indices.labels()
        if not bodies:
            raise BadRequest(f"{where} has no bodies")
    else:
        for label in labels:
            if indices.get(label) is None:
                raise BadRequest(f"label {label} is not a body of {where}")
        bodies = labels
    if not keyvalue and dest is None:
        raise BadRequest("nothing to write: give --export DEST with --no-keyvalue")
    name = data.name + kind.suffix if keyvalue else None
    existing = data.repo.instances.get(name) if name else None
    if name is not None:
        if data.node.locked:
            raise BadRequest(
                f"version {data.node.uuid} is committed: {kind.command} are stored in "
                f"{name!r} at an open version (or give --export DEST --no-keyvalue)"
            )
        if existing is not None and existing.typename != KeyValue.typename:
            raise BadRequest(f"instance {name!r} is a {existing.typename}, not a keyvalue")
    if name is not None and existing is None:
        from app.api.repos import create_instance

        create_instance(data.node.uuid, {"typename": "keyvalue", "dataname": name}, data.services)
    folder = None
    if dest is not None:
        folder = destination.under(dest, kind.folder)
        destination.write(folder, "info", json.dumps(kind.folder_info).encode())
        destination.link_info(dest, kind.member, kind.folder)
    size = max(1, min(MAX_BATCH, math.ceil(len(bodies) / 256)))
    batches = [bodies[i : i + size] for i in range(0, len(bodies), size)]
    job = Job(pinned(target, data), kind, name, folder, max_voxels)
    return Plan(job, batches, math.prod(data.block_size) * data.dtype.itemsize)


def scale_for(index: pb.LabelIndex, data: Labelmap, max_voxels: int) -> int:
    """The finest scale at which the box around the body's blocks holds at most
    ``max_voxels`` voxels (the coarsest scale if none)."""
    keys = np.fromiter(index.blocks.keys(), dtype=np.uint64, count=len(index.blocks))
    coords = codecs.decode_block_keys(keys).astype(np.int64)
    block = np.array(data.block_size, dtype=np.int64)
    for scale in range(data.max_level + 1):
        at = coords // 2**scale
        span = (at.max(axis=0) - at.min(axis=0) + 1) * block
        if int(np.prod(span)) <= max_voxels:
            return scale
    return data.max_level


def body_mask(
    data: Labelmap, body: int, scale: int, resolution: shapes.Nanometers
) -> tuple[shapes.Mask, int]:
    """The body's voxels at ``scale`` (``resolution`` nanometers per voxel) as
    ``sparsevol`` reads them, over the box of its blocks, and how many blocks were read."""
    blocks = _sparse_blocks(data, body, False, scale, None)
    coords = np.array([c for c, _ in blocks], dtype=np.int64)
    lo = coords.min(axis=0)
    bx, by, bz = data.block_size
    span = (coords.max(axis=0) - lo + 1) * (bx, by, bz)
    voxels = np.zeros((span[2], span[1], span[0]), dtype=bool)
    for coord, mask in blocks:
        x, y, z = (np.array(coord) - lo) * (bx, by, bz)
        voxels[z : z + bz, y : y + by, x : x + bx] = mask
    return shapes.Mask(voxels, vec(lo * (bx, by, bz)), resolution), len(blocks)


def warm_up(job: Job) -> None:
    """Run in each worker before the clock starts: imports this module (and zmesh or
    kimimaro) and opens the stores and the labelmap, so the summary times the work."""
    if isinstance(job.shapes, Meshes):
        import zmesh  # noqa: F401
    else:
        import kimimaro  # noqa: F401
    bound(job.target, Labelmap, "a labelmap")


def shape_bodies(job: Job, bodies: list[int]) -> Done:
    """Compute the shapes of ``bodies`` and write them (keyvalue, then files)."""
    data = bound(job.target, Labelmap, "a labelmap")
    resolutions = [_nanometers(scale.resolution) for scale in precomputed.scales(data)]
    done = Done()
    records: list[tuple[str, bytes]] = []
    files: list[tuple[str, bytes]] = []
    for body in bodies:
        index = data.indices().get(body)
        if index is None:  # merged away or deleted since the plan
            done.gone += 1
            continue
        scale = scale_for(index, data, job.max_voxels)
        mask, blocks = body_mask(data, body, scale, resolutions[scale])
        done.blocks += blocks
        done.voxels += int(mask.voxels.sum())
        made = job.shapes.make(body, mask, resolutions[0])
        if made is None:
            done.empty += 1
            continue
        done.bodies += 1
        done.scales[scale] = done.scales.get(scale, 0) + 1
        value, body_files = made
        records.append((job.shapes.key(body), value))
        files.extend(body_files)
    if job.keyvalue is not None and records:
        _store(job, job.keyvalue, records)
    if job.dest is not None and files:
        destination.write_many(job.dest, files)
    return done


def _nanometers(values: list[float]) -> shapes.Nanometers:
    x, y, z = values
    return x, y, z


def _store(job: Job, name: str, records: list[tuple[str, bytes]]) -> None:
    """Write keyvalue records as a request would: announced in flight, at the version
    as it is now (refused if it was committed meanwhile)."""
    services = services_for(job.target.settings)
    with services.inflight.writing(job.target.uuid):
        store = bound(replace(job.target, instance=name), KeyValue, "a keyvalue instance")
        store.require_writable()
        store.write_many(records)
