"""Count changes from an annotation's logged element changes (the sync contract).

An annotation event may carry, besides DVID's fields:

* ``"Merged": {"Target": t, "Labels": [l, ...]}`` — whole element lists folded into ``t``;
* ``"Removed": [[x, y, z, "Kind", label], ...]`` — elements that left ``label``;
* ``"Added": [[x, y, z, "Kind", label], ...]`` — elements that joined ``label``;

applied in that order, event after event. Label 0 is never counted. A batch of events is
applied in memory to the counts of just the labels it names, loaded once, and written
back once per index type, so each touched partition is rewritten once per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.datatypes.labelsz.counts import STORED_TYPES, LabelCounts, index_types_of

log = logging.getLogger(__name__)

#: Whether each voxel position ``(n, 3)`` lies where elements are counted (the ROI).
Inside = Callable[[np.ndarray], np.ndarray]


@dataclass
class Element:
    position: tuple[int, int, int]
    kind: str
    label: int


@dataclass
class Changes:
    """What one event says about element lists."""

    merged: tuple[int, list[int]] | None = None
    removed: list[Element] = field(default_factory=list)
    added: list[Element] = field(default_factory=list)


def _uint(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise ValueError(f"{what} {value!r} is not a uint64")
    return value


def _elements(value: Any, what: str) -> list[Element]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{what} is not a list")
    out = []
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 5 or not isinstance(entry[3], str):
            raise ValueError(f"{what} entry {entry!r} is not [x, y, z, kind, label]")
        x, y, z, kind, label = entry
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in (x, y, z)):
            raise ValueError(f"{what} entry {entry!r} has a non-integer position")
        out.append(Element((x, y, z), kind, _uint(label, "label")))
    return out


def parse_changes(event: dict[str, Any]) -> Changes:
    """The element changes an event carries; ValueError if they are malformed."""
    merged = None
    if event.get("Merged") is not None:
        spec = event["Merged"]
        if not isinstance(spec, dict) or not isinstance(spec.get("Labels"), list):
            raise ValueError('"Merged" is not {"Target": t, "Labels": [...]}')
        labels = [_uint(label, "merged label") for label in spec["Labels"]]
        merged = (_uint(spec.get("Target"), "merge target"), labels)
    removed = _elements(event.get("Removed"), '"Removed"')
    return Changes(merged, removed, _elements(event.get("Added"), '"Added"'))


class Tally:
    """The counts of the labels a batch names, changed in memory, then written once."""

    def __init__(self, counts: LabelCounts, needed: dict[str, set[int]]) -> None:
        self.counts = counts
        self.before: dict[str, dict[int, int]] = {}
        for index_type, labels in needed.items():
            ids = sorted(labels)
            values = counts.get(index_type, ids).tolist() if ids else []
            self.before[index_type] = dict(zip(ids, values, strict=True))
        self.now = {t: dict(values) for t, values in self.before.items()}

    def fold(self, target: int, labels: Iterable[int]) -> None:
        """Every count of ``labels`` moves to ``target`` (to nothing if it is 0)."""
        for values in self.now.values():
            for label in labels:
                if label in (0, target):
                    continue
                moved, values[label] = values[label], 0
                if target:
                    values[target] += moved

    def add(self, element: Element, delta: int) -> None:
        """Count ``element`` in (1) or out (-1) of its label; never below 0 (DVID floors
        a count that would go negative, which only a lost event can cause)."""
        for index_type in index_types_of(element.kind):
            values = self.now[index_type]
            count = values[element.label] + delta
            if count < 0:
                log.warning(
                    "labelsz count would drop below 0",
                    extra={"label": element.label, "index_type": index_type},
                )
            values[element.label] = max(count, 0)

    def write(self) -> None:
        for index_type, values in self.now.items():
            before = self.before[index_type]
            changed = sorted(label for label, count in values.items() if count != before[label])
            labels = np.array(changed, dtype=np.uint64)
            counts = np.array([values[label] for label in changed], dtype=np.uint64)
            self.counts.write(index_type, labels, counts)


def _needed(batch: list[tuple[Changes, list[bool], list[bool]]]) -> dict[str, set[int]]:
    """Per index type, the labels whose counts the batch reads or changes."""
    needed: dict[str, set[int]] = {t: set() for t in STORED_TYPES}
    for changes, removed_in, added_in in batch:
        if changes.merged is not None:
            target, labels = changes.merged
            for index_type in STORED_TYPES:
                needed[index_type].update(labels, [target])
        pairs = zip(changes.removed + changes.added, removed_in + added_in, strict=True)
        for element, inside in pairs:
            if inside:
                for index_type in index_types_of(element.kind):
                    needed[index_type].add(element.label)
    return {t: labels - {0} for t, labels in needed.items() if labels - {0}}


def apply_changes(counts: LabelCounts, events: list[dict[str, Any]], inside: Inside) -> None:
    """Apply the element changes of ``events`` (in order) to ``counts``. An event whose
    changes are malformed is logged and skipped: refusing it would stop every later
    event from being applied."""
    parsed: list[Changes] = []
    for event in events:
        try:
            parsed.append(parse_changes(event))
        except ValueError as e:
            log.error("labelsz skips a malformed event", extra={"error": str(e), "event": event})
    elements = [e for changes in parsed for e in changes.removed + changes.added]
    flags = iter(_counted(elements, inside))
    batch = []
    for changes in parsed:
        removed_in = [next(flags) for _ in changes.removed]
        added_in = [next(flags) for _ in changes.added]
        batch.append((changes, removed_in, added_in))
    tally = Tally(counts, _needed(batch))
    for changes, removed_in, added_in in batch:
        if changes.merged is not None:
            tally.fold(*changes.merged)
        for delta, elements_, flags_ in ((-1, changes.removed, removed_in),
                                         (1, changes.added, added_in)):  # fmt: skip
            for element, counted in zip(elements_, flags_, strict=True):
                if counted:
                    tally.add(element, delta)
    tally.write()


def _counted(elements: list[Element], inside: Inside) -> list[bool]:
    """Whether each element counts: a known label (not 0), within the ROI."""
    if not elements:
        return []
    positions = np.array([e.position for e in elements], dtype=np.int64)
    within = inside(positions)
    return [bool(ok) and e.label != 0 for e, ok in zip(elements, within, strict=True)]
