"""What differs in an annotation instance between two versions, and what a merge would
conflict on, told in its own terms: elements (by position) from the block records, the
source of truth; block coordinates, labels and tags from the records a merge would
find written on several sides (:mod:`app.diff` finds the records)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.datatypes.annotation import keys
from app.datatypes.annotation.records import Placed, decode_placed
from app.diff import MergeSides, key_conflicts, key_diff
from app.storage.keyed import KeyView

if TYPE_CHECKING:
    from app.datatypes.annotation import Annotation


def _placed(view: KeyView, key: str) -> Placed:
    """The elements of a block record as a read there sees them (every merge parent's,
    where they disagree: a diff reports a conflicted block rather than failing)."""
    found: Placed = {}
    for value in view.values(key):
        found.update(decode_placed(value))
    return found


def element_changes(data: Annotation, other: Annotation) -> dict[str, list[dict[str, Any]]]:
    """Elements added, changed and deleted from ``data``'s version to ``other``'s."""
    was_view, now_view = data.view(), other.view()
    changes = key_diff(data.keys(), was_view, now_view)
    blocks = [
        k for k in (*changes.added, *changes.changed, *changes.deleted) if k.startswith(keys.BLOCK)
    ]
    added: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    deleted: list[dict[str, Any]] = []
    for key in sorted(blocks):
        was, now = _placed(was_view, key), _placed(now_view, key)
        for pos in sorted(was.keys() | now.keys()):
            if pos not in was:
                added.append(now[pos][0])
            elif pos not in now:
                deleted.append(was[pos][0])
            elif was[pos][0] != now[pos][0]:
                changed.append(now[pos][0])
    return {"added": added, "changed": changed, "deleted": deleted}


def conflicts(data: Annotation, merge: MergeSides) -> dict[str, list[Any]]:
    """Records a merge would conflict on: blocks as coordinates, labels as ids, tags as
    their record keys."""
    found: dict[str, list[Any]] = {}
    for key in key_conflicts(data.keys(), data.dag, merge):
        if key.startswith(keys.BLOCK):
            found.setdefault("blocks", []).append(list(keys.block_coord(key)))
        elif key.startswith(keys.LABEL):
            found.setdefault("labels", []).append(keys.label_of(key))
        else:
            found.setdefault("keys", []).append(key)
    return found
