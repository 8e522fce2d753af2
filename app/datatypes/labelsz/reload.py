"""``POST reload``: recount every label from the synced annotations' element lists.

The recount reads each annotation while holding its transaction lock, so the elements it
counts are exactly those of the annotation's log up to a known entry; the subscriber's
sync cursor is set to that entry in the same labelsz transaction, so no logged change is
counted twice (once in the recount, once more as an event) or missed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from app.datatypes import bind, capabilities
from app.datatypes.labelsz.counts import ELEMENT_TYPES, STORED_TYPES, SYNAPTIC
from app.datatypes.labelsz.tally import Inside
from app.repo import Instance
from app.syncs import mark_applied

if TYPE_CHECKING:
    from app.datatypes.labelsz import LabelSz

#: Elements gathered before the ROI test and counting run over them at once (one ROI
#: call per batch, not one per label).
BATCH = 1 << 18


class Recount:
    """Per index type, label -> count of the elements added, within the ROI."""

    def __init__(self, inside: Inside) -> None:
        self.inside = inside
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.pending_size = 0
        self.found: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {t: [] for t in STORED_TYPES}

    def add(self, label: int, positions: np.ndarray, kinds: list[str]) -> None:
        if label == 0 or not kinds:
            return
        n = len(kinds)
        labels = np.full(n, label, np.uint64)
        self.pending.append((labels, np.asarray(positions).reshape(n, 3), np.asarray(kinds)))
        self.pending_size += n
        if self.pending_size >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        labels = np.concatenate([p[0] for p in self.pending])
        positions = np.concatenate([p[1] for p in self.pending])
        kinds = np.concatenate([p[2] for p in self.pending])
        self.pending, self.pending_size = [], 0
        within = np.asarray(self.inside(positions), dtype=bool)
        labels, kinds = labels[within], kinds[within]
        for index_type in ELEMENT_TYPES:
            self._count(index_type, labels[kinds == index_type])
        self._count("AllSyn", labels[np.isin(kinds, sorted(SYNAPTIC))])

    def _count(self, index_type: str, labels: np.ndarray) -> None:
        if labels.size:
            self.found[index_type].append(np.unique(labels, return_counts=True))

    def totals(self, index_type: str) -> tuple[np.ndarray, np.ndarray]:
        """(labels, counts) of the type, labels sorted."""
        self._flush()
        parts = self.found[index_type]
        if not parts:
            return np.empty(0, np.uint64), np.empty(0, np.uint64)
        labels = np.concatenate([p[0] for p in parts])
        counts = np.concatenate([p[1] for p in parts]).astype(np.uint64)
        unique, inverse = np.unique(labels, return_inverse=True)
        sums = np.zeros(unique.size, np.uint64)
        np.add.at(sums, inverse, counts)
        return unique, sums


def recount(data: LabelSz, annotations: list[Instance]) -> None:
    """Replace every count of ``data`` at its version by a recount of ``annotations``
    (within ``data``'s open transaction)."""
    tally = Recount(data.inside())
    for instance in annotations:
        capabilities.require(instance, capabilities.ElementLabels, "an annotation with labels")
        source = bind(data.services, data.repo, data.version.uuid, instance)
        assert isinstance(source, capabilities.ElementLabels)
        source.prepare_read()  # its own sources' edits first, outside its lock
        with source.transaction() as held:
            for label, positions, kinds in source.labeled_elements():
                tally.add(label, positions, kinds)
            # Entries up to here are in what was read (a catch-up inside logs at seq).
            applied = held.seq if held.events else held.seq - 1
        mark_applied(data, instance, applied)
    counts = data.counts()
    for index_type in STORED_TYPES:
        counts.replace(index_type, *tally.totals(index_type))
