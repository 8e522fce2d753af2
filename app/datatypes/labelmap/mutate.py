"""Proofreading edits: merge, cleave, renumber, split-supervoxel and split (DVID's
``mutate.go``).

Each edit runs inside the request's transaction (the dispatcher opens one for every
labelmap write), so edits of one instance at one version are serialized on every replica
and publish all-or-nothing; validation happens before anything is written, and a 4xx
discards the transaction. Each takes a new repo-wide mutation id under that lock, so ids
increase in commit order, stamps it into the label indices it rewrites, and logs DVID's
``*-complete`` record (:mod:`.history` serves them; synced instances follow them).

Merge, cleave and renumber change only the mapping and label indices: no voxel moves, so
their cost does not grow with body size beyond reading the indices. The two splits
rewrite the voxels of the supervoxels they cut, through :func:`.ingest.write_blocks`.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from app.datatypes.labelmap import codecs, keys
from app.datatypes.labelmap.ingest import Stamp, write_blocks
from app.errors import BadRequest
from app.proto import labelmap_pb2 as pb
from app.volumes.geometry import Vec

if TYPE_CHECKING:
    from app.datatypes.labelmap import Labelmap


@dataclass(frozen=True)
class Author:
    """Who asked for an edit (DVID's ``ModInfo``: the ``u`` and ``app`` query strings)."""

    user: str = ""
    app: str = ""


def _stamp(data: Labelmap, author: Author) -> Stamp:
    return Stamp(data.new_mutation_id(), author.user, author.app)


def _log(data: Labelmap, action: str, stamp: Stamp, **fields: Any) -> None:
    """Log DVID's completed-mutation record (``User``/``App`` only when given)."""
    extra = {"User": stamp.user} if stamp.user else {}
    if stamp.app:
        extra["App"] = stamp.app
    data.event(action, MutationID=stamp.mutid, **fields, **extra)


def _require(index: pb.LabelIndex | None, label: int, role: str) -> pb.LabelIndex:
    if index is None:
        raise BadRequest(f"{role} label {label} does not exist")
    return index


def supervoxels_of(index: pb.LabelIndex) -> set[int]:
    return {sv for entry in index.blocks.values() for sv in entry.counts}


def voxels_of(index: pb.LabelIndex) -> int:
    return sum(sum(entry.counts.values()) for entry in index.blocks.values())


# --- edits of the mapping and indices only -----------------------------------------------


def merge(data: Labelmap, labels: list[int], author: Author) -> int:
    """``POST merge [target, other, ...]``: every supervoxel of the others now maps to the
    target, whose index absorbs theirs. Returns the mutation id."""
    if len(labels) < 2:
        raise BadRequest("merge needs a JSON list of a target label and labels to merge")
    target, others = labels[0], list(dict.fromkeys(labels[1:]))
    if 0 in labels:
        raise BadRequest("label 0 is background and cannot be merged")
    if target in others:
        raise BadRequest(f"cannot merge label {target} into itself")
    indices = data.indices()
    target_index = _require(indices.get(target), target, "merge target")
    merged = [_require(indices.get(label), label, "merged") for label in others]
    stamp = _stamp(data, author)
    own_ids = []
    for label, index in zip(others, merged, strict=True):
        for key, entry in index.blocks.items():
            target_index.blocks[key].counts.update(entry.counts)
            if label in entry.counts:
                own_ids.append(label)
    data.mapping.fold(others, target, own_ids)
    stamp.mark(target_index)
    indices.put(target_index)
    for label in others:
        indices.put(pb.LabelIndex(label=label))  # no blocks: deleted
    _log(data, "merge-complete", stamp, Target=target, Labels=others)
    return stamp.mutid


def cleave(data: Labelmap, label: int, cut: list[int], author: Author) -> tuple[int, int]:
    """``POST cleave/{label} [sv, ...]``: the listed supervoxels of ``label`` move to a new
    label. Returns (the new label, the mutation id)."""
    if not cut:
        raise BadRequest("cleave needs a JSON list of the supervoxels to cleave")
    if 0 in cut:
        raise BadRequest("supervoxel 0 is background and cannot be cleaved")
    indices = data.indices()
    index = _require(indices.get(label), label, "cleaved")
    wanted = list(dict.fromkeys(cut))
    bodies = data.mapping.lookup(np.array(wanted, np.uint64))
    strangers = [sv for sv, body in zip(wanted, bodies.tolist(), strict=True) if body != label]
    if strangers:
        raise BadRequest(f"supervoxels {strangers[:10]} are not part of label {label}")
    if not supervoxels_of(index) - set(wanted):
        raise BadRequest(f"cannot cleave every supervoxel of label {label}")
    stamp = _stamp(data, author)
    cleaved_label = data.new_labels(1)[0]
    cleaved = pb.LabelIndex(label=cleaved_label)
    moving = set(wanted)
    for key in list(index.blocks):
        counts = index.blocks[key].counts
        moved = {sv: n for sv, n in counts.items() if sv in moving}
        if not moved:
            continue
        cleaved.blocks[key].counts.update(moved)
        for sv in moved:
            del counts[sv]
        if not counts:
            del index.blocks[key]
    # The new id names a body, not a supervoxel: it maps to 0 (DVID's addCleaveToMapping).
    data.mapping.update(
        np.array([*wanted, cleaved_label], np.uint64),
        np.array([cleaved_label] * len(wanted) + [0], np.uint64),
    )
    for changed in (index, cleaved):
        stamp.mark(changed)
        indices.put(changed)
    _log(
        data,
        "cleave-complete",
        stamp,
        OrigLabel=label,
        CleavedLabel=cleaved_label,
        CleavedSupervoxels=cut,
        CleavedSize=voxels_of(cleaved),
        RemainSize=voxels_of(index),
    )
    return cleaved_label, stamp.mutid


def renumber(data: Labelmap, pairs: list[int], author: Author) -> None:
    """``POST renumber [new1, old1, new2, old2, ...]``: each old body becomes the new id,
    pair by pair. Unlike DVID (which keeps the pairs before a failing one), a failing pair
    fails the whole request and nothing changes."""
    if not pairs or len(pairs) % 2:
        raise BadRequest("renumber needs an even-length JSON list [new1, old1, new2, old2, ...]")
    for new, old in zip(pairs[::2], pairs[1::2], strict=True):
        if 0 in (new, old):
            raise BadRequest("label 0 is background and cannot be renumbered")
        indices = data.indices()
        if indices.get(new) is not None:
            raise BadRequest(f"target label for renumber ({new}) already exists")
        index = _require(indices.get(old), old, "renumbered")
        stamp = _stamp(data, author)
        mapping = data.mapping
        revive(data, new)
        # The new id is retired as a supervoxel unless it is mapped already (DVID's rule).
        if not mapping.lookup_explicit(np.array([new], np.uint64))[1][0]:
            mapping.update(np.array([new], np.uint64), np.zeros(1, np.uint64))
        mapping.fold([old], new, [old] if old in supervoxels_of(index) else [])
        index.label = new
        stamp.mark(index)
        indices.put(index)
        indices.put(pb.LabelIndex(label=old))
        _log(data, "renumber-complete", stamp, NewLabel=new, OrigLabel=old)
    # Only once every pair is valid: the repo-wide counter is not part of the transaction.
    data.raise_max_label(max(pairs[::2]))


def revive(data: Labelmap, label: int) -> None:
    """Before ``label`` names a body again: undo an earlier fold of it into another body,
    keeping that body's supervoxels where they are."""
    folded_into = int(data.mapping.renames.lookup(np.array([label], np.uint64))[0])
    if folded_into == label:
        return
    index = data.indices().get(folded_into)
    members = np.array(sorted(supervoxels_of(index)) if index else [], np.uint64)
    data.mapping.revive(label, members)


# --- edits that rewrite voxels -------------------------------------------------------------


@dataclass
class _SplitRegion:
    """Split RLEs rasterized over the scale-0 blocks that hold what they may cut."""

    masks: dict[Vec, np.ndarray]
    voxels: dict[Vec, np.ndarray]
    outside: int  # RLE voxels in blocks that hold none of it
    ref: str  # blobstore name of the posted RLEs


def _split_region(data: Labelmap, body: bytes, blocks: set[Vec]) -> _SplitRegion:
    """Parse the split RLEs and rasterize them over ``blocks`` (those holding what the
    split may cut); RLE voxels anywhere else count as outside. The RLEs are kept in the
    blobstore for the mutation record. Runs must not overlap (DVID's RLEs never do)."""
    try:
        runs = codecs.decode_rles(body)
    except codecs.BadBlock as e:
        raise BadRequest(f"split body is not DVID's legacy RLEs: {e}") from None
    runs = runs[runs[:, 3] > 0]
    if runs.size == 0:
        raise BadRequest("split RLEs hold no voxels")
    grid = data.volume(0).grid
    size = np.array(grid.block_size, np.int64)
    wide = runs.astype(np.int64)
    # Per (block y, block z) row, the block x range each run spans.
    spans: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    first = wide[:, :3] // size
    last_x = (wide[:, 0] + wide[:, 3] - 1) // size[0]
    for (bx, by, bz), ex in zip(first.tolist(), last_x.tolist(), strict=True):
        spans[(by, bz)].append((bx, ex))
    hit = sorted(
        (x, y, z) for x, y, z in blocks if any(lo <= x <= hi for lo, hi in spans.get((y, z), ()))
    )
    found = dict(data.volume(0).read_blocks(np.array(hit, np.int64).reshape(-1, 3)))
    masks = {}
    for coord in found:
        box = grid.block_box(coord)
        masks[coord] = codecs.rles_to_mask(runs, box.offset, box.shape_zyx)
    covered = sum(int(m.sum()) for m in masks.values())
    ref = hashlib.sha256(body).hexdigest()
    data.store.put(keys.blob(data.root, ref), body)
    return _SplitRegion(masks, found, int(wide[:, 3].sum()) - covered, ref)


def _key_coords(keys_: list[int]) -> set[Vec]:
    return {codecs.decode_block_key(k) for k in keys_}


def split_supervoxel(
    data: Labelmap,
    sv: int,
    body: bytes,
    split_id: int,
    remain_id: int,
    downres: bool,
    author: Author,
) -> tuple[int, int, int]:
    """``POST split-supervoxel/{sv}``: the RLE's voxels of ``sv`` get id ``split``, the
    rest ``remain``; ``sv`` is retired (maps to 0). Returns (split, remain, mutation id)."""
    owner = int(data.mapping.lookup(np.array([sv], np.uint64))[0])
    if owner == 0:
        raise BadRequest(f"supervoxel {sv} was split before and no longer exists")
    indices = data.indices()
    index = indices.get(owner)
    sv_keys = [k for k, e in index.blocks.items() if sv in e.counts] if index else []
    if index is None or not sv_keys:
        raise BadRequest(f"supervoxel {sv} does not exist")
    sv_size = sum(index.blocks[k].counts[sv] for k in sv_keys)
    sv_coords = _key_coords(sv_keys)
    region = _split_region(data, body, sv_coords)
    cut: dict[Vec, np.ndarray] = {}
    outside = region.outside
    for coord, mask in region.masks.items():
        mine = region.voxels[coord] == sv
        cut[coord] = mask & mine
        outside += int((mask & ~mine).sum())
    split_size = sum(int(m.sum()) for m in cut.values())
    if outside:
        raise BadRequest(f"{outside} voxels of the split RLEs lie outside supervoxel {sv}")
    if split_size >= sv_size:
        raise BadRequest(f"split of {split_size} voxels would leave nothing of supervoxel {sv}")
    stamp = _stamp(data, author)
    split_id, remain_id = _new_ids(data, split_id, remain_id)
    # Map the new ids first: the index update of write_blocks files them under the body.
    data.mapping.update(
        np.array([sv, split_id, remain_id], np.uint64), np.array([0, owner, owner], np.uint64)
    )
    found = dict(region.voxels)  # the rest of the supervoxel's blocks is all remain
    rest = sorted(sv_coords - set(found))
    found.update(data.volume(0).read_blocks(np.array(rest, np.int64).reshape(-1, 3)))
    blocks = []
    for coord in sorted(sv_coords):
        voxels = found.get(coord)
        if voxels is None:
            continue
        out = voxels.copy()
        mine = voxels == sv
        split_here = cut.get(coord, np.zeros_like(mine))
        out[mine & split_here] = split_id
        out[mine & ~split_here] = remain_id
        blocks.append((coord, out))
    write_blocks(data, blocks, 0, downres=downres, stamp=stamp, bodies={owner})
    _log(
        data,
        "split-supervoxel-complete",
        stamp,
        Supervoxel=sv,
        Body=owner,
        SplitSupervoxel=split_id,
        RemainSupervoxel=remain_id,
        Split=region.ref,
        SplitSize=split_size,
        RemainSize=sv_size - split_size,
    )
    return split_id, remain_id, stamp.mutid


def _new_ids(data: Labelmap, split_id: int, remain_id: int) -> tuple[int, int]:
    """The split and remain ids: the ones asked for, else new labels (split first)."""
    if split_id and split_id == remain_id:
        raise BadRequest("split and remain ids must differ")
    given = [i for i in (split_id, remain_id) if i]
    if given:
        mapped = data.mapping.lookup_explicit(np.array(given, np.uint64))[1]
        indices = data.indices()
        for label, explicit in zip(given, mapped.tolist(), strict=True):
            if explicit or indices.get(label) is not None:
                raise BadRequest(
                    f"label {label} is already in use: it cannot name a new supervoxel"
                )
        data.raise_max_label(max(given))  # first: new ids then come after the given ones
    if not split_id:
        split_id = data.new_labels(1)[0]
    if not remain_id:
        remain_id = data.new_labels(1)[0]
    return split_id, remain_id


def split(data: Labelmap, label: int, body: bytes, author: Author) -> tuple[int, int]:
    """``POST split/{label}``: the RLE's voxels of body ``label`` move to a new body; each
    supervoxel the split crosses becomes a split and a remain supervoxel. Returns (the new
    label, the mutation id)."""
    if not data.services.settings.allow_labelmap_split:
        raise BadRequest("Split endpoint deactivated in this DVID server's configuration.")
    indices = data.indices()
    index = _require(indices.get(label), label, "split")
    body_size = voxels_of(index)
    region = _split_region(data, body, _key_coords(list(index.blocks)))
    outside = region.outside
    crossed: dict[Vec, np.ndarray] = {}
    for coord, mask in region.masks.items():
        svs = np.fromiter(index.blocks[codecs.encode_block_key(*coord)].counts, np.uint64)
        mine = np.isin(region.voxels[coord], svs)
        crossed[coord] = mask & mine
        outside += int((mask & ~mine).sum())
    split_size = sum(int(m.sum()) for m in crossed.values())
    if outside:
        raise BadRequest(f"{outside} voxels of the split RLEs lie outside label {label}")
    if split_size == 0:
        raise BadRequest(f"the split RLEs hold no voxel of label {label}")
    if split_size >= body_size:
        raise BadRequest(f"split of {split_size} voxels would leave nothing of label {label}")
    stamp = _stamp(data, author)
    new_label = data.new_labels(1)[0]
    cut_svs = sorted(
        {int(sv) for c, m in crossed.items() for sv in np.unique(region.voxels[c][m]).tolist()}
    )
    first, _ = data.new_labels(2 * len(cut_svs))
    ids = {sv: (first + 2 * i, first + 2 * i + 1) for i, sv in enumerate(cut_svs)}  # split, remain
    olds, news, bodies = [], [], []
    for sv, (s, r) in ids.items():
        olds.append(sv)
        news.extend([s, r])
        bodies.extend([new_label, label])
    # The old supervoxels keep mapping to the label while the blocks are rewritten, so the
    # index update clears their entries (even in blocks left holding only split voxels).
    data.mapping.update(np.array(news, np.uint64), np.array(bodies, np.uint64))
    affected = [k for k, e in index.blocks.items() if any(sv in e.counts for sv in ids)]
    coords = sorted(_key_coords(affected))
    found = dict(region.voxels)
    rest = [c for c in coords if c not in found]
    found.update(data.volume(0).read_blocks(np.array(rest, np.int64).reshape(-1, 3)))
    blocks = []
    for coord in coords:
        voxels = found[coord]
        out = voxels.copy()
        here = crossed.get(coord)
        for sv, (s, r) in ids.items():
            mine = voxels == sv
            if here is not None:
                out[mine & here] = s
                out[mine & ~here] = r
            else:
                out[mine] = r
        blocks.append((coord, out))
    write_blocks(data, blocks, 0, stamp=stamp, bodies={label, new_label})
    data.mapping.update(np.array(olds, np.uint64), np.zeros(len(olds), np.uint64))
    _log(
        data,
        "split-complete",
        stamp,
        Target=label,
        NewLabel=new_label,
        Split=region.ref,
        SVSplits={str(sv): {"Split": s, "Remain": r} for sv, (s, r) in ids.items()},
    )
    return new_label, stamp.mutid
