"""neuronjson: versioned JSON documents keyed by body id (Clio's and neu3's neuron
annotations), with per-field provenance and DVID's query language.

Each document is a keyed record (copy-on-write per version, as keyvalue's values), so a
single body reads and writes in one record; whole-version reads go through per-version
column tables (:mod:`~app.datatypes.neuronjson.store`), as DVID answers them from memory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Self

import orjson
from fastapi import APIRouter

from app.datatypes import register
from app.datatypes.keyed import KeyedData
from app.datatypes.neuronjson import docjson, provenance, schema
from app.datatypes.neuronjson.store import Documents
from app.datatypes.neuronjson.table import DocView
from app.diff import MergeSides, key_conflicts, key_diff
from app.errors import BadRequest
from app.storage import parallel
from app.storage.keyed import VersionedKeys

_DIGITS = re.compile(r"[0-9]+\Z")
#: Keys of ``/key`` that address the neu3 schemas, as in DVID (for keyvalue clients).
META_KEYS = frozenset({"schema", "schema_batch"})


def parse_bodyid(key: str) -> int:
    """A key as DVID's ``strconv.ParseUint(key, 10, 64)``; 400 otherwise."""
    if not _DIGITS.match(key) or int(key) > docjson.MAX_UINT64:
        raise BadRequest(f"key {key!r} must be a body id (a decimal uint64)")
    return int(key)


def parse_bound(key: str) -> int:
    """A ``keyrange`` bound as DVID's ``parseKeyStr``: text starting above ``9`` is the
    largest id, below ``0`` is 0 (so ``keyrange/0/a`` lists everything)."""
    if not key:
        raise BadRequest("key range bounds must not be empty")
    if key[0] > "9":
        return docjson.MAX_UINT64
    if key[0] < "0":
        return 0
    return parse_bodyid(key)


@register
class NeuronJSON(KeyedData):
    typename = "neuronjson"
    type_version = "0.1"
    help_text = (Path(__file__).parent / "help.txt").read_text()
    read_posts = frozenset({"query"})
    #: A POST reads a document and writes it back: writers of a version are serialized,
    #: a batch is all-or-nothing, and the sequence number tells caches what changed.
    transactional = True

    @classmethod
    def routes(cls) -> APIRouter:
        from app.datatypes.neuronjson.routes import router

        return router

    # --- storage -------------------------------------------------------------------------

    def schemas(self) -> VersionedKeys:
        return VersionedKeys(
            self.store,
            f"{self.root}/schemas",
            self.services.index_cache,
            self.services.value_cache,
        )

    def documents(self) -> Documents:
        return Documents(self.keys(), self.store, self.dag, self.root)

    def doc_view(self) -> DocView:
        """Every document visible at the bound version (for queries and listings)."""
        if not self.mutable:
            return self.documents().view(self.version, False)
        journal = self.journal()
        return self.documents().view(self.version, True, journal.applied(), journal)

    def get_docs(self, bodyids: list[int]) -> list[dict[str, Any] | None]:
        """Single documents by record (overlapped reads)."""
        view = self.view()
        values = parallel.each(lambda b: view.get(str(b)), bodyids, overlap=view.overlap_calls)
        return [orjson.loads(v) if v is not None else None for v in values]

    def schema(self, name: str) -> bytes | None:
        return self.at.view(self.schemas()).get(name)

    def put_schema(self, name: str, value: bytes) -> None:
        if name == schema.JSON_SCHEMA:
            schema.check_schema(value)
        self.schemas().write(self.version.uuid, name, value)
        self.event("postschema", Key=name, Bytes=len(value))

    def delete_schema(self, name: str) -> None:
        self.schemas().delete(self.version.uuid, name)
        self.event("deleteschema", Key=name)

    # --- diffs and merge conflicts (app.diff) ----------------------------------------------

    def diff(self, other: Self) -> dict[str, Any] | None:
        """Body ids (and schema keys, as ``/key`` names them) added, changed, deleted."""
        changes = key_diff(self.keys(), self.view(), other.view())
        schemas = self.schemas()
        meta = key_diff(schemas, self.at.view(schemas), other.at.view(schemas))
        changes.added += meta.added
        changes.changed += meta.changed
        changes.deleted += meta.deleted
        return {"keys": changes.to_json()} if changes else None

    def merge_conflicts(self, merge: MergeSides) -> dict[str, Any] | None:
        keys = key_conflicts(self.keys(), self.dag, merge)
        keys += key_conflicts(self.schemas(), self.dag, merge)
        return {"keys": keys} if keys else None

    # --- writes --------------------------------------------------------------------------

    def put_documents(
        self,
        items: list[tuple[str, bytes]],
        user: str,
        conditionals: list[str],
        replace: bool,
        action: str,
    ) -> None:
        """DVID's ``PutData`` for each ``(key, body)`` in order: every item is checked
        (and the stored documents merged) before anything is written."""
        if not user:
            raise BadRequest("cannot alter neuronjson data without a valid user (give u=)")
        validator = self.schema(schema.JSON_SCHEMA)
        docs: list[tuple[int, dict[str, Any]]] = []
        for key, body in items:
            if key == "0":
                raise BadRequest("body id 0 is reserved and so cannot be stored")
            if key in META_KEYS:
                continue
            if validator is not None:
                body = schema.validate(validator, body)
            docs.append(_check_document(key, body))
        stored = dict(
            zip(
                (b for b, _ in docs),
                self.get_docs(sorted({b for b, _ in docs})),
                strict=True,
            )
        )
        writes: dict[int, bytes] = {}
        stamp = provenance.now_rfc3339()
        for bodyid, doc in docs:
            merged = provenance.update(stored[bodyid], doc, user, conditionals, replace, stamp)
            stored[bodyid] = merged
            writes[bodyid] = docjson.dumps(merged)
        for key, body in items:
            if key in META_KEYS:
                self.put_schema(key, body)
            else:
                self.event(action, Key=str(parse_bodyid(key)), Bytes=len(body))
        self.write_many((str(b), v) for b, v in writes.items())

    def delete_document(self, key: str) -> None:
        if key in META_KEYS:
            self.delete_schema(key)
            return
        bodyid = str(parse_bodyid(key))
        self.delete(bodyid)
        self.event("delete", Key=bodyid)

    def seal(self) -> None:
        """Index the version's records, then persist its table's snapshot."""
        super().seal()
        self.schemas().seal(self.node.uuid)
        self.documents().table(self.node)


def _check_document(key: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """DVID's checks of a posted document: a JSON object whose ``bodyid`` is the key's
    uint64 (``23.0`` is not), without provenance of its own for ``bodyid``. Returns the
    body id and the document, normalised."""
    doc = docjson.loads(body, "neuronjson document")
    if not isinstance(doc, dict):
        raise BadRequest("neuronjson document must be a JSON object")
    if "bodyid" not in doc:
        raise BadRequest("neuronjson data must have 'bodyid' field")
    if not docjson.is_uint64(doc["bodyid"]):
        raise BadRequest("neuronjson 'bodyid' field must be uint64")
    bodyid = parse_bodyid(key)
    if doc["bodyid"] != bodyid:
        raise BadRequest(f"neuronjson 'bodyid' field {doc['bodyid']} must match key {bodyid}")
    for reserved in ("bodyid_user", "bodyid_time"):
        if reserved in doc:
            raise BadRequest(f"{reserved!r} field not allowed")
    return bodyid, {k: docjson.normalize(v) for k, v in doc.items()}
