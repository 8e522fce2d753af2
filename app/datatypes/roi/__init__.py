"""roi: a versioned region of interest, a set of blocks given as runs along x.

The ROI at a version is one keyed record (key ``spans``: the spans as little-endian int32
quadruples, see :mod:`app.datatypes.roi.spans`), so a read is one record get, a POST
replaces the whole ROI at once and a DELETE is a tombstone; what a version sees of its
ancestors comes from :class:`~app.datatypes.keyed.KeyedData`. Other datatypes ask an ROI
which blocks or points it holds through the ``Region`` capability
(:mod:`app.datatypes.capabilities`), never by importing this package.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Self

import numpy as np
from fastapi import APIRouter

from app.datatypes import register
from app.datatypes.keyed import KeyedData
from app.datatypes.roi import spans as roi_spans
from app.datatypes.roi.spans import SpanIndex
from app.errors import BadRequest
from app.volumes.geometry import COORD_LIMIT, Box, Vec, parse_ints, vec

#: The one record holding the ROI at a version.
SPANS_KEY = "spans"
DEFAULT_BLOCK_SIZE = "32,32,32"
#: DVID's ``MinZ``/``MaxZ`` of an empty ROI (``math.MaxInt32``, ``math.MinInt32``).
EMPTY_Z_RANGE = (2**31 - 1, -(2**31))


@register
class Roi(KeyedData):
    typename = "roi"
    type_version = "0.1"
    help_text = (Path(__file__).parent / "help.txt").read_text()
    #: DVID's ``IsMutationRequest``: ``POST ptquery`` only reads.
    read_posts = frozenset({"ptquery"})

    @classmethod
    def routes(cls) -> APIRouter:
        from app.datatypes.roi.routes import router

        return router

    @classmethod
    def parse_settings(cls, config: dict[str, str]) -> dict:
        """``BlockSize``: three positive integers ``x,y,z`` (DVID requires all three)."""
        text = config.get("blocksize", DEFAULT_BLOCK_SIZE)
        size = parse_ints(text, "setting 'BlockSize'", 3, sep=",")
        if any(not 0 < s <= COORD_LIMIT for s in size):
            raise BadRequest(f"setting 'BlockSize' {text!r} must be 3 positive integers")
        return {"BlockSize": list(size)}

    # --- the ROI at the bound version ----------------------------------------------------

    @property
    def block_size(self) -> Vec:
        return vec(self.settings["BlockSize"])

    @cached_property
    def spans(self) -> np.ndarray:
        """The spans ``(n, 4)`` int32 z, y, x0, x1 sorted as DVID lists them; empty if
        none were posted or they were deleted."""
        value = self.view().get(SPANS_KEY)
        return roi_spans.decode(value) if value else np.empty((0, 4), roi_spans.SPAN_DTYPE)

    @cached_property
    def index(self) -> SpanIndex:
        return SpanIndex(self.spans)

    def put_spans(self, spans: np.ndarray) -> None:
        """Replace the ROI at this version (DVID tombstones the old spans, then writes)."""
        self.write(SPANS_KEY, roi_spans.encode(spans))
        self._forget()

    def delete_spans(self) -> None:
        self.delete(SPANS_KEY)
        self._forget()

    def _forget(self) -> None:
        """Drop what was read before a write, so this object reads its own writes."""
        self.__dict__.pop("spans", None)
        self.__dict__.pop("index", None)

    def extended_json(self) -> dict:
        """DVID's ``Properties``. DVID keeps one MinZ/MaxZ per instance, from whichever
        version wrote last; here they are the z range of the spans this version sees
        (over every merge parent's ROI where parents disagree, so info never conflicts)."""
        z = [roi_spans.decode(value)[:, 0] for value in self.view().values(SPANS_KEY)]
        zs = np.concatenate(z) if z else np.empty(0, np.int32)
        min_z, max_z = (int(zs.min()), int(zs.max())) if len(zs) else EMPTY_Z_RANGE
        return {"BlockSize": list(self.block_size), "MinZ": min_z, "MaxZ": max_z}

    def mask(self, box: Box) -> np.ndarray:
        """``box`` as a ZYX uint8 volume: 1 where the voxel's block is in the ROI."""
        size = self.block_size
        lo = vec(o // s for o, s in zip(box.offset, size, strict=True))
        hi = vec((e - 1) // s for e, s in zip(box.end, size, strict=True))
        inside = self.index.grid(lo, hi)
        x, y, z = (
            np.arange(o, e, dtype=np.int64) // s - first
            for o, e, s, first in zip(box.offset, box.end, size, lo, strict=True)
        )
        return inside[np.ix_(z, y, x)].view(np.uint8)

    # --- diffs (app.diff) ------------------------------------------------------------------

    def diff(self, other: Self) -> dict[str, Any] | None:
        """The spans of blocks added to and deleted from the ROI at ``other``'s version."""
        if super().diff(other) is None:
            return None
        was, now = self._every_parents_index(), other._every_parents_index()
        before, after = was.blocks(), now.blocks()
        added = roi_spans.from_blocks(after[~was.contains(after)])
        deleted = roi_spans.from_blocks(before[~now.contains(before)])
        if not len(added) and not len(deleted):
            return None
        return {"spans": {"added": added.tolist(), "deleted": deleted.tolist()}}

    def _every_parents_index(self) -> SpanIndex:
        """The blocks a read sees, over every merge parent's ROI where parents disagree
        (a read of :attr:`spans` would be a conflict; a diff must not fail on one)."""
        found = [roi_spans.decode(value) for value in self.view().values(SPANS_KEY)]
        if len(found) < 2:
            return SpanIndex(found[0] if found else np.empty((0, 4), roi_spans.SPAN_DTYPE))
        spans = np.concatenate(found)
        return SpanIndex(spans[np.lexsort((spans[:, 2], spans[:, 1], spans[:, 0]))])

    # --- the Region capability -----------------------------------------------------------

    def region_block_size(self) -> Vec:
        return self.block_size

    def region_blocks(self) -> np.ndarray:
        return self.index.blocks()

    def region_contains(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.int64).reshape(-1, 3)
        blocks = np.floor_divide(points, np.array(self.block_size, dtype=np.int64))
        return self.index.contains(blocks)
