"""Following a synced segmentation: its logged edits move elements between label lists,
at the version they happened in (spec sync.md §1.1).

Each element's record keeps the supervoxel it lies on, so the edits that only regroup
supervoxels need no voxel reads:

* ``merge-complete`` and ``renumber-complete`` fold whole lists into the target;
* ``cleave-complete`` moves the target's elements lying on cleaved supervoxels;
* ``mutate-blocks`` (voxel writes, including the rewrites of ``split`` and
  ``split-supervoxel``) looks up the elements of the written blocks again: their
  supervoxel, and so maybe their body, changed.

``split-complete`` and ``split-supervoxel-complete`` add nothing of their own (their voxel
rewrites come as ``mutate-blocks``), but they name the supervoxels they retired, whose
elements must leave the body those belonged to. Each source event is logged as its
own annotation event, so subscribers apply the moves in the same order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from app.datatypes.annotation import keys
from app.datatypes.annotation.change import Change
from app.datatypes.annotation.elements import Pos, block_of, without_rels

if TYPE_CHECKING:
    from app.datatypes.annotation import Annotation


def follow(data: Annotation, events: list[dict[str, Any]]) -> None:
    change = Change(data)
    if change.source is None:
        return
    retired = _retired(events)
    for event in events:
        action = event.get("Action")
        if action == "mutate-blocks" and not event.get("Scale"):
            _relookup(change, event["Blocks"], retired)
            change.log("label-change")
        elif action == "merge-complete":
            _fold(change, event["Labels"], event["Target"])
        elif action == "renumber-complete":
            _fold(change, [event["OrigLabel"]], event["NewLabel"])
        elif action == "cleave-complete":
            _cleave(change, event["OrigLabel"], event["CleavedLabel"], event["CleavedSupervoxels"])
            change.log("label-change")
    change.write()


def _retired(events: list[dict[str, Any]]) -> dict[int, int]:
    """Supervoxels a split in this batch retired (they now map to nothing), with the body
    they belonged to: the voxel rewrite is logged before the split's own record, in the
    same transaction, and elements on them must leave that body's list."""
    retired: dict[int, int] = {}
    for event in events:
        if event.get("Action") == "split-complete":
            retired.update((int(sv), event["Target"]) for sv in event["SVSplits"])
        elif event.get("Action") == "split-supervoxel-complete":
            retired[event["Supervoxel"]] = event["Body"]
    return retired


def _fold(change: Change, labels: list[int], target: int) -> None:
    """Whole lists move: no element changes supervoxel, so nothing is looked up."""
    folded = [label for label in labels if label != target]
    if not folded or not target:
        return
    into = change.labels.edit(keys.label_key(target))
    for label in folded:
        into.update(change.labels.edit(keys.label_key(label)))
        change.labels.edit(keys.label_key(label)).clear()
    change.log("label-change", Merged={"Target": target, "Labels": folded})


def _cleave(change: Change, label: int, cleaved: int, supervoxels: list[int]) -> None:
    moving = set(supervoxels)
    entries = change.labels.edit(keys.label_key(label))
    for point in [p for p, (_, sv) in entries.items() if sv in moving]:
        element, sv = entries[point]
        change.label_out(point, label)
        change.label_in(element, sv, cleaved)


def _relookup(change: Change, label_blocks: list[list[int]], retired: dict[int, int]) -> None:
    """Elements in the segmentation blocks written: look up their supervoxels again."""
    assert change.source is not None
    sx, sy, sz = change.source.label_block_size()
    size = np.array((sx, sy, sz), dtype=np.int64)
    written = {tuple(b) for b in label_blocks}
    ours: set[Pos] = set()
    for block in written:
        lo = np.array(block, dtype=np.int64) * size
        hi = lo + size - 1
        first, last = (
            block_of(lo.tolist(), change.block_size),
            block_of(hi.tolist(), change.block_size),
        )
        ours.update(
            (x, y, z)
            for x in range(first[0], last[0] + 1)
            for y in range(first[1], last[1] + 1)
            for z in range(first[2], last[2] + 1)
        )
    block_keys = [keys.block_key(b) for b in ours]
    change.blocks.prefetch(block_keys)
    placed = [
        (key, point)
        for key in block_keys
        for point in change.blocks[key]
        if (point[0] // sx, point[1] // sy, point[2] // sz) in written
    ]
    if not placed:
        return
    old = np.array([change.blocks[k][p][1] for k, p in placed], dtype=np.uint64)
    new = change.supervoxels_at(np.array([p for _, p in placed], dtype=np.int64))
    old_bodies, new_bodies = change.bodies_of(old), change.bodies_of(new)
    for i, sv in enumerate(old.tolist()):
        if sv in retired:
            old_bodies[i] = retired[sv]
    changed = new != old
    touched = set(old_bodies[changed].tolist()) | set(new_bodies[changed].tolist())
    change.labels.prefetch(keys.label_key(b) for b in sorted(touched) if b)
    for (key, point), sv, was, body, sv_before in zip(
        placed, new.tolist(), old_bodies.tolist(), new_bodies.tolist(), old.tolist(), strict=True
    ):
        if sv == sv_before:
            continue
        element = change.blocks.edit(key)[point][0]
        change.blocks.edit(key)[point] = (element, sv)
        if body == was:
            if body:  # same body, new supervoxel: keep the list's supervoxel current
                entries = change.labels.edit(keys.label_key(body))
                entries[point] = (
                    entries[point][0] if point in entries else without_rels(element),
                    sv,
                )
            continue
        change.label_out(point, was)
        change.label_in(element, sv, body)
