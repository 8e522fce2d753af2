"""Writing labels: whole blocks at one scale, with the label index, counters, extents and
lower scales kept current at the version written."""

from __future__ import annotations

from collections import defaultdict

import fastremap
import numpy as np

from app.blocks.geometry import Vec
from app.context import InstanceContext
from app.datatypes.labelmap.codecs import encode_block_key
from app.datatypes.labelmap.state import LabelIndices
from app.proto import labelmap_pb2 as pb
from app.repo import now

Block = tuple[Vec, np.ndarray]


def write_blocks(
    ctx: InstanceContext,
    blocks: list[Block],
    scale: int = 0,
    index: bool = True,
    downres: bool = True,
) -> None:
    """Replace whole blocks at ``scale``. At scale 0 the label index (unless ``index`` is
    false or the instance is not indexed), the max label and the extents follow; with
    ``downres`` every lower scale up to MaxDownresLevel is recomputed for these blocks."""
    if not blocks:
        return
    dt = ctx.datatype
    settings = ctx.instance.settings
    volume = dt.volume(ctx.services, ctx.instance, scale)
    coords = np.array([c for c, _ in blocks], dtype=np.int64).reshape(-1, 3)
    if scale == 0 and index and settings.get("IndexedLabels", True):
        old = dict(volume.read_blocks(ctx.repo.dag, ctx.version, True, coords))
        _update_indices(ctx, [(c, old.get(c), v) for c, v in blocks])
    volume.write_blocks(ctx.version, blocks)
    if scale == 0:
        largest = int(max(int(v.max()) for _, v in blocks))
        _raise_max_label(ctx, largest)
        grid = volume.grid
        box = grid.block_box(tuple(coords.min(axis=0))).union(
            grid.block_box(tuple(coords.max(axis=0)))
        )  # type: ignore[arg-type]
        dt.grow_extents(ctx, box)
    if downres:
        downres_blocks(ctx, coords, scale)


def _raise_max_label(ctx: InstanceContext, label: int) -> None:
    dt = ctx.datatype
    current = dt.max_label(ctx) or 0
    if label > current:
        dt.counters(ctx.services, ctx.instance).write(
            ctx.version.uuid, "maxlabel", str(label).encode()
        )
    dt.repo_counter(ctx.services, ctx.instance).advance(at_least=label)


def _update_indices(
    ctx: InstanceContext, changes: list[tuple[Vec, np.ndarray | None, np.ndarray]]
) -> None:
    """Rewrite, for every body whose supervoxels a changed block held before or holds now,
    that block's entry of the body's label index."""
    dt = ctx.datatype
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
    bodies = dt.mapping(ctx.services, ctx.instance).lookup(ctx.repo.dag, ctx.version, True, svs)
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
    indices: LabelIndices = dt.indices(ctx.services, ctx.instance)
    view = dt.index_view(ctx)
    stamp = now()
    for body, keys in touched.items():
        if body == 0:
            continue
        index = indices.get(view, body) or pb.LabelIndex(label=body)
        for key in keys:
            counts = new_counts[body].get(key)
            if counts:
                entry = index.blocks[key]
                entry.counts.clear()
                entry.counts.update(counts)
            elif key in index.blocks:
                del index.blocks[key]
        index.label = body
        index.last_mod_time = stamp
        indices.put(ctx.version.uuid, index)


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


def downres_blocks(ctx: InstanceContext, coords: np.ndarray, scale: int) -> None:
    """Recompute, at every scale below ``scale`` up to MaxDownresLevel, the octants of the
    lower-scale blocks whose child blocks (``coords`` at ``scale``) changed; the other
    octants keep their content (DVID's incremental rule)."""
    dt = ctx.datatype
    max_level = ctx.instance.settings.get("MaxDownresLevel", 0)
    size = np.array(ctx.instance.settings["BlockSize"], dtype=np.int64)
    hx, hy, hz = (int(v) for v in size // 2)
    changed = np.unique(np.asarray(coords, dtype=np.int64).reshape(-1, 3), axis=0)
    for level in range(scale + 1, max_level + 1):
        source = dt.volume(ctx.services, ctx.instance, level - 1)
        target = dt.volume(ctx.services, ctx.instance, level)
        parents = np.unique(changed // 2, axis=0)
        current = dict(target.read_blocks(ctx.repo.dag, ctx.version, True, parents))
        children = dict(source.read_blocks(ctx.repo.dag, ctx.version, True, changed))
        blocks = []
        for parent in parents.tolist():
            key = tuple(parent)
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
        target.write_blocks(ctx.version, blocks)
        changed = parents
