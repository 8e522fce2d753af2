"""labelsz: per-label counts of annotation elements by kind, ranked (DVID's ``labelsz``).

It is derived data: synced to an annotation instance, it applies the element changes the
annotation logs (:mod:`.tally`) at the version they happened in, and ``POST reload``
recounts from the annotation's per-label element lists (:mod:`.reload`). Counts live in
one copy-on-write :class:`IdMap` per index type (:mod:`.counts`, keys in :mod:`.keys`),
so nothing needs persisting at commit: a node's partitions and ownership bitmap are
final once it is locked (the base class's ``seal`` suffices).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from fastapi import APIRouter

from app.datatypes import capabilities, register
from app.datatypes.base import Data
from app.datatypes.labelsz import keys
from app.datatypes.labelsz.counts import STORED_TYPES, LabelCounts
from app.datatypes.labelsz.tally import Inside, apply_changes
from app.errors import BadRequest, DVIDError
from app.repo import Instance
from app.storage.idmap import IdMap
from app.storage.journal import Transaction

log = logging.getLogger(__name__)


def parse_roi(value: str) -> str:
    """DVID's ``"<roiname>,<uuid>"`` (both parts needed); 400 otherwise."""
    name, comma, ref = (part.strip() for part in value.partition(","))
    if not comma or not name or not ref or "," in ref:
        raise BadRequest(f'bad ROI value ({value!r}) expected "<roiname>,<uuid>"')
    return f"{name},{ref}"


@register
class LabelSz(Data):
    typename = "labelsz"
    type_version = "0.1"
    help_text = (Path(__file__).parent / "help.txt").read_text()
    accepts_syncs_from: ClassVar[frozenset[str]] = frozenset({"annotation"})
    #: An edit rewrites partitions of several index types: all or nothing.
    transactional = True

    @classmethod
    def routes(cls) -> APIRouter:
        from app.datatypes.labelsz.routes import router

        return router

    @classmethod
    def parse_settings(cls, config: dict[str, str]) -> dict:
        roi = config.get("roi")
        return {} if roi is None else {"StaticROI": parse_roi(str(roi))}

    def extended_json(self) -> dict:
        return {"StaticROI": self.static_roi}

    @property
    def static_roi(self) -> str:
        """The ROI counted within (``"<name>,<uuid>"``), or ``""`` for everywhere."""
        return str(self.settings.get("StaticROI", ""))

    # --- counts --------------------------------------------------------------------------

    def counts(self) -> LabelCounts:
        """The counts at the bound version."""
        maps = {
            index_type: IdMap(
                self.store,
                keys.counts(self.root, index_type),
                self.services.bitmap_cache,
                self.at,
                bits=keys.PARTITION_BITS,
            )
            for index_type in STORED_TYPES
        }
        return LabelCounts(maps)

    def inside(self, lenient: bool = False) -> Inside:
        """Whether positions count: those within the static ROI, if one is set. An ROI
        that cannot be found is a 400, or, when ``lenient`` (applying events), counts
        nothing, as in DVID: refusing events would stop the sync for good."""
        if not self.static_roi:
            return _everywhere
        try:
            return self._roi
        except DVIDError as e:
            if not lenient:
                raise
            log.warning("labelsz ROI unavailable", extra={"data": self.name, "error": e.message})
            return _nowhere

    @functools.cached_property
    def _roi(self) -> Inside:
        """The static ROI's test, resolved once per bound object (a catch-up applies
        many log entries with one)."""
        return capabilities.region_at(self, self.static_roi).region_contains

    # --- syncs ---------------------------------------------------------------------------

    def apply_events(
        self, txn: Transaction, source: Instance, events: list[dict[str, Any]]
    ) -> None:
        apply_changes(self.counts(), events, self.inside(lenient=True))

    def synced_annotations(self) -> list[Instance]:
        """The annotation instances this one follows; 400 if there are none."""
        found = [
            self.repo.instances[name] for name in self.instance.syncs if name in self.repo.instances
        ]
        if not found:
            raise BadRequest(f"labelsz {self.name!r} is not synced to an annotation instance")
        return found

    def reload(self) -> None:
        """``POST reload``: recount everything at this version from the synced
        annotations (see :mod:`.reload`)."""
        from app.datatypes.labelsz.reload import recount

        with self.transaction():
            recount(self, self.synced_annotations())


def _everywhere(points: np.ndarray) -> np.ndarray:
    return np.ones(len(points), dtype=bool)


def _nowhere(points: np.ndarray) -> np.ndarray:
    return np.zeros(len(points), dtype=bool)
