"""Per-label element counts of one labelsz instance at one version, and their rankings.

Each stored index type is its own :class:`IdMap` (label -> count), so a ranking reads one
type's few partitions and nothing else, whatever the number of labels; a count of 0 may
stay stored (it is what a removal leaves) but is never ranked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from app.errors import BadRequest
from app.storage.idmap import IdMap

#: The element kinds an annotation's events name, which are also index types.
ELEMENT_TYPES = ("PostSyn", "PreSyn", "Gap", "Note")
#: Kinds counted again in ``AllSyn`` (DVID's ``IsSynaptic``).
SYNAPTIC = frozenset({"PostSyn", "PreSyn", "Gap"})
#: Index types with stored counts.
STORED_TYPES = (*ELEMENT_TYPES, "AllSyn")
#: Every index type a request may name: DVID accepts ``Voxels`` but never counts it.
INDEX_TYPES = (*STORED_TYPES, "Voxels")
#: DVID's ``MaxLabelsReturned``: the default and largest page of ``threshold``.
MAX_LABELS_RETURNED = 10000


def parse_index_type(text: str) -> str:
    """An index type named in a path (case-sensitive, as DVID's); 400 otherwise."""
    if text not in INDEX_TYPES:
        raise BadRequest(f"unknown index type specified ({text!r}): use one of {INDEX_TYPES}")
    return text


def index_types_of(kind: str) -> tuple[str, ...]:
    """The index types one element of ``kind`` counts toward (none for ``Unknown``)."""
    if kind not in ELEMENT_TYPES:
        return ()
    return (kind, "AllSyn") if kind in SYNAPTIC else (kind,)


class LabelCounts:
    """label -> count per stored index type, as seen from one version."""

    def __init__(self, maps: Mapping[str, IdMap]) -> None:
        self.maps = maps

    def get(self, index_type: str, labels: Iterable[int]) -> np.ndarray:
        """The counts of ``labels`` (0 for labels never counted, and for ``Voxels``)."""
        ids = np.fromiter(labels, dtype=np.uint64)
        if index_type not in self.maps:
            return np.zeros(ids.size, np.uint64)
        values, found = self.maps[index_type].lookup_explicit(ids)
        return np.where(found, values, np.uint64(0))

    def entries(self, index_type: str) -> tuple[np.ndarray, np.ndarray]:
        """Every stored (label, count) of the type, zero counts included."""
        if index_type not in self.maps:
            return np.empty(0, np.uint64), np.empty(0, np.uint64)
        return self.maps[index_type].entries(ordered=False)

    def ranked(
        self, index_type: str, limit: int, minimum: int = 1, offset: int = 0
    ) -> list[tuple[int, int]]:
        """Labels with at least ``minimum`` (and at least 1) elements: ranks ``offset`` ..
        ``offset + limit - 1`` by count descending, ties by label ascending."""
        if limit <= 0:
            return []
        labels, counts = self.entries(index_type)
        return rank(labels, counts, limit, minimum, offset)

    def write(self, index_type: str, labels: np.ndarray, counts: np.ndarray) -> None:
        """Set the counts of ``labels`` at the bound (open) version."""
        if labels.size:
            self.maps[index_type].update(labels, counts)

    def replace(self, index_type: str, labels: np.ndarray, counts: np.ndarray) -> None:
        """Make ``labels -> counts`` the type's only nonzero counts (``reload``)."""
        old_labels, old_counts = self.entries(index_type)
        stale = old_labels[(old_counts != 0) & ~np.isin(old_labels, labels)]
        zeros = np.zeros(stale.size, np.uint64)
        self.write(index_type, np.concatenate([labels, stale]), np.concatenate([counts, zeros]))


def rank(
    labels: np.ndarray, counts: np.ndarray, limit: int, minimum: int = 1, offset: int = 0
) -> list[tuple[int, int]]:
    """See :meth:`LabelCounts.ranked`. Only the entries that can reach rank
    ``offset + limit`` are sorted (a partition finds the count they must reach), so
    ``top/10`` over a million labels sorts a handful."""
    keep = (counts >= max(minimum, 1)) & (labels != 0)
    labels, counts = labels[keep], counts[keep]
    offset = max(offset, 0)
    wanted = offset + limit
    if wanted < counts.size:
        least = np.partition(counts, counts.size - wanted)[counts.size - wanted]
        reach = counts >= least
        labels, counts = labels[reach], counts[reach]
    order = np.lexsort((labels, ~counts))  # ~ on uint64 turns ascending into descending
    chosen = order[offset:wanted]
    return list(zip(labels[chosen].tolist(), counts[chosen].tolist(), strict=True))
