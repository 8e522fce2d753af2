"""Writing labels: whole blocks at one scale, with the label index, counters, extents and
lower scales kept current at the version written."""

from __future__ import annotations

import functools
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from app.datatypes.labelmap.codecs import encode_block_key
from app.proto import labelmap_pb2 as pb
from app.repo import now
from app.storage import parallel
from app.volumes.arrays import VersionedVolume, Voxels
from app.volumes.geometry import Vec

if TYPE_CHECKING:
    from app.datatypes.labelmap import Labelmap

Block = tuple[Vec, np.ndarray]

#: Threads computing a write's lower scales while its caller updates the label index
#: (:func:`write_blocks`). Not :mod:`app.storage.parallel`'s pool: the downsampling waits
#: on that pool's reads and writes, and a task there must not wait on the pool itself.
_LOWER_SCALES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="labelmap-scales")


@dataclass(frozen=True)
class Stamp:
    """A mutation as label indices record it: its id, who made it, when."""

    mutid: int
    user: str = ""
    app: str = ""
    time: str = field(default_factory=now)

    def mark(self, index: pb.LabelIndex) -> None:
        index.last_mutid = self.mutid
        index.last_mod_time = self.time
        index.last_mod_user = self.user
        index.last_mod_app = self.app


def write_blocks(
    data: Labelmap,
    blocks: list[Block],
    scale: int = 0,
    index: bool = True,
    downres: bool = True,
    *,
    bookkeeping: bool = True,
    stamp: Stamp | None = None,
    bodies: set[int] | None = None,
    staged: bool = False,
) -> None:
    """Replace whole blocks at ``scale``: every label block write goes through here. At
    scale 0 the label index (unless ``index`` is false or the instance is not indexed), the
    max label and the extents follow; with ``downres`` every lower scale up to
    MaxDownresLevel is recomputed for these blocks. Without ``bookkeeping`` only the blocks
    are written (``ingest-supervoxels``: the client does the rest). Rewritten indices
    carry ``stamp`` (a voxel write without one takes a new mutation id, as DVID's does).
    With ``staged`` the blocks were already encoded into the transaction's prestaged
    stage (:meth:`VersionedVolume.stage_blocks`) and are adopted instead of written.

    The blocks are encoded and stored in the background while the bookkeeping is
    computed from the voxels in hand (nothing is read back), and the lower scales on
    another thread while this one counts labels and rewrites indices: numpy releases the
    GIL in its passes over the voxels, so on two cores the two take about as long as the
    longer (a 256³ POST's 3 scales and its index each about a third of a second). The
    transaction publishes none of it before all are done, and nothing is still writing
    when this returns or raises."""
    if not blocks:
        return
    volume = data.volume(scale)

    def put() -> None:
        if not staged:
            volume.write_blocks(blocks)
        elif isinstance(volume, VersionedVolume):
            volume.adopt_staged()
        else:
            raise TypeError(f"{type(volume).__name__} has no stage to adopt")

    if not bookkeeping:
        put()
        return
    coords = np.array([c for c, _ in blocks], dtype=np.int64).reshape(-1, 3)
    indexing = scale == 0 and index and data.indexed
    # what the blocks held before, read before the new ones are staged over them
    old = dict(volume.read_blocks(coords)) if indexing else {}
    with parallel.background() as start:
        start(put)
        lower: Future[None] | None = None
        if downres:
            lower = _LOWER_SCALES.submit(downres_blocks, data, coords, scale, dict(blocks))
        try:
            _bookkeep(data, volume, blocks, coords, scale, indexing, old, stamp, bodies)
        finally:
            failed = lower.exception() if lower is not None else None  # waits
        if failed is not None:
            raise failed


def _bookkeep(
    data: Labelmap,
    volume: Voxels,
    blocks: list[Block],
    coords: np.ndarray,
    scale: int,
    indexing: bool,
    old: dict[Vec, np.ndarray],
    stamp: Stamp | None,
    bodies: set[int] | None,
) -> None:
    """What a write of ``blocks`` at ``scale`` changes besides voxels: the label indices
    (if ``indexing``; ``old`` holds the blocks' voxels before), and at scale 0 the max
    label, the extents and the mutation event."""
    census = [supervoxel_counts(v) for _, v in blocks] if indexing else []
    if indexing:
        stamp = stamp or Stamp(data.new_mutation_id())
        changes = [
            (c, old.get(c), svs, counts)
            for (c, _), (svs, counts) in zip(blocks, census, strict=True)
        ]
        _update_indices(data, changes, stamp, bodies)
    if scale == 0:
        tops = [int(svs[-1]) for svs, _ in census] or [int(v.max()) for _, v in blocks]
        data.raise_max_label(max(tops))
        grid = volume.grid
        lo, hi = coords.min(axis=0), coords.max(axis=0)
        box = grid.block_box((int(lo[0]), int(lo[1]), int(lo[2]))).union(
            grid.block_box((int(hi[0]), int(hi[1]), int(hi[2])))
        )
        data.grow_extents(box)
        data.event("mutate-blocks", Scale=0, Blocks=coords.tolist())


