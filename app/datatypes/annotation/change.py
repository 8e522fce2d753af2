"""One change to an annotation instance: the records it touches and the label moves it
makes, which it logs for subscribers (labelsz).

Every edit, whether a client's POST or a batch of synced segmentation events, builds one
:class:`Change`, places and removes elements through it, logs what it did
(:meth:`Change.log`) and writes the touched records (:meth:`Change.write`). Beside
DVID's fields each logged event carries what happened to the per-label lists, the
contract labelsz (or any subscriber) follows, in this order:

``"Merged": {"Target": t, "Labels": [...]}``
    whole lists folded into ``t`` (a merge or renumber upstream);
``"Removed": [[x, y, z, kind, label], ...]``
    elements that left ``label``;
``"Added": [[x, y, z, kind, label], ...]``
    elements that joined ``label``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from app.datatypes.annotation import keys
from app.datatypes.annotation.elements import Element, Pos, block_of, pos, without_rels
from app.datatypes.annotation.records import Placed, placed_records, tagged_records

if TYPE_CHECKING:
    from app.datatypes.annotation import Annotation
    from app.datatypes.capabilities import LabelSource


class Change:
    """The records one edit touches, and the label moves it made."""

    def __init__(self, data: Annotation) -> None:
        self.data = data
        view = data.view()
        self.blocks = placed_records(view)
        self.labels = placed_records(view)
        self.tags = tagged_records(view)
        self.block_size = data.block_size()
        self.source: LabelSource | None = data.label_source()
        self.added: list[list[Any]] = []
        self.removed: list[list[Any]] = []

    # --- labels of positions ---------------------------------------------------------------

    def supervoxels_at(self, points: np.ndarray) -> np.ndarray:
        if self.source is None or len(points) == 0:
            return np.zeros(len(points), dtype=np.uint64)
        return self.source.supervoxels_at(points)

    def bodies_of(self, supervoxels: np.ndarray) -> np.ndarray:
        if self.source is None or len(supervoxels) == 0:
            return np.zeros(len(supervoxels), dtype=np.uint64)
        return self.source.bodies_of(np.asarray(supervoxels, dtype=np.uint64))

    def block(self, point: Pos | list[int]) -> Placed:
        """The block record holding ``point``, for editing."""
        return self.blocks.edit(keys.block_key(block_of(point, self.block_size)))

    def prefetch_blocks(self, points: list[Pos] | list[list[int]]) -> None:
        self.blocks.prefetch(keys.block_key(block_of(p, self.block_size)) for p in points)

    # --- the denormalized lists ------------------------------------------------------------

    def label_in(self, element: Element, supervoxel: int, body: int) -> None:
        if body:
            key = keys.label_key(body)
            self.labels.edit(key)[pos(element)] = (without_rels(element), supervoxel)
            self.added.append([*element["Pos"], element["Kind"], body])

    def label_out(self, point: Pos, body: int) -> None:
        if body:
            entry = self.labels.edit(keys.label_key(body)).pop(point, None)
            if entry is not None:
                self.removed.append([*point, entry[0]["Kind"], body])

    def tag_in(self, element: Element) -> None:
        for tag in element["Tags"] or ():
            self.tags.edit(keys.tag_key(tag))[pos(element)] = without_rels(element)

    def tag_out(self, point: Pos, tags: list[str] | None) -> None:
        for tag in tags or ():
            self.tags.edit(keys.tag_key(tag)).pop(point, None)

    # --- placing elements ------------------------------------------------------------------

    def place(self, elements: list[Element]) -> None:
        """Add or replace elements by position, keeping tag and label lists current."""
        points = np.array([e["Pos"] for e in elements], dtype=np.int64).reshape(-1, 3)
        supervoxels = self.supervoxels_at(points)
        self.prefetch_blocks([e["Pos"] for e in elements])
        old = [self.block(e["Pos"]).get(pos(e)) for e in elements]
        old_bodies = self.bodies_of(np.array([o[1] if o else 0 for o in old], np.uint64))
        bodies = self.bodies_of(supervoxels)
        touched = set(bodies.tolist()) | set(old_bodies.tolist())
        self.labels.prefetch(keys.label_key(b) for b in sorted(touched) if b)
        tags = {t for e in elements for t in e["Tags"] or ()}
        tags.update(t for o in old if o for t in o[0]["Tags"] or ())
        self.tags.prefetch(keys.tag_key(t) for t in sorted(tags))
        for element, sv, body, before, old_body in zip(
            elements, supervoxels.tolist(), bodies.tolist(), old, old_bodies.tolist(), strict=True
        ):
            point = pos(element)
            if before is not None:
                self.tag_out(point, before[0]["Tags"])
                self.label_out(point, old_body)
            self.block(point)[point] = (element, sv)
            self.tag_in(element)
            self.label_in(element, sv, body)

    def remove(self, point: Pos) -> tuple[Element, int] | None:
        """Take the element at ``point`` out of its block, tags and label list."""
        entry = self.block(point).pop(point, None)
        if entry is not None:
            element, sv = entry
            self.tag_out(point, element["Tags"])
            self.label_out(point, int(self.bodies_of(np.array([sv], np.uint64))[0]))
        return entry

    def retarget(
        self, related: list[dict[str, Any]], old: list[int], new: list[int] | None
    ) -> None:
        """Point (or, with ``new`` None, drop) relationships to ``old`` held by elements of
        ``old``'s block and of the blocks the ``related`` relationships name."""
        points = [r["To"] for r in related] + [old]
        self.prefetch_blocks(points)
        for key in {keys.block_key(block_of(p, self.block_size)) for p in points}:
            if not any(
                r["To"] == old
                for element, _ in self.blocks[key].values()
                for r in element["Rels"] or ()
            ):
                continue
            for element, _ in self.blocks.edit(key).values():
                rels = element["Rels"]
                if not rels:
                    continue
                if new is None:
                    element["Rels"] = [r for r in rels if r["To"] != old]
                else:
                    element["Rels"] = [{**r, "To": new} if r["To"] == old else r for r in rels]

    # --- publishing ------------------------------------------------------------------------

    def log(self, action: str, **fields: Any) -> None:
        """Log ``action`` with the label moves made since the last log (subscribers apply
        each logged event's moves in turn, so events that must apply in order are logged
        separately)."""
        moves: dict[str, Any] = {}
        if self.removed:
            moves["Removed"] = self.removed
        if self.added:
            moves["Added"] = self.added
        self.data.event(action, **fields, **moves)
        self.added, self.removed = [], []

    def write(self) -> None:
        """Write every record the change touched."""
        data = self.data
        self.blocks.flush(data.write, data.delete)
        self.labels.flush(data.write, data.delete)
        self.tags.flush(data.write, data.delete)
