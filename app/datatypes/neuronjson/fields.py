"""Which fields an answer shows: DVID's ``show=`` and ``fields=`` query options.

By default the provenance fields (``<field>_user``, ``<field>_time``) are hidden;
``show=user``, ``show=time`` or ``show=all`` bring them back. ``fields=a,b`` keeps only
those fields (with their provenance as ``show`` says), and ``bodyid`` always. The rule is
written once, over field names, so that a single document and a whole column-oriented
table (:mod:`app.datatypes.neuronjson.table`) are filtered alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

USER_SUFFIX = "_user"
TIME_SUFFIX = "_time"


def is_meta(field: str) -> bool:
    """Whether ``field`` is provenance (DVID: any name ending in ``_user`` or ``_time``)."""
    return field.endswith(USER_SUFFIX) or field.endswith(TIME_SUFFIX)


@dataclass(frozen=True)
class Selection:
    """``fields`` (None: all) and which provenance to show."""

    fields: frozenset[str] | None = None
    show_user: bool = False
    show_time: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Selection:
        """DVID's ``showFields`` and ``fieldMap``: an unknown ``show`` shows neither."""
        show = query.get("show", "")
        listed = query.get("fields", "")
        return cls(
            frozenset(listed.split(",")) if listed else None,
            show in ("user", "all"),
            show in ("time", "all"),
        )

    @property
    def only_bodyid(self) -> bool:
        """``fields=bodyid``: DVID lists every id, even of documents with nothing else."""
        return self.fields == frozenset({"bodyid"})

    def names(self, present: Iterable[str]) -> list[str]:
        """The names among ``present`` an answer shows, sorted (Go's key order)."""
        present = set(present)
        if self.fields is None:
            shown = {
                f
                for f in present
                if not (
                    (not self.show_user and f.endswith(USER_SUFFIX))
                    or (not self.show_time and f.endswith(TIME_SUFFIX))
                )
            }
        else:
            shown = set()
            for f in self.fields:
                shown.add(f)
                if self.show_user:
                    shown.add(f + USER_SUFFIX)
                if self.show_time:
                    shown.add(f + TIME_SUFFIX)
            shown &= present
        if "bodyid" in present:
            shown.add("bodyid")
        return sorted(shown)

    def apply(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """DVID's ``selectFields`` of one document."""
        return {f: doc[f] for f in self.names(doc)}
