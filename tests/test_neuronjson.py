"""Behaviour of the ``neuronjson`` datatype.

The rules come from /work/shared/spec/neuronjson.md and DVID's Go code
(datatype/neuronjson: the handlers, ``updateJSON``, ``selectFields``, ``queryMatch``);
answers are compared byte for byte where DVID's are determined (Go marshals maps with
sorted keys). Storage and versioning run on every backend; parsing, provenance and the
query language run on the memory store, the query engine also against a plain-Python
filter over random documents (an oracle).
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.datatypes.neuronjson import provenance, query
from app.datatypes.neuronjson.store import logged_bodies
from app.datatypes.neuronjson.table import DocTable, from_bytes, to_bytes
from app.proto import keyvalue_pb2 as pb
from tests.conftest import Api

DATA = "nj"
USER = {"u": "alice"}
MEMORY_ONLY = pytest.mark.parametrize("backend", ["memory"], indirect=True)
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["bodyid"],
    "properties": {
        "bodyid": {"type": "integer"},
        "group": {"type": "integer"},
        "status": {"type": "string"},
    },
}


def _repo(api: Api) -> str:
    root = api.new_repo()
    api.new_instance(root, "neuronjson", DATA)
    return root


def _post(c: TestClient, node: str, bodyid: int | str, doc: Any, **params: str) -> Any:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return c.post(f"/api/node/{node}/{DATA}/key/{bodyid}", content=body, params=params)


def _ok(r: Any) -> Any:
    assert r.status_code == 200, r.text
    return r


def _get(c: TestClient, node: str, bodyid: int | str, **params: str) -> Any:
    r = c.get(f"/api/node/{node}/{DATA}/key/{bodyid}", params=params)
    return r.json() if r.status_code == 200 else r.status_code


def _query(c: TestClient, node: str, q: Any, method: str = "POST", **params: str) -> Any:
    r = c.request(method, f"/api/node/{node}/{DATA}/query", content=json.dumps(q), params=params)
    return _ok(r).json()


# --- every backend: storage and versions -------------------------------------------------------


def test_documents_round_trip_byte_for_byte(api: Api) -> None:
    c, root = api.c, _repo(api)
    doc = {"bodyid": 15, "type": "LC4<x>", "group": 1.0, "position": [1, 2, 3], "a": None}
    _ok(_post(c, root, 15, doc, **USER))
    r = _ok(c.get(f"/api/node/{root}/{DATA}/key/15"))
    # Go: sorted keys, no spaces, HTML-escaped, integral floats as integers, null deleted.
    assert r.content == b'{"bodyid":15,"group":1,"position":[1,2,3],"type":"LC4\\u003cx\\u003e"}'
    full = _get(c, root, 15, show="all")
    assert full["type_user"] == "alice" and STAMP.match(full["type_time"])
    assert full["a_user"] == "alice" and "a" not in full  # a deleted field keeps provenance
    assert "bodyid_user" not in full
    assert c.head(f"/api/node/{root}/{DATA}/key/15").status_code == 200
    assert c.head(f"/api/node/{root}/{DATA}/key/16").status_code == 404
    r = c.get(f"/api/node/{root}/{DATA}/key/16")
    assert r.status_code == 404 and r.text.startswith('Key "16" not found')
    _ok(c.delete(f"/api/node/{root}/{DATA}/key/15"))
    assert _get(c, root, 15) == 404
    assert _ok(c.get(f"/api/node/{root}/{DATA}/keys")).json() == []


def test_versions_isolate_documents_and_queries(api: Api) -> None:
    c, root = api.c, _repo(api)
    for b in (1, 2, 3):
        _ok(_post(c, root, b, {"bodyid": b, "type": "A" if b < 3 else "B"}, **USER))
    api.commit(root)
    child = api.newversion(root)
    branch = api.branch(root, "exp")
    _ok(_post(c, child, 2, {"bodyid": 2, "type": "B"}, **USER))
    _ok(_post(c, child, 4, {"bodyid": 4, "type": "B"}, **USER))
    _ok(c.delete(f"/api/node/{child}/{DATA}/key/1"))
    _ok(_post(c, branch, 3, {"bodyid": 3, "type": "A"}, **USER))

    def ids(node: str) -> tuple[list[int], list[int]]:
        return _query(c, node, {"type": "A"}, onlyid="true"), _query(c, node, {"type": "B"},
                                                                     onlyid="true")  # fmt: skip

    assert ids(root) == ([1, 2], [3])
    assert ids(child) == ([], [2, 3, 4])
    assert ids(branch) == ([1, 2, 3], [])
    assert _get(c, root, 2)["type"] == "A" and _get(c, child, 2)["type"] == "B"
    assert _ok(c.get(f"/api/node/{child}/{DATA}/keys")).json() == ["2", "3", "4"]
    # A locked node refuses writes but answers POST /query (a read).
    assert _post(c, root, 5, {"bodyid": 5}, **USER).status_code == 400
    assert c.delete(f"/api/node/{root}/{DATA}/key/1").status_code == 400
    assert _query(c, root, {"type": "B"}) == [{"bodyid": 3, "type": "B"}]
    # Committing the child: its table is derived from the parent's plus its records.
    api.commit(child)
    assert ids(child) == ([], [2, 3, 4])
    grandchild = api.newversion(child)
    _ok(_post(c, grandchild, 3, {"bodyid": 3, "type": "C"}, **USER))
    assert ids(grandchild) == ([], [2, 4])
    assert _query(c, grandchild, {"type": "re/^C"}, onlyid="true") == [3]


def test_open_node_queries_see_every_write(api: Api) -> None:
    """Whole-version reads at an open node reflect each write at once (their cache is
    validated by the version's transaction sequence number)."""
    c, root = api.c, _repo(api)
    for step in range(4):
        _ok(_post(c, root, 10 + step, {"bodyid": 10 + step, "n": step}, **USER))
        assert _query(c, root, {"n": step}, onlyid="true") == [10 + step]
        assert len(_ok(c.get(f"/api/node/{root}/{DATA}/keys")).json()) == step + 1
    _ok(c.delete(f"/api/node/{root}/{DATA}/key/10"))
    assert _query(c, root, {"n": 0}, onlyid="true") == []
    _ok(c.post(f"/api/node/{root}/{DATA}/schema", content=b"{}"))  # a write of no body
    _ok(_post(c, root, 10, {"bodyid": 10, "n": 9}, **USER))
    _ok(_post(c, root, 11, {"bodyid": 11, "n": None}, **USER))
    assert _query(c, root, {"n": "exists/1"}, onlyid="true") == [10, 12, 13]
    assert _query(c, root, {"n": 9}) == [{"bodyid": 10, "n": 9}]


def test_logged_bodies_refuse_gaps() -> None:
    entries = [(4, [{"Key": "7"}]), (5, [{"Key": "schema"}, {"Key": "8"}]), (6, [])]
    assert logged_bodies(iter(entries), 3, 5) == {7, 8}
    assert logged_bodies(iter(entries), 3, 6) == {7, 8}
    assert logged_bodies(iter(entries[1:]), 3, 6) is None  # entry 4 missing
    assert logged_bodies(iter(entries), 3, 7) is None  # entry 7 not logged


def test_schema_endpoints_and_validation(api: Api) -> None:
    c, root = api.c, _repo(api)
    url = f"/api/node/{root}/{DATA}"
    assert c.get(f"{url}/json_schema").status_code == 404
    assert c.head(f"{url}/json_schema").status_code == 404
    _ok(c.post(f"{url}/json_schema", content=json.dumps(SCHEMA)))
    assert c.head(f"{url}/json_schema").status_code == 200
    assert _ok(c.get(f"{url}/json_schema")).json() == SCHEMA
    r = _post(c, root, 7, {"bodyid": 7, "status": 3}, **USER)
    assert r.status_code == 400 and "status" in r.text
    assert _get(c, root, 7) == 404
    _ok(_post(c, root, 7, {"bodyid": 7, "group": "12"}, **USER))  # DVID converts to integer
    assert _get(c, root, 7) == {"bodyid": 7, "group": 12}
    _ok(c.post(f"{url}/schema", content=b'{"neu3": true}'))
    assert _ok(c.get(f"{url}/key/schema")).content == b'{"neu3": true}'
    _ok(c.delete(f"{url}/json_schema"))
    _ok(_post(c, root, 7, {"bodyid": 7, "status": 3}, **USER))


# --- memory: provenance ------------------------------------------------------------------------


@MEMORY_ONLY
def test_updates_merge_replace_and_keep_provenance(api: Api) -> None:
    c, root = api.c, _repo(api)
    _ok(_post(c, root, 9, {"bodyid": 9, "type": "x", "status": "new"}, u="alice"))
    first = _get(c, root, 9, show="all")
    _ok(_post(c, root, 9, {"bodyid": 9, "type": "x", "class": "c"}, u="bob"))
    second = _get(c, root, 9, show="all")
    assert second["status"] == "new"  # merged by default
    assert second["type_user"] == "alice" and second["type_time"] == first["type_time"]
    assert second["class_user"] == "bob"
    _ok(_post(c, root, 9, {"bodyid": 9, "type": "y", "status": None}, u="carol"))
    third = _get(c, root, 9, show="user")
    assert third == {
        "bodyid": 9, "class": "c", "class_user": "bob", "status_user": "carol",
        "type": "y", "type_user": "carol",
    }  # fmt: skip
    _ok(_post(c, root, 9, {"bodyid": 9, "class": "c"}, u="dave", replace="true"))
    assert _get(c, root, 9, show="user") == {"bodyid": 9, "class": "c", "class_user": "bob"}
    _ok(_post(c, root, 9, {"bodyid": 9, "class": "d", "note": "n"}, u="eve", conditional="class"))
    assert _get(c, root, 9, show="user") == {
        "bodyid": 9, "class": "c", "class_user": "bob", "note": "n", "note_user": "eve",
    }  # fmt: skip
    _ok(_post(c, root, 9, {"bodyid": 9, "x": 1, "x_user": "zed"}, u="eve"))
    assert _get(c, root, 9, show="user", fields="x") == {"bodyid": 9, "x": 1, "x_user": "zed"}


def test_update_is_dvids_update_json() -> None:
    orig = {"bodyid": 1, "a": 1, "a_user": "u0", "a_time": "t0", "b": 2}
    new = provenance.update(orig, {"bodyid": 1, "a": 1, "b": True}, "u1", [], False, "t1")
    assert new == {
        "bodyid": 1, "a": 1, "a_user": "u0", "a_time": "t0", "b": True, "b_user": "u1",
        "b_time": "t1",
    }  # fmt: skip
    fresh = provenance.update(None, {"bodyid": 1, "user": "x", "c_user": "me"}, "u", [], True, "t")
    assert fresh == {"bodyid": 1, "user": "x", "c_user": "me", "c_time": "t"}


# --- memory: bad input changes nothing -----------------------------------------------------------


@MEMORY_ONLY
@pytest.mark.parametrize(
    ("key", "body", "params"),
    [
        ("abc", {"bodyid": 1}, USER),
        ("-1", {"bodyid": 1}, USER),
        ("0", {"bodyid": 0}, USER),
        ("5", [1, 2], USER),
        ("5", b'{"bodyid": 5', USER),
        ("5", {"type": "no id"}, USER),
        ("5", {"bodyid": 6}, USER),
        ("5", {"bodyid": 5.0}, USER),
        ("5", {"bodyid": 5, "bodyid_user": "x"}, USER),
        ("5", {"bodyid": 5}, {}),
        ("5", {"bodyid": 5, "status": 1}, USER),  # fails the stored schema
    ],
)
def test_bad_writes_are_400_and_change_nothing(
    api: Api, key: str, body: Any, params: dict[str, str]
) -> None:
    c, root = api.c, _repo(api)
    _ok(c.post(f"/api/node/{root}/{DATA}/json_schema", content=json.dumps(SCHEMA)))
    _ok(_post(c, root, 5, {"bodyid": 5, "status": "kept"}, **USER))
    r = _post(c, root, key, body, **params)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("text/plain")
    assert _ok(c.get(f"/api/node/{root}/{DATA}/keys")).json() == ["5"]
    assert _get(c, root, 5) == {"bodyid": 5, "status": "kept"}


@MEMORY_ONLY
def test_bad_reads_and_batches_are_400(api: Api) -> None:
    c, root = api.c, _repo(api)
    url = f"/api/node/{root}/{DATA}"
    _ok(_post(c, root, 5, {"bodyid": 5}, **USER))
    assert c.get(f"{url}/key/abc").status_code == 400
    assert c.head(f"{url}/key/abc").status_code == 400
    assert c.delete(f"{url}/key/abc").status_code == 400
    assert c.get(f"{url}/keyrange/1x/2").status_code == 400
    for bad in (b"", b"[]", b"[1]", b"{", b'"x"'):
        assert c.post(f"{url}/query", content=bad).status_code == 400, bad
    # A batch with one bad document writes none of them.
    kvs = pb.KeyValues()
    kvs.kvs.add(key="6", value=b'{"bodyid": 6}')
    kvs.kvs.add(key="7", value=b'{"bodyid": 8}')
    r = c.post(f"{url}/keyvalues", content=kvs.SerializeToString(), params=USER)
    assert r.status_code == 400
    assert c.post(f"{url}/keyvalues", content=b"\xff\xff", params=USER).status_code == 400
    assert _ok(c.get(f"{url}/keys")).json() == ["5"]
    assert c.post(f"{url}/json_schema", content=b'{"type": 5}').status_code == 400


# --- memory: listings --------------------------------------------------------------------------


@MEMORY_ONLY
def test_listings_and_batches(api: Api) -> None:
    c, root = api.c, _repo(api)
    url = f"/api/node/{root}/{DATA}"
    kvs = pb.KeyValues()
    for b in (100, 9, 20, 3):
        kvs.kvs.add(key=str(b), value=json.dumps({"bodyid": b, "type": f"t{b}", "n": b}).encode())
    _ok(c.post(f"{url}/keyvalues", content=kvs.SerializeToString(), params=USER))
    assert _ok(c.get(f"{url}/keys")).json() == ["3", "9", "20", "100"]  # numeric order
    assert _ok(c.get(f"{url}/keyrange/5/50")).json() == ["9", "20"]
    assert _ok(c.get(f"{url}/keyrange/0/a")).json() == ["3", "9", "20", "100"]
    r = _ok(c.get(f"{url}/keyrangevalues/5/50", params={"json": "true", "fields": "type"}))
    assert r.content == b'{"9":{"bodyid":9,"type":"t9"},"20":{"bodyid":20,"type":"t20"}}'
    got = pb.KeyValues.FromString(_ok(c.get(f"{url}/keyrangevalues/0/10")).content)
    assert [(kv.key, json.loads(kv.value)) for kv in got.kvs] == [
        ("3", {"bodyid": 3, "n": 3, "type": "t3"}),
        ("9", {"bodyid": 9, "n": 9, "type": "t9"}),
    ]
    r = _ok(c.request("GET", f"{url}/keyvalues", params={"json": "true"}, content=b'[20, 4, "3"]'))
    assert (
        r.content == b'{"20":{"bodyid":20,"n":20,"type":"t20"},"3":{"bodyid":3,"n":3,"type":"t3"}}'
    )
    keys = pb.Keys(keys=["9", "4"])
    got = pb.KeyValues.FromString(
        _ok(c.request("GET", f"{url}/keyvalues", content=keys.SerializeToString())).content
    )
    assert [(kv.key, kv.value) for kv in got.kvs] == [
        ("9", b'{"bodyid":9,"n":9,"type":"t9"}'),
        ("4", b""),
    ]
    _ok(_post(c, root, 50, {"bodyid": 50}, **USER))  # nothing but its id
    r = _ok(c.get(f"{url}/all", params={"fields": "type,n"}))
    assert [d["bodyid"] for d in r.json()] == [3, 9, 20, 100]
    r = _ok(c.get(f"{url}/all", params={"fields": "bodyid"}))
    assert r.json() == [{"bodyid": b} for b in (3, 9, 20, 50, 100)]
    r = c.get(f"{url}/all", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and len(r.json()) == 4
    r = _ok(c.get(f"{url}/all", params={"show": "user", "fields": "type"}))
    assert r.json()[0] == {"bodyid": 3, "type": "t3", "type_user": "alice"}
    assert _ok(c.get(f"{url}/fields")).json() == [
        "bodyid", "n", "n_time", "n_user", "type", "type_time", "type_user",
    ]  # fmt: skip
    counts = _ok(c.get(f"{url}/fields", params={"counts": "true"})).json()
    assert counts["bodyid"] == 5 and counts["type"] == 4
    times = _ok(c.get(f"{url}/fieldtimes")).json()
    assert set(times) == {"n", "type"} and STAMP.match(times["type"])
    tar = _ok(c.get(f"{url}/keyrangevalues/0/5", params={"tar": "true"}))
    assert tar.headers["content-type"] == "application/tar"


# --- memory: the query language ------------------------------------------------------------------


@MEMORY_ONLY
def test_query_language_as_dvid(api: Api) -> None:
    c, root = api.c, _repo(api)
    docs = [
        {"bodyid": 1, "type": "LC4", "group": 10, "tags": ["a", "b"], "pos": [1, 2, 3]},
        {"bodyid": 2, "type": "LPLC2", "group": 10, "tags": ["c"], "f": 1.5},
        {"bodyid": 3, "type": "lc4b", "group": -5, "status": None},
        {"bodyid": 4, "status": "Traced", "flag": True},
    ]
    for d in docs:
        _ok(_post(c, root, d["bodyid"], d, **USER))

    def ids(q: Any, method: str = "POST") -> list[int]:
        return _query(c, root, q, method, onlyid="true")

    assert ids({"type": "LC4"}) == [1]
    assert ids({"type": ["LC4", "LPLC2"]}, "GET") == [1, 2]
    assert ids({"type": "re/^L"}) == [1, 2]
    assert ids({"type": "re/C4"}) == [1]  # unanchored search, as Go's Regexp.Match
    assert ids({"type": ["re/^lc", "LPLC2"]}) == [2, 3]
    assert ids({"group": 10, "tags": "b"}) == [1]
    assert ids({"group": -5}) == [3]
    assert ids({"group": [10, -5]}) == [1, 2, 3]
    assert ids({"pos": 2}) == [1]  # a list field matches any element
    assert ids({"status": "exists/1"}) == [4]
    assert ids({"status": "exists/0"}) == [1, 2, 3]  # null counts as absent
    assert ids({"flag": True}) == []  # DVID never matches booleans
    assert ids({"f": 1.5}) == [] and ids({"f": [1.5]}) == [2]  # floats only inside lists
    assert ids([{"type": "LC4"}, {"status": "Traced"}, {"type": "LC4"}]) == [1, 4]
    assert ids({"nope": "x"}) == []
    # Only bodyids: DVID answers by id in the order asked, documents even with onlyid.
    r = _query(c, root, {"bodyid": [3, 1, 99, 3]}, onlyid="true")
    assert [d["bodyid"] for d in r] == [3, 1, 3]
    r = c.post(
        f"/api/node/{root}/{DATA}/query",
        content=b'{"type": "LC4"}',
        params={"fields": "group", "show": "user"},
    )
    assert r.content == b'[{"bodyid":1,"group":10,"group_user":"alice"}]'


RANDOM_FIELDS = {
    "type": lambda r: r.choice(["LC4", "LPLC2", "T4a", "T4b", "Mi1", None]),
    "group": lambda r: r.choice([1, 2, 3, -7, 2**40]),
    "status": lambda r: r.choice(["Traced", "Roughly traced", "Orphan", None]),
    "tags": lambda r: r.sample(["a", "b", "c", "d"], r.randint(0, 3)),
    "pos": lambda r: [r.randint(0, 5) for _ in range(3)],
    "score": lambda r: r.choice([0.5, 1.25, 2]),
}


def _random_doc(rng: random.Random, bodyid: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"bodyid": bodyid}
    for name, make in RANDOM_FIELDS.items():
        if rng.random() < 0.7:
            value = make(rng)
            if value is not None:
                doc[name] = value
    return doc


def _random_query(rng: random.Random) -> Any:
    def one() -> dict[str, Any]:
        q: dict[str, Any] = {}
        for name in rng.sample(sorted(RANDOM_FIELDS), rng.randint(1, 2)):
            pick = rng.random()
            if pick < 0.15:
                q[name] = rng.choice(["exists/0", "exists/1"])
            elif pick < 0.3 and name in ("type", "status", "tags"):
                q[name] = rng.choice(["re/^T4", "re/raced", "re/^[ab]$", "re/LC"])
            else:
                values = [RANDOM_FIELDS[name](rng) for _ in range(3)]
                flat = [v for v in values if v is not None and not isinstance(v, list)]
                q[name] = flat[:2] if rng.random() < 0.4 and flat else (flat or [1])[0]
        return q

    return one() if rng.random() < 0.6 else [one() for _ in range(rng.randint(1, 3))]


def _oracle(q: Any, docs: dict[int, dict[str, Any]]) -> list[int]:
    """A plain-Python filter: DVID's queryMatch over each document."""
    queries = query.parse(json.dumps(q).encode())
    return sorted(b for b, d in docs.items() if query.doc_matches(queries, d))


@MEMORY_ONLY
def test_query_engine_agrees_with_an_oracle(api: Api) -> None:
    """Random documents over a parent (committed) and an open child that rewrites and
    deletes some: every random query answers as a plain filter over the visible set."""
    rng = random.Random(7)
    c, root = api.c, _repo(api)
    visible: dict[int, dict[str, Any]] = {}
    kvs = pb.KeyValues()
    for b in range(1, 301):
        visible[b] = _random_doc(rng, b)
        kvs.kvs.add(key=str(b), value=json.dumps(visible[b]).encode())
    url = f"/api/node/{root}/{DATA}"
    _ok(c.post(f"{url}/keyvalues", content=kvs.SerializeToString(), params=USER))
    api.commit(root)
    child = api.newversion(root)
    kvs = pb.KeyValues()
    for b in rng.sample(range(1, 360), 60):
        visible[b] = _random_doc(rng, b)
        kvs.kvs.add(key=str(b), value=json.dumps(visible[b]).encode())
    _ok(c.post(f"/api/node/{child}/{DATA}/keyvalues", content=kvs.SerializeToString(),
               params={**USER, "replace": "true"}))  # fmt: skip
    for b in rng.sample(sorted(visible), 20):
        _ok(c.delete(f"/api/node/{child}/{DATA}/key/{b}"))
        del visible[b]
    for node in (child,):
        for _ in range(60):
            q = _random_query(rng)
            if query.only_bodyids(query.parse(json.dumps(q).encode())) is not None:
                continue
            assert _query(c, node, q, onlyid="true") == _oracle(q, visible), q
    rendered = _query(c, child, {"bodyid": "exists/1"})
    assert rendered == [
        {k: v for k, v in visible[b].items() if not k.endswith(("_user", "_time"))}
        for b in sorted(visible)
    ]


def test_snapshot_round_trips_and_overlays() -> None:
    rng = random.Random(3)
    docs = {b: _random_doc(rng, b) for b in range(1, 200)}
    table = DocTable.build(docs.items())
    again = from_bytes(to_bytes(table))
    assert again.ids.tolist() == table.ids.tolist()
    for name, column in table.columns.items():
        assert again.columns[name].texts == column.texts
        assert again.columns[name].codes.tolist() == column.codes.tolist()
    changes: dict[int, dict[str, Any] | None] = {
        5: None,
        7: {"bodyid": 7, "x": 1},
        500: {"bodyid": 500},
    }
    over = table.overlaid(changes)
    expected = {**docs, 7: {"bodyid": 7, "x": 1}, 500: {"bodyid": 500}}
    del expected[5]
    assert over.ids.tolist() == sorted(expected)
    queries = query.parse(b'{"bodyid": "exists/1"}')
    rows = over.mask(queries).nonzero()[0]
    from app.datatypes.neuronjson.fields import Selection

    rendered = [json.loads(d) for d in over.render(rows, Selection())]
    assert rendered == [expected[b] for b in sorted(expected)]
