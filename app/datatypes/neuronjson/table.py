"""Every document visible at one version, column by column, for queries over 10^5 bodies.

A :class:`DocTable` holds body ids (sorted) and, per field, a dictionary-encoded column:
the distinct values as canonical JSON texts (:func:`~app.datatypes.neuronjson.docjson.dumps`)
and one int32 code per row (-1: the document lacks the field). A query is answered by
matching each *distinct* value once (:func:`~app.datatypes.neuronjson.query.field_matches`)
and indexing that answer with the codes, so its cost grows with the values a field takes,
not with the documents; answers are assembled from the stored texts without re-encoding.

Tables are immutable: the table of a locked version never changes, and an open version is
read as its parent's table plus a small table of its own records (:class:`DocView`).
:func:`to_bytes` and :func:`from_bytes` are the snapshot format of docs/format.md.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import lz4.frame
import numpy as np
import orjson

from app.datatypes.neuronjson.docjson import dumps
from app.datatypes.neuronjson.fields import TIME_SUFFIX, Selection
from app.datatypes.neuronjson.query import Exists, Query, field_matches
from backends import StoreError

SNAPSHOT_MAGIC = b"NJT1"
SEPARATOR = b"\n"  # never inside canonical JSON text (newlines are escaped)
EMPTY_IDS = np.zeros(0, np.uint64)


@dataclass
class Column:
    """One field: ``codes[row]`` indexes the distinct texts (-1: absent)."""

    codes: np.ndarray
    blob: bytes  # the distinct texts joined by SEPARATOR
    count: int  # how many distinct texts
    _texts: list[bytes] | None = field(default=None, repr=False)
    _values: list[Any] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, codes: np.ndarray, texts: list[bytes]) -> Column:
        return cls(codes, SEPARATOR.join(texts), len(texts), texts)

    @property
    def texts(self) -> list[bytes]:
        if self._texts is None:
            self._texts = self.blob.split(SEPARATOR) if self.count else []
        return self._texts

    @property
    def values(self) -> list[Any]:
        """The distinct values, parsed once (all in one ``orjson`` call)."""
        if self._values is None:
            joined = self.blob.replace(SEPARATOR, b",")
            self._values = orjson.loads(b"[" + joined + b"]") if self.count else []
        return self._values

    def distinct_mask(self, predicate: Any) -> np.ndarray:
        """``predicate`` of every distinct value, plus a final False for absent rows
        (code -1 indexes it)."""
        hits = [bool(predicate(v)) for v in self.values]
        return np.array([*hits, False], dtype=bool)

    def rows(self, predicate: Any) -> np.ndarray:
        return self.distinct_mask(predicate)[self.codes]

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes) + len(self.blob)


def _compact(codes: np.ndarray, texts: list[bytes]) -> Column:
    """Drop unused texts and merge duplicates (tables built from layers collect both)."""
    used = np.unique(codes[codes >= 0])
    remap = np.full(len(texts) + 1, -1, np.int32)
    index: dict[bytes, int] = {}
    kept: list[bytes] = []
    for old in used.tolist():
        text = texts[old]
        code = index.get(text)
        if code is None:
            code = index[text] = len(kept)
            kept.append(text)
        remap[old] = code
    return Column.of(remap[codes], kept)


@dataclass
class DocTable:
    """Documents by ascending body id, column-oriented."""

    ids: np.ndarray  # uint64, ascending
    columns: dict[str, Column]

    @classmethod
    def empty(cls) -> DocTable:
        return cls(EMPTY_IDS, {})

    @classmethod
    def build(cls, docs: Iterable[tuple[int, dict[str, Any]]]) -> DocTable:
        """A table of ``(bodyid, document)`` pairs (any order, ids distinct)."""
        items = sorted(docs, key=lambda item: item[0])
        n = len(items)
        lookups: dict[str, dict[Any, int]] = {}
        texts: dict[str, list[bytes]] = {}
        rows: dict[str, list[int]] = {}
        codes: dict[str, list[int]] = {}
        for row, (_, doc) in enumerate(items):
            for name, value in doc.items():
                lookup = lookups.get(name)
                if lookup is None:
                    lookup = lookups[name] = {}
                    texts[name], rows[name], codes[name] = [], [], []
                # Strings are looked up as themselves (cheap); anything else by its text,
                # so that 1 and true, equal in Python, stay apart.
                key: str | bytes = value if type(value) is str else dumps(value)
                code = lookup.get(key)
                if code is None:
                    code = lookup[key] = len(texts[name])
                    texts[name].append(key if isinstance(key, bytes) else dumps(value))
                rows[name].append(row)
                codes[name].append(code)
        columns = {}
        for name in lookups:
            column = np.full(n, -1, np.int32)
            column[np.array(rows[name], np.int64)] = np.array(codes[name], np.int32)
            columns[name] = Column.of(column, texts[name])
        ids = np.array([bodyid for bodyid, _ in items], np.uint64)
        return cls(ids, columns)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes) + sum(c.nbytes for c in self.columns.values())

    def overlaid(self, changes: dict[int, dict[str, Any] | None]) -> DocTable:
        """This table with ``changes`` applied (a document replaces, None removes)."""
        over = DocTable.build((k, v) for k, v in changes.items() if v is not None)
        changed = np.array(sorted(changes), np.uint64)
        keep = ~np.isin(self.ids, changed)
        ids = np.concatenate([self.ids[keep], over.ids])
        order = np.argsort(ids, kind="stable")
        kept = int(keep.sum())
        columns = {}
        for name in sorted(set(self.columns) | set(over.columns)):
            parts, texts = [], []
            base = self.columns.get(name)
            if base is not None:
                parts.append(base.codes[keep])
                texts.extend(base.texts)
            else:
                parts.append(np.full(kept, -1, np.int32))
            top = over.columns.get(name)
            if top is not None:
                shifted = np.where(top.codes >= 0, top.codes + len(texts), -1).astype(np.int32)
                parts.append(shifted)
                texts.extend(top.texts)
            else:
                parts.append(np.full(len(over), -1, np.int32))
            codes = np.concatenate(parts)[order]
            # Texts of replaced rows and duplicates pile up; compact once they dominate.
            if len(texts) > 2 * len(codes) + 64:
                columns[name] = _compact(codes, texts)
            else:
                columns[name] = Column.of(codes, texts)
        return DocTable(ids[order], columns)

    # --- reading ----------------------------------------------------------------------------

    def present(self, name: str) -> np.ndarray:
        """Rows whose field ``name`` exists and is not null."""
        column = self.columns.get(name)
        if column is None:
            return np.zeros(len(self), bool)
        return column.rows(lambda v: v is not None)

    def mask(self, queries: list[Query]) -> np.ndarray:
        """Rows matching any of ``queries`` (DVID's ``queryMatch``)."""
        out = np.zeros(len(self), bool)
        for query in queries:
            rows = np.ones(len(self), bool)
            for name, wanted in query.items():
                if isinstance(wanted, Exists):
                    present = self.present(name)
                    rows &= present if wanted.present else ~present
                    continue
                column = self.columns.get(name)
                if column is None:
                    rows[:] = False
                    break
                rows &= column.rows(lambda v, w=wanted: field_matches(w, v))
            out |= rows
        return out

    def render(self, rows: np.ndarray, selection: Selection) -> list[bytes]:
        """The documents of ``rows`` as DVID writes them, filtered by ``selection``."""
        acc = np.full(len(rows), b"", dtype=object)
        for name in selection.names(self.columns):
            column = self.columns[name]
            prefix = b"," + dumps(name) + b":"
            codes = column.codes[rows]
            # Pieces only for the values these rows hold (few rows: few of the values).
            used, inverse = np.unique(codes, return_inverse=True)
            texts = column.texts
            pieces = [b"" if code < 0 else prefix + texts[code] for code in used.tolist()]
            acc = acc + np.array(pieces, dtype=object)[inverse]
        return [b"{" + r[1:] + b"}" for r in acc.tolist()]

    def shown_fields(self, rows: np.ndarray, selection: Selection) -> np.ndarray:
        """How many fields besides ``bodyid`` each row shows under ``selection``."""
        count = np.zeros(len(rows), np.int32)
        for name in selection.names(self.columns):
            if name != "bodyid":
                count += self.columns[name].codes[rows] >= 0
        return count


@dataclass
class Hits:
    """Rows of a :class:`DocView`'s layers, in ascending body id order."""

    ids: np.ndarray
    layers: list[tuple[DocTable, np.ndarray]]  # rows per layer
    order: np.ndarray  # positions of the layers' concatenated rows, by id

    def render(self, selection: Selection) -> list[bytes]:
        docs: list[bytes] = []
        for table, rows in self.layers:
            docs.extend(table.render(rows, selection))
        return [docs[i] for i in self.order.tolist()]

    def filter_shown(self, selection: Selection) -> Hits:
        """Only rows showing some field beyond ``bodyid`` (DVID's ``all``)."""
        keep = np.concatenate(
            [t.shown_fields(r, selection) > 0 for t, r in self.layers] or [np.zeros(0, bool)]
        )
        layers = []
        at = 0
        for table, rows in self.layers:
            layers.append((table, rows[keep[at : at + len(rows)]]))
            at += len(rows)
        return _hits(layers)


def _hits(layers: list[tuple[DocTable, np.ndarray]]) -> Hits:
    ids = np.concatenate([t.ids[r] for t, r in layers] or [EMPTY_IDS])
    order = np.argsort(ids, kind="stable")
    return Hits(ids[order], layers, order)


class DocView:
    """What a read at one version sees: layers of tables whose kept rows have disjoint
    ids (a locked version: its table; an open one: its parent's table without the ids
    the version rewrote, and a table of the version's own documents)."""

    def __init__(self, layers: list[tuple[DocTable, np.ndarray | None]]) -> None:
        self.layers = [
            (table, np.ones(len(table), bool) if keep is None else keep) for table, keep in layers
        ]

    def _select(self, masks: list[np.ndarray]) -> Hits:
        return _hits(
            [(t, np.flatnonzero(keep & m)) for (t, keep), m in zip(self.layers, masks, strict=True)]
        )

    def everything(self) -> Hits:
        return self._select([np.ones(len(t), bool) for t, _ in self.layers])

    def matching(self, queries: list[Query]) -> Hits:
        return self._select([t.mask(queries) for t, _ in self.layers])

    def among(self, ids: np.ndarray) -> Hits:
        return self._select([np.isin(t.ids, ids) for t, _ in self.layers])

    def in_range(self, lo: int, hi: int) -> Hits:
        return self._select([(t.ids >= lo) & (t.ids <= hi) for t, _ in self.layers])

    def field_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for table, keep in self.layers:
            for name, column in table.columns.items():
                n = int(np.count_nonzero((column.codes >= 0) & keep))
                if n:
                    counts[name] = counts.get(name, 0) + n
        return counts

    def field_times(self) -> dict[str, str]:
        """Per field, the latest of its ``_time`` values (RFC 3339 strings sort by time
        when written alike, as the server writes them)."""
        latest: dict[str, str] = {}
        for table, keep in self.layers:
            for name, column in table.columns.items():
                if not name.endswith(TIME_SUFFIX):
                    continue
                used = np.unique(column.codes[keep & (column.codes >= 0)])
                stamps = [column.values[i] for i in used.tolist()]
                stamps = [s for s in stamps if isinstance(s, str)]
                if stamps:
                    root = name[: -len(TIME_SUFFIX)]
                    latest[root] = max([*stamps, latest.get(root, "")])
        return latest


# --- the snapshot format ----------------------------------------------------------------------


def to_bytes(table: DocTable) -> bytes:
    """``NJT1`` + lz4 frame of: u32 header length, header JSON
    ``{"rows": n, "columns": [[name, distinct, blob bytes], ...]}``, the ids (uint64 LE),
    then per column its codes (int32 LE, n of them) and its texts joined by ``\\n``."""
    columns = sorted(table.columns.items())
    header = orjson.dumps(
        {"rows": len(table), "columns": [[n, c.count, len(c.blob)] for n, c in columns]}
    )
    parts = [struct.pack("<I", len(header)), header, table.ids.astype("<u8").tobytes()]
    for _, column in columns:
        parts.append(column.codes.astype("<i4").tobytes())
        parts.append(column.blob)
    return SNAPSHOT_MAGIC + lz4.frame.compress(b"".join(parts))


def from_bytes(data: bytes) -> DocTable:
    if data[:4] != SNAPSHOT_MAGIC:
        raise StoreError("neuronjson snapshot has no NJT1 magic")
    raw = lz4.frame.decompress(data[4:])
    (length,) = struct.unpack_from("<I", raw, 0)
    header = orjson.loads(raw[4 : 4 + length])
    n = header["rows"]
    at = 4 + length
    ids = np.frombuffer(raw, "<u8", n, at).astype(np.uint64)
    at += 8 * n
    columns = {}
    for name, count, size in header["columns"]:
        codes = np.frombuffer(raw, "<i4", n, at).astype(np.int32)
        at += 4 * n
        columns[name] = Column(codes, raw[at : at + size], count)
        at += size
    return DocTable(ids, columns)
