"""annotation: versioned point annotations (synapses, bookmarks), kept by block, with
per-tag and per-body lists that follow a synced segmentation's edits.

Storage (keys in :mod:`.keys`) is keyed records, copy-on-write per version node: a box or
block query reads just the blocks it covers, and a label or tag query one record, at any
DAG depth. Edits are in :mod:`.edits`, the reaction to segmentation edits in
:mod:`.follow`; both go through :class:`.change.Change`, which logs the label moves that
labelsz follows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from fastapi import APIRouter

from app.datatypes import bind, register
from app.datatypes.annotation import keys
from app.datatypes.annotation.elements import positions
from app.datatypes.annotation.records import decode_placed
from app.datatypes.base import Data
from app.datatypes.capabilities import LabelSource
from app.datatypes.keyed import KeyedData
from app.diff import MergeSides
from app.errors import BadRequest
from app.repo import Instance
from app.storage.journal import Transaction

HELP_FILE = Path(__file__).parent / "help.txt"
#: Block size without a synced segmentation (DVID's ``DefaultBlockSize``).
DEFAULT_BLOCK_SIZE = (64, 64, 64)


@register
class Annotation(KeyedData):
    typename = "annotation"
    type_version = "0.1"
    help_text = HELP_FILE.read_text()
    # An element edit rewrites a block, label and tag lists together: all or nothing.
    transactional = True
    accepts_syncs_from: ClassVar[frozenset[str]] = frozenset({"labelmap"})

    @classmethod
    def routes(cls) -> APIRouter:
        from app.datatypes.annotation.routes import router

        return router

    def label_source(self) -> LabelSource | None:
        """The synced segmentation at this version, if any."""
        for name in self.instance.syncs:
            instance: Instance | None = self.repo.instances.get(name)
            if instance is None:
                continue
            source = bind(self.services, self.repo, self.version.uuid, instance)
            if isinstance(source, LabelSource):
                return source
        return None

    def block_size(self) -> tuple[int, int, int]:
        """The synced segmentation's block size, else 64³ (as DVID)."""
        source = self.label_source()
        return source.label_block_size() if source is not None else DEFAULT_BLOCK_SIZE

    def check_syncs(self, sources: list[Data]) -> None:
        """Elements are filed by block: a segmentation with another block size would
        hide the ones already posted, so it must be synced before elements are."""
        for source in sources:
            if not isinstance(source, LabelSource):
                continue
            size = source.label_block_size()
            if size != self.block_size() and self.view().keys_in_range(
                *keys.prefix_range(keys.BLOCK)
            ):
                raise BadRequest(
                    f"annotation {self.name!r} already holds elements in {self.block_size()} "
                    f"blocks; {source.name!r} has {size} blocks: sync before posting elements"
                )

    def apply_events(
        self, txn: Transaction, source: Instance, events: list[dict[str, Any]]
    ) -> None:
        from app.datatypes.annotation.follow import follow

        follow(self, events)

    # --- diffs and merge conflicts (app.diff) ----------------------------------------------

    def diff(self, other: Self) -> dict[str, Any] | None:
        """Elements added, changed and deleted (label and tag lists follow from them)."""
        from app.datatypes.annotation.changes import element_changes

        elements = element_changes(self, other)
        return {"elements": elements} if any(elements.values()) else None

    def merge_conflicts(self, merge: MergeSides) -> dict[str, Any] | None:
        from app.datatypes.annotation.changes import conflicts

        return conflicts(self, merge) or None

    # --- as element lists for counters (capabilities.ElementLabels) ----------------------

    def labeled_elements(self) -> Iterator[tuple[int, np.ndarray, list[str]]]:
        view = self.view()
        for key in view.keys_in_range(*keys.prefix_range(keys.LABEL)):
            data = view.get(key)
            if data:
                elements = [e for e, _ in decode_placed(data).values()]
                yield keys.label_of(key), positions(elements), [e["Kind"] for e in elements]
