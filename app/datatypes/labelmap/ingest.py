"""Writing labels: whole blocks at one scale, with the label index, counters, extents and
lower scales kept current at the version written."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import fastremap
import numpy as np

from app.datatypes.labelmap.codecs import encode_block_key
from app.proto import labelmap_pb2 as pb
from app.repo import now
from app.volumes.arrays import VersionedVolume
from app.volumes.geometry import Vec

if TYPE_CHECKING:
    from app.datatypes.labelmap import Labelmap

Block = tuple[Vec, np.ndarray]


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
    stage (:meth:`VersionedVolume.stage_blocks`) and are adopted instead of written."""
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
    if scale == 0 and index and data.indexed:
        old = dict(volume.read_blocks(coords))
        stamp = stamp or Stamp(data.new_mutation_id())
        _update_indices(data, [(c, old.get(c), v) for c, v in blocks], stamp, bodies)
    put()
    if scale == 0:
        largest = int(max(int(v.max()) for _, v in blocks))
        data.raise_max_label(largest)
        grid = volume.grid
        lo, hi = coords.min(axis=0), coords.max(axis=0)
        box = grid.block_box((int(lo[0]), int(lo[1]), int(lo[2]))).union(
            grid.block_box((int(hi[0]), int(hi[1]), int(hi[2])))
        )
        data.grow_extents(box)
        data.event("mutate-blocks", Scale=0, Blocks=coords.tolist())
    if downres:
        downres_blocks(data, coords, scale)


def _update_indices(
    data: Labelmap,
    changes: list[tuple[Vec, np.ndarray | None, np.ndarray]],
    stamp: Stamp,
    only: set[int] | None = None,
) -> None:
    """Rewrite, for every body whose supervoxels a changed block held before or holds now,
    that block's entry of the body's label index."""
    per_block = []
    all_svs = []
    for coord, old, new in changes:
        key = encode_block_key(*coord)
        old_svs = fastremap.unique(old) if old is not None else np.empty(0, np.uint64)
        svs, counts = fastremap.unique(new, return_counts=True)
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
    smallest label, eight zeros give 0 (DVID's rule)."""
    nz, ny, nx = volume.shape
    cells = (
        volume.reshape(nz // 2, 2, ny // 2, 2, nx // 2, 2)
        .transpose(0, 2, 4, 1, 3, 5)
        .reshape(-1, 8)
    )
    cells = np.sort(cells, axis=1)
    best = cells[:, 0].copy()  # uniform cells (most of them) are their own mode
    mixed = np.flatnonzero(cells[:, 0] != cells[:, 7])
    if mixed.size:
        rows = cells[mixed]
        counts = (rows[:, :, None] == rows[:, None, :]).sum(axis=2, dtype=np.uint8)
        counts[rows == 0] = 0
        pick = rows[np.arange(rows.shape[0]), counts.argmax(axis=1)]
        pick[counts.max(axis=1) == 0] = 0
        best[mixed] = pick
    return best.reshape(nz // 2, ny // 2, nx // 2)


def downres_blocks(data: Labelmap, coords: np.ndarray, scale: int) -> None:
    """Recompute, at every scale below ``scale`` up to MaxDownresLevel, the octants of the
    lower-scale blocks whose child blocks (``coords`` at ``scale``) changed; the other
    octants keep their content (DVID's incremental rule)."""
    max_level = data.settings.get("MaxDownresLevel", 0)
    size = np.array(data.settings["BlockSize"], dtype=np.int64)
    hx, hy, hz = (int(v) for v in size // 2)
    changed = np.unique(np.asarray(coords, dtype=np.int64).reshape(-1, 3), axis=0)
    for level in range(scale + 1, max_level + 1):
        source = data.volume(level - 1)
        target = data.volume(level)
        parents = np.unique(changed // 2, axis=0)
        current = dict(target.read_blocks(parents))
        children = dict(source.read_blocks(changed))
        blocks = []
        for parent in parents.tolist():
            key: Vec = (parent[0], parent[1], parent[2])
            block = current.get(key)
            block = np.zeros(tuple(size[::-1]), np.uint64) if block is None else block.copy()
            for child in changed[(changed // 2 == parent).all(axis=1)].tolist():
                ox, oy, oz = (c - 2 * p for c, p in zip(child, parent, strict=True))
                voxels = children.get(tuple(child))
                if voxels is None:
                    voxels = np.zeros(tuple(size[::-1]), np.uint64)
                block[oz * hz : (oz + 1) * hz, oy * hy : (oy + 1) * hy, ox * hx : (ox + 1) * hx] = (
                    mode_downsample(voxels)
                )
            blocks.append((key, block))
        target.write_blocks(blocks)
        changed = parents