def supervoxel_counts(voxels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct labels of a block, ascending, and their voxel counts (as
    ``np.unique(voxels, return_counts=True)``). Labels come in long runs along x, so the
    runs are found first and only their heads sorted: several times faster than sorting
    or hashing every voxel (fastremap.unique), and no slower on noise."""
    flat = voxels.ravel()
    change = np.empty(flat.size, dtype=bool)
    change[:1] = True
    np.not_equal(flat[1:], flat[:-1], out=change[1:])
    starts = np.flatnonzero(change)
    lengths = np.diff(starts, append=flat.size)
    order = np.argsort(flat[starts], kind="stable")
    heads = flat[starts][order]
    first = np.empty(heads.size, dtype=bool)
    first[:1] = True
    np.not_equal(heads[1:], heads[:-1], out=first[1:])
    at = np.flatnonzero(first)
    return heads[at], np.add.reduceat(lengths[order], at)


def _update_indices(
    data: Labelmap,
    changes: list[tuple[Vec, np.ndarray | None, np.ndarray, np.ndarray]],
    stamp: Stamp,
    only: set[int] | None = None,
) -> None:
    """Rewrite, for every body whose supervoxels a changed block held before or holds now,
    that block's entry of the body's label index. ``changes`` are (block, its voxels
    before or None, the labels it holds now and their counts: :func:`supervoxel_counts`)."""
    per_block = []
    all_svs = []
    for coord, old, svs, counts in changes:
        key = encode_block_key(*coord)
        old_svs = supervoxel_counts(old)[0] if old is not None else np.empty(0, np.uint64)
        keep = svs != 0
        per_block.append((key, old_svs[old_svs != 0], svs[keep], counts[keep]))
        all_svs.extend([old_svs, svs[keep]])
    svs = np.unique(np.concatenate(all_svs)) if all_svs else np.empty(0, np.uint64)
    if svs.size == 0:
        return
    bodies = data.mapping.lookup(svs)
    body_of = dict(zip(svs.tolist(), bodies.tolist(), strict=True))
    new_counts: dict[int, dict[int, dict[int, int]]] = defaultdict(dict)
    touched: dict[int, set[int]] = defaultdict(set)
    for key, old_svs, block_svs, counts in per_block:
        for sv in old_svs.tolist():
            touched[body_of[sv]].add(key)
        for sv, n in zip(block_svs.tolist(), counts.tolist(), strict=True):
            body = body_of[sv]
            touched[body].add(key)
            new_counts[body].setdefault(key, {})[sv] = n
    indices = data.indices()
    targets = [b for b in touched if b != 0 and (only is None or b in only)]
    for body, found in zip(targets, indices.get_many(targets), strict=True):
        keys = touched[body]
        index = found or pb.LabelIndex(label=body)
        for key in keys:
            block_counts = new_counts[body].get(key)
            if block_counts:
                entry = index.blocks[key]
                entry.counts.clear()
                entry.counts.update(block_counts)
            elif key in index.blocks:
                del index.blocks[key]
        index.label = body
        stamp.mark(index)
        indices.put(index)


def mode_downsample(volume: np.ndarray) -> np.ndarray:
    """2x2x2 mode of a ZYX label volume with even sides: 0 is ignored, ties go to the
    smallest label, eight zeros give 0 (DVID's rule).

    Most 2x2x2 cells lie inside one label and are their own mode; they are found by
    comparing neighbours along z, then y, then x (contiguous rows), and only the mixed
    ones (a tenth or less of a segmentation, more at lower scales) are gathered, by flat
    index (one ``take`` per corner: indexing strided views with three index arrays cost
    twice as much), and counted (:func:`_cell_modes`)."""
    volume = np.ascontiguousarray(volume)
    _, ny, nx = volume.shape
    top = volume[0::2]
    along_z = volume[1::2] != top
    mixed_zy = along_z[:, 0::2] | along_z[:, 1::2] | (top[:, 0::2] != top[:, 1::2])
    corner = top[:, 0::2]
    mixed = mixed_zy[:, :, 0::2] | mixed_zy[:, :, 1::2] | (corner[:, :, 0::2] != corner[:, :, 1::2])
    best = corner[:, :, 0::2].copy()
    cells = np.flatnonzero(mixed)
    if cells.size:
        cz, rest = np.divmod(cells, (ny // 2) * (nx // 2))
        cy, cx = np.divmod(rest, nx // 2)
        first = (cz * (2 * ny) + cy * 2) * nx + cx * 2
        flat = volume.reshape(-1)
        plane = ny * nx
        offsets = (0, 1, nx, nx + 1, plane, plane + 1, plane + nx, plane + nx + 1)
        best.reshape(-1)[cells] = _cell_modes([flat.take(first + o) for o in offsets])
    return best


#: Every pair of a cell's 8 corners.
_PAIRS = [(i, j) for i in range(8) for j in range(i + 1, 8)]
_NO_LABEL = np.uint64(2**64 - 1)


def _cell_modes(corners: list[np.ndarray]) -> np.ndarray:
    """The mode of each cell by DVID's rule, from its 8 corners' labels (8 arrays, one
    per corner): each corner counts the corners equal to it (itself too), zeros count
    nothing, and the smallest label with the largest count wins; eight zeros give 0.
    28 equality passes over the mixed cells: no per-row sort."""
    n = corners[0].size
    counts = [np.ones(n, np.uint8) for _ in corners]
    equal = np.empty(n, bool)
    for i, j in _PAIRS:
        np.equal(corners[i], corners[j], out=equal)
        counts[i] += equal
        counts[j] += equal
    for count, labels in zip(counts, corners, strict=True):
        count[labels == 0] = 0
    most = np.maximum.reduce(counts)
    pick = np.full(n, _NO_LABEL, np.uint64)
    for count, labels in zip(counts, corners, strict=True):
        np.minimum(pick, np.where(count == most, labels, _NO_LABEL), out=pick)
    pick[most == 0] = 0
    return pick


def downres_blocks(
    data: Labelmap, coords: np.ndarray, scale: int, written: dict[Vec, np.ndarray] | None = None
) -> None:
    """Recompute, at every scale below ``scale`` up to MaxDownresLevel, the octants of the
    lower-scale blocks whose child blocks (``coords`` at ``scale``) changed; the other
    octants keep their content (DVID's incremental rule).

    ``written`` holds the changed blocks' voxels when the caller has them (a write):
    they are not read back, nor is each level's result (the next level's children); a
    lower-scale block whose eight children all changed is not read either. Each level's
    blocks are stored in the background while the next level is computed."""
    max_level = data.settings.get("MaxDownresLevel", 0)
    size = np.array(data.settings["BlockSize"], dtype=np.int64)
    shape = tuple(int(v) for v in size[::-1])
    hx, hy, hz = (int(v) for v in size // 2)
    changed = np.unique(np.asarray(coords, dtype=np.int64).reshape(-1, 3), axis=0)
    children = written
    with parallel.background() as start:
        for level in range(scale + 1, max_level + 1):
            target = data.volume(level)
            parents, of_child = np.unique(changed // 2, axis=0, return_inverse=True)
            of_child = of_child.ravel()
            per_parent = np.bincount(of_child, minlength=len(parents))
            partial = parents[per_parent < 8]
            current = dict(target.read_blocks(partial)) if len(partial) else {}
            if children is None:
                children = dict(data.volume(level - 1).read_blocks(changed))
            keys: list[Vec] = [(p[0], p[1], p[2]) for p in parents.tolist()]
            built: dict[Vec, np.ndarray] = {}
            for key in keys:
                found = current.get(key)
                built[key] = np.zeros(shape, np.uint64) if found is None else found.copy()
            for child, i in zip(changed.tolist(), of_child.tolist(), strict=True):
                px, py, pz = keys[i]
                ox, oy, oz = child[0] - 2 * px, child[1] - 2 * py, child[2] - 2 * pz
                voxels = children.get((child[0], child[1], child[2]))
                if voxels is None:
                    voxels = np.zeros(shape, np.uint64)
                built[keys[i]][
                    oz * hz : (oz + 1) * hz, oy * hy : (oy + 1) * hy, ox * hx : (ox + 1) * hx
                ] = mode_downsample(voxels)
            start(functools.partial(target.write_blocks, list(built.items())))
            changed, children = parents, built
