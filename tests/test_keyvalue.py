"""Behaviour of the ``keyvalue`` datatype through HTTP.

The rules come from /work/shared/spec/keyvalue.md, README.md §2.2 (copy-on-write visibility)
and §3 (version references), and /work/notes-dvid-core.md §6 (DVID's Go code). Every test
runs on each storage backend (the ``client`` fixture is parametrized).
"""

from __future__ import annotations

import io
import json
import re
import tarfile

import pytest
from fastapi.testclient import TestClient

from app.proto import keyvalue_pb2 as pb

DATA = "kv"
KNOWN = b"KNOWN-VALUE"
DIGITS = b"0123456789"
ALL_BYTES = bytes(range(256))

#: For tables of malformed or edge-case *read* requests (byte ranges, Range headers, GET
#: keyvalues bodies): the server reads the whole value through the same ``view().get`` on
#: every backend and then parses and slices in memory, so the table runs on the memory
#: store only. What does touch the store stays on all four backends: the tests next to
#: each table (slices, a ranged large value, a range past the end) and every write.
REQUEST_PARSING_ONLY = pytest.mark.parametrize("backend", ["memory"], indirect=True)

#: For tables of requests refused before anything is written (malformed bodies, bad
#: version references, unknown keywords, writes to a locked node): the refusal comes from
#: parsing or from the version catalog, which every backend serves through the same code
#: (the catalog's own behaviour per backend is covered by the versioning tests, which run on
#: all four). The tables run on the memory store and on a real folder, whose "nothing was
#: written" check is the one with teeth; every table keeps one all-backend neighbour.
REFUSED_BEFORE_THE_STORE = pytest.mark.parametrize("backend", ["memory", "local"], indirect=True)


# --------------------------------------------------------------------------- helpers


def url(uuid: str, rest: str, data: str = DATA) -> str:
    return f"/api/node/{uuid}/{data}/{rest}"


def keys_at(client: TestClient, uuid: str, data: str = DATA) -> list[str]:
    r = client.get(url(uuid, "keys", data))
    assert r.status_code == 200, r.text
    return r.json()


def read(client: TestClient, uuid: str, key: str, data: str = DATA) -> bytes | None:
    """The value of a key at a node, or None on 404 (any other status fails)."""
    r = client.get(url(uuid, f"key/{key}", data))
    if r.status_code == 404:
        return None
    assert r.status_code == 200, (r.status_code, r.text)
    return r.content


def write(client: TestClient, uuid: str, key: str, value: bytes, data: str = DATA) -> None:
    r = client.post(url(uuid, f"key/{key}", data), content=value)
    assert r.status_code == 200, r.text


def kvs_message(pairs: list[tuple[str, bytes]]) -> bytes:
    message = pb.KeyValues()
    for key, value in pairs:
        message.kvs.add(key=key, value=value)
    return message.SerializeToString()


def parse_kvs(body: bytes) -> list[tuple[str, bytes]]:
    message = pb.KeyValues()
    message.ParseFromString(body)
    return [(kv.key, kv.value) for kv in message.kvs]


def parse_tar(body: bytes) -> list[tuple[str, bytes, int, bool]]:
    """(name, content, mode, is regular file) for each member, in archive order."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        for member in tar.getmembers():
            f = tar.extractfile(member)
            content = f.read() if f is not None else b""
            out.append((member.name, content, member.mode, member.isfile()))
    return out


def get_with_body(client: TestClient, path: str, body: bytes, **params: str):
    return client.request("GET", path, content=body, params=params or None)


@pytest.fixture
def root(api) -> str:
    """A repo whose open root node has a versioned keyvalue instance ``kv``."""
    uuid = api.new_repo()
    api.new_instance(uuid, "keyvalue", DATA)
    return uuid


@pytest.fixture
def filled(client: TestClient, root: str) -> str:
    """The root node with a few keys, including JSON values and an empty value."""
    for key, value in [
        ("a", b'{"x": 1}'),
        ("b", b"[1, 2, 3]"),
        ("b1", b'"str"'),
        ("c", b""),
        ("d", b"42"),
    ]:
        write(client, root, key, value)
    return root


def assert_known_unchanged(client: TestClient, uuid: str, keys: list[str]) -> None:
    assert read(client, uuid, "known") == KNOWN
    assert keys_at(client, uuid) == keys


# --------------------------------------------------------------------------- single keys


def test_post_then_get_roundtrip(client: TestClient, root: str) -> None:
    r = client.post(url(root, "key/mykey"), content=b"hello world")
    assert r.status_code == 200
    assert r.content == b""
    r = client.get(url(root, "key/mykey"))
    assert r.status_code == 200
    assert r.content == b"hello world"
    assert r.headers["content-type"].startswith("application/octet-stream")
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-length"] == "11"


def test_post_replaces_value_at_same_node(client: TestClient, root: str) -> None:
    write(client, root, "k", b"first, longer value")
    write(client, root, "k", b"second")
    assert read(client, root, "k") == b"second"
    assert keys_at(client, root) == ["k"]


def test_empty_value(client: TestClient, root: str) -> None:
    write(client, root, "empty", b"")
    r = client.get(url(root, "key/empty"))
    assert r.status_code == 200
    assert r.content == b""
    assert client.head(url(root, "key/empty")).status_code == 200
    assert keys_at(client, root) == ["empty"]


@pytest.mark.parametrize(
    "value",
    [ALL_BYTES, ALL_BYTES[::-1] * 3, b"\x00", b"\x00" * 100, ALL_BYTES * 4096],
    ids=["all-256", "reversed-x3", "nul", "100-nuls", "1MiB"],
)
def test_binary_values_roundtrip(client: TestClient, root: str, value: bytes) -> None:
    write(client, root, "bin", value)
    assert read(client, root, "bin") == value


def test_missing_key_is_404_naming_the_key(client: TestClient, root: str) -> None:
    write(client, root, "present", b"x")
    r = client.get(url(root, "key/nosuchkey"))
    assert r.status_code == 404
    assert "nosuchkey" in r.text


def test_head(client: TestClient, root: str) -> None:
    write(client, root, "here", b"some bytes")
    r = client.head(url(root, "key/here"))
    assert r.status_code == 200
    assert r.headers["accept-ranges"] == "bytes"
    assert r.content == b""
    r = client.head(url(root, "key/absent"))
    assert r.status_code == 404
    assert r.content == b""


def test_delete(client: TestClient, root: str) -> None:
    write(client, root, "a", b"1")
    write(client, root, "b", b"2")
    r = client.delete(url(root, "key/a"))
    assert r.status_code == 200
    assert r.content == b""
    assert read(client, root, "a") is None
    assert client.head(url(root, "key/a")).status_code == 404
    assert read(client, root, "b") == b"2"
    assert keys_at(client, root) == ["b"]
    # Writing again after a delete brings the key back.
    write(client, root, "a", b"again")
    assert read(client, root, "a") == b"again"
    assert keys_at(client, root) == ["a", "b"]


def test_delete_missing_key_is_200(client: TestClient, root: str) -> None:
    write(client, root, "known", KNOWN)
    r = client.delete(url(root, "key/never-written"))
    assert r.status_code == 200
    assert read(client, root, "never-written") is None
    assert_known_unchanged(client, root, ["known"])


#: (URL path segment, the key it names): keys that need percent-encoding or that look like
#: URL syntax, all legal in DVID.
ODD_KEYS = [
    ("a%20b", "a b"),
    ("two%20%20spaces%20", "two  spaces "),
    ("caf%C3%A9", "café"),
    ("日本語", "日本語"),
    ("emoji-%F0%9F%A7%A0", "emoji-🧠"),
    ("1234.ngmesh", "1234.ngmesh"),
    ("a.b.c", "a.b.c"),
    ("~tilde~", "~tilde~"),
    ("100%25", "100%"),
    ("a+b", "a+b"),
    ("a:b", "a:b"),
    ("k=v&x=y", "k=v&x=y"),
    ("q%3Fmark", "q?mark"),
    ("hash%23tag", "hash#tag"),
    ("semi;colon,comma", "semi;colon,comma"),
    ("(paren)[brack]!$'*", "(paren)[brack]!$'*"),
    ("12345_swc", "12345_swc"),
]


def test_odd_but_legal_keys(client: TestClient, root: str) -> None:
    """Each odd key alone in the instance: written, read, listed under its percent-decoded
    name, ranged over, deleted. One store for the table (the key's encoding in object
    names is what differs by backend)."""
    for segment, key in ODD_KEYS:
        value = f"value of {key}".encode()
        r = client.post(url(root, f"key/{segment}"), content=value)
        assert r.status_code == 200, (key, r.text)
        r = client.get(url(root, f"key/{segment}"))
        assert (r.status_code, r.content) == (200, value), key
        assert client.head(url(root, f"key/{segment}")).status_code == 200, key
        assert keys_at(client, root) == [key]
        r = client.get(url(root, "keyrangevalues/%20/%F4%8F%BF%BF"))
        assert r.status_code == 200, key
        assert parse_kvs(r.content) == [(key, value)]
        assert client.delete(url(root, f"key/{segment}")).status_code == 200, key
        assert keys_at(client, root) == [], key


def test_key_of_480_bytes_is_accepted(client: TestClient, root: str) -> None:
    key = "k" * 480
    write(client, root, key, b"long")
    assert read(client, root, key) == b"long"
    assert keys_at(client, root) == [key]


@REFUSED_BEFORE_THE_STORE
@pytest.mark.parametrize("key", ["x" * 481, "é" * 241, "日" * 161], ids=["ascii", "2byte", "3byte"])
def test_key_over_480_utf8_bytes_is_400(client: TestClient, root: str, key: str) -> None:
    write(client, root, "known", KNOWN)
    r = client.post(url(root, f"key/{key}"), content=b"v")
    assert r.status_code == 400
    assert_known_unchanged(client, root, ["known"])


def test_empty_key_is_400(client: TestClient, root: str) -> None:
    write(client, root, "known", KNOWN)
    r = client.post(url(root, "key/"), content=b"v")
    assert r.status_code == 400
    assert_known_unchanged(client, root, ["known"])


# --------------------------------------------------------------------------- byte ranges


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(0, 0, b"0"), (2, 5, b"2345"), (0, 9, DIGITS), (9, 9, b"9"), (3, 3, b"3")],
)
def test_byte_start_end_inclusive_slice(
    client: TestClient, root: str, start: int, end: int, expected: bytes
) -> None:
    write(client, root, "d", DIGITS)
    r = client.get(url(root, "key/d"), params={"byte_start": start, "byte_end": end})
    assert r.status_code == 200
    assert r.content == expected
    assert "content-range" not in r.headers


@pytest.mark.parametrize(
    "params",
    [
        {"byte_start": "2"},
        {"byte_end": "5"},
        {"byte_start": "10", "byte_end": "10"},
        {"byte_start": "0", "byte_end": "10"},
        {"byte_start": "5", "byte_end": "2"},
        {"byte_start": "-1", "byte_end": "2"},
        {"byte_start": "x", "byte_end": "2"},
        {"byte_start": "1", "byte_end": "y"},
    ],
    ids=[
        "start-only",
        "end-only",
        "start-outside",
        "end-outside",
        "start-after-end",
        "negative",
        "start-not-int",
        "end-not-int",
    ],
)
@REQUEST_PARSING_ONLY
def test_bad_byte_range_query_is_400(client: TestClient, root: str, params: dict) -> None:
    write(client, root, "known", KNOWN)
    write(client, root, "d", DIGITS)
    r = client.get(url(root, "key/d"), params=params)
    assert r.status_code == 400
    assert read(client, root, "d") == DIGITS
    assert_known_unchanged(client, root, ["d", "known"])


def test_byte_range_on_empty_value_is_400(client: TestClient, root: str) -> None:
    write(client, root, "e", b"")
    r = client.get(url(root, "key/e"), params={"byte_start": 0, "byte_end": 0})
    assert r.status_code == 400


def test_byte_range_on_missing_key_is_404(client: TestClient, root: str) -> None:
    r = client.get(url(root, "key/nope"), params={"byte_start": 0, "byte_end": 1})
    assert r.status_code == 404


def test_byte_range_query_combined_with_range_header_is_400(client: TestClient, root: str) -> None:
    write(client, root, "d", DIGITS)
    r = client.get(
        url(root, "key/d"), params={"byte_start": 1, "byte_end": 2}, headers={"Range": "bytes=1-2"}
    )
    assert r.status_code == 400
    assert read(client, root, "d") == DIGITS


@pytest.mark.parametrize(
    ("header", "body", "content_range"),
    [
        ("bytes=2-5", b"2345", "bytes 2-5/10"),
        ("bytes=0-0", b"0", "bytes 0-0/10"),
        ("bytes=0-9", DIGITS, "bytes 0-9/10"),
        ("bytes=7-", b"789", "bytes 7-9/10"),
        ("bytes=0-", DIGITS, "bytes 0-9/10"),
        ("bytes=-3", b"789", "bytes 7-9/10"),
        ("bytes=-10", DIGITS, "bytes 0-9/10"),
        ("bytes=-100", DIGITS, "bytes 0-9/10"),
        ("bytes=5-100", b"56789", "bytes 5-9/10"),
        ("bytes=9-9", b"9", "bytes 9-9/10"),
    ],
)
@REQUEST_PARSING_ONLY
def test_range_header_partial_content(
    client: TestClient, root: str, header: str, body: bytes, content_range: str
) -> None:
    write(client, root, "d", DIGITS)
    r = client.get(url(root, "key/d"), headers={"Range": header})
    assert r.status_code == 206
    assert r.content == body
    assert r.headers["content-range"] == content_range
    assert r.headers["content-length"] == str(len(body))


def test_range_header_on_large_value(client: TestClient, root: str) -> None:
    value = ALL_BYTES * 4096
    write(client, root, "big", value)
    r = client.get(url(root, "key/big"), headers={"Range": "bytes=-300"})
    assert r.status_code == 206
    assert r.content == value[-300:]
    total = len(value)
    assert r.headers["content-range"] == f"bytes {total - 300}-{total - 1}/{total}"


@pytest.mark.parametrize(
    ("value", "header"),
    [
        (DIGITS, "bytes=10-"),
        (DIGITS, "bytes=10-20"),
        (DIGITS, "bytes=100-"),
        (DIGITS, "bytes=-0"),
        (b"", "bytes=0-"),
        (b"", "bytes=0-0"),
        (b"", "bytes=-1"),
        (b"", "bytes=-0"),
    ],
)
@REQUEST_PARSING_ONLY
def test_range_header_not_satisfiable_is_416(
    client: TestClient, root: str, value: bytes, header: str
) -> None:
    write(client, root, "v", value)
    r = client.get(url(root, "key/v"), headers={"Range": header})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(value)}"
    assert read(client, root, "v") == value


@pytest.mark.parametrize(
    "header",
    ["bytes=0-1,3-4", "bytes=5-2", "bytes=-", "bytes=abc", "items=0-3", "bytes 0-3", "bytes=1-x"],
)
@REQUEST_PARSING_ONLY
def test_malformed_or_multi_range_header_returns_full_value(
    client: TestClient, root: str, header: str
) -> None:
    write(client, root, "d", DIGITS)
    r = client.get(url(root, "key/d"), headers={"Range": header})
    assert r.status_code == 200
    assert r.content == DIGITS
    assert "content-range" not in r.headers


def test_range_header_on_missing_key_is_404(client: TestClient, root: str) -> None:
    r = client.get(url(root, "key/nope"), headers={"Range": "bytes=0-1"})
    assert r.status_code == 404


# --------------------------------------------------------------------------- keys, keyrange


def test_keys_empty_instance(client: TestClient, root: str) -> None:
    r = client.get(url(root, "keys"))
    assert r.status_code == 200
    assert r.json() == []


def test_keys_sorted_in_byte_order(client: TestClient, root: str) -> None:
    for key in ["b1", "é", "a", "~", "B", "b", "z", "a b", "0", "_"]:
        write(client, root, key, key.encode())
    assert keys_at(client, root) == ["0", "B", "_", "a", "a b", "b", "b1", "z", "~", "é"]


#: (first, last, the keys of ["b1", "a", "B", "b"] that keyrange/first/last lists).
KEY_RANGES = [
    ("a", "b", ["a", "b"]),
    ("B", "b1", ["B", "a", "b", "b1"]),
    ("a0", "b0", ["b"]),
    ("b", "b", ["b"]),
    ("b1", "b1", ["b1"]),
    ("0", "zzz", ["B", "a", "b", "b1"]),
    ("c", "d", []),
    ("b", "a", []),
]


def test_keyrange_inclusive(client: TestClient, root: str) -> None:
    for key in ["b1", "a", "B", "b"]:
        write(client, root, key, b"v")
    for first, last, expected in KEY_RANGES:
        r = client.get(url(root, f"keyrange/{first}/{last}"))
        assert (r.status_code, r.json()) == (200, expected), (first, last)


def test_keyrange_on_empty_instance(client: TestClient, root: str) -> None:
    r = client.get(url(root, "keyrange/a/z"))
    assert r.status_code == 200
    assert r.json() == []


def test_keyrange_needs_two_keys(client: TestClient, root: str) -> None:
    write(client, root, "a", b"v")
    assert client.get(url(root, "keyrange/a")).status_code == 400


# --------------------------------------------------------------------------- keyrangevalues


def test_keyrangevalues_protobuf_default(client: TestClient, filled: str) -> None:
    write(client, filled, "bin", ALL_BYTES)
    r = client.get(url(filled, "keyrangevalues/a/b1"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/octet-stream")
    assert parse_kvs(r.content) == [("a", b'{"x": 1}'), ("b", b"[1, 2, 3]"), ("b1", b'"str"')]
    r = client.get(url(filled, "keyrangevalues/a/zzz"))
    assert parse_kvs(r.content) == [
        ("a", b'{"x": 1}'),
        ("b", b"[1, 2, 3]"),
        ("b1", b'"str"'),
        ("bin", ALL_BYTES),
        ("c", b""),
        ("d", b"42"),
    ]


def test_keyrangevalues_excludes_key_past_end(client: TestClient, filled: str) -> None:
    r = client.get(url(filled, "keyrangevalues/b/b"))
    assert r.status_code == 200
    assert parse_kvs(r.content) == [("b", b"[1, 2, 3]")]


def test_keyrangevalues_json(client: TestClient, filled: str) -> None:
    r = client.get(url(filled, "keyrangevalues/a/d"), params={"json": "true"})
    assert r.status_code == 200
    parsed = json.loads(r.content)
    assert list(parsed.items()) == [
        ("a", {"x": 1}),
        ("b", [1, 2, 3]),
        ("b1", "str"),
        ("c", {}),
        ("d", 42),
    ]
    # Values are inserted verbatim, whitespace and all.
    assert b'{"x": 1}' in r.content
    assert b"[1, 2, 3]" in r.content


def test_keyrangevalues_json_without_check_inserts_non_json_verbatim(
    client: TestClient, filled: str
) -> None:
    write(client, filled, "bad", b"not json at all")
    r = client.get(url(filled, "keyrangevalues/a/c"), params={"json": "true"})
    assert r.status_code == 200
    assert b"not json at all" in r.content


def test_keyrangevalues_json_check_rejects_non_json(client: TestClient, filled: str) -> None:
    write(client, filled, "bad", b"not json at all")
    r = client.get(url(filled, "keyrangevalues/a/c"), params={"json": "true", "check": "true"})
    assert r.status_code == 400
    assert read(client, filled, "bad") == b"not json at all"


def test_keyrangevalues_json_check_accepts_json(client: TestClient, filled: str) -> None:
    r = client.get(url(filled, "keyrangevalues/a/d"), params={"json": "true", "check": "true"})
    assert r.status_code == 200
    assert json.loads(r.content) == {"a": {"x": 1}, "b": [1, 2, 3], "b1": "str", "c": {}, "d": 42}


@pytest.mark.parametrize("flag", ["tar", "jsontar"])
def test_keyrangevalues_tar(client: TestClient, filled: str, flag: str) -> None:
    write(client, filled, "bin", ALL_BYTES)
    r = client.get(url(filled, "keyrangevalues/b/c"), params={flag: "true"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/tar")
    assert parse_tar(r.content) == [
        ("b", b"[1, 2, 3]", 0o755, True),
        ("b1", b'"str"', 0o755, True),
        ("bin", ALL_BYTES, 0o755, True),
        ("c", b"", 0o755, True),
    ]


@pytest.mark.parametrize(
    "params", [{"json": "true", "tar": "true"}, {"json": "true", "jsontar": "true"}]
)
def test_keyrangevalues_json_and_tar_is_400(client: TestClient, filled: str, params: dict) -> None:
    r = client.get(url(filled, "keyrangevalues/a/d"), params=params)
    assert r.status_code == 400


def test_keyrangevalues_empty_range(client: TestClient, filled: str) -> None:
    r = client.get(url(filled, "keyrangevalues/x/y"))
    assert r.status_code == 200
    assert parse_kvs(r.content) == []
    r = client.get(url(filled, "keyrangevalues/x/y"), params={"json": "true"})
    assert r.status_code == 200
    assert json.loads(r.content) == {}
    r = client.get(url(filled, "keyrangevalues/x/y"), params={"tar": "true"})
    assert r.status_code == 200
    assert parse_tar(r.content) == []


# --------------------------------------------------------------------------- GET /keyvalues


def test_get_keyvalues_protobuf(client: TestClient, filled: str) -> None:
    write(client, filled, "digits", DIGITS)
    request = pb.Keys()
    request.key_ranges.add(key="digits", byte_start=2, byte_end=4)
    request.keys.extend(["d", "missing", "a"])
    request.key_ranges.add(key="digits", byte_start=0, byte_end=0)
    request.key_ranges.add(key="a", byte_start=1, byte_end=3)
    r = get_with_body(client, url(filled, "keyvalues"), request.SerializeToString())
    assert r.status_code == 200, r.text
    # All plain keys first (request order), then all key_ranges (request order).
    assert parse_kvs(r.content) == [
        ("d", b"42"),
        ("missing", b""),
        ("a", b'{"x": 1}'),
        ("digits", b"234"),
        ("digits", b"0"),
        ("a", b'"x"'),
    ]


def test_get_keyvalues_protobuf_empty_request(client: TestClient, filled: str) -> None:
    r = get_with_body(client, url(filled, "keyvalues"), b"")
    assert r.status_code == 200
    assert parse_kvs(r.content) == []


def test_get_keyvalues_json_strings(client: TestClient, filled: str) -> None:
    body = json.dumps(["d", "b", "missing", "a", "c"]).encode()
    r = get_with_body(client, url(filled, "keyvalues"), body, json="true")
    assert r.status_code == 200, r.text
    assert list(json.loads(r.content).items()) == [
        ("d", 42),
        ("b", [1, 2, 3]),
        ("missing", {}),
        ("a", {"x": 1}),
        ("c", {}),
    ]


def test_get_keyvalues_json_objects(client: TestClient, filled: str) -> None:
    write(client, filled, "nested", b'[10, [20, 30], "z"]')
    body = json.dumps(
        [
            {"key": "nested", "byte_start": 5, "byte_end": 12},
            {"key": "b"},
            {"key": "missing"},
            {"key": "a", "byte_start": 0, "byte_end": 7},
        ]
    ).encode()
    r = get_with_body(client, url(filled, "keyvalues"), body, json="true")
    assert r.status_code == 200, r.text
    assert list(json.loads(r.content).items()) == [
        ("nested", [20, 30]),
        ("b", [1, 2, 3]),
        ("missing", {}),
        ("a", {"x": 1}),
    ]


def test_get_keyvalues_json_ranged_value_must_be_json(client: TestClient, filled: str) -> None:
    write(client, filled, "known", KNOWN)
    body = json.dumps([{"key": "b", "byte_start": 0, "byte_end": 3}]).encode()  # "[1, "
    r = get_with_body(client, url(filled, "keyvalues"), body, json="true")
    assert r.status_code == 400
    assert read(client, filled, "b") == b"[1, 2, 3]"


@pytest.mark.parametrize("flag", ["tar", "jsontar"])
def test_get_keyvalues_tar(client: TestClient, filled: str, flag: str) -> None:
    write(client, filled, "bin", ALL_BYTES)
    write(client, filled, "digits", DIGITS)
    body = json.dumps(
        ["bin", "missing", {"key": "digits", "byte_start": 3, "byte_end": 6}, {"key": "c"}, "d"]
    ).encode()
    r = get_with_body(client, url(filled, "keyvalues"), body, **{flag: "true"})
    assert r.status_code == 200, r.text
    assert parse_tar(r.content) == [
        ("bin", ALL_BYTES, 0o755, True),
        ("missing", b"", 0o755, True),
        ("digits", b"3456", 0o755, True),
        ("c", b"", 0o755, True),
        ("d", b"42", 0o755, True),
    ]


@pytest.mark.parametrize(
    ("params", "body"),
    [
        ({}, b"\xff\xff\xff\xff"),
        ({}, b"\x0a\xff\x01"),
        ({"json": "true"}, b"not json"),
        ({"json": "true"}, b'{"a": 1}'),
        ({"json": "true"}, b"[1, 2]"),
        ({"json": "true"}, b'[{"nokey": "a"}]'),
        ({"tar": "true"}, b"not json"),
        ({"json": "true"}, b'[{"key": "d", "byte_start": 0}]'),
        ({"json": "true"}, b'[{"key": "d", "byte_end": 1}]'),
        ({"tar": "true"}, b'[{"key": "d", "byte_start": 0}]'),
        ({"json": "true"}, b'[{"key": "b", "byte_start": 0, "byte_end": 9}]'),
        ({"json": "true"}, b'[{"key": "b", "byte_start": 5, "byte_end": 2}]'),
        ({"tar": "true"}, b'[{"key": "b", "byte_start": 9, "byte_end": 9}]'),
        ({"json": "true", "tar": "true"}, b'["a"]'),
    ],
    ids=[
        "pb-garbage",
        "pb-truncated",
        "json-garbage",
        "json-object",
        "json-ints",
        "json-no-key",
        "tar-garbage",
        "json-start-only",
        "json-end-only",
        "tar-start-only",
        "json-end-outside",
        "json-start-after-end",
        "tar-outside",
        "json-and-tar",
    ],
)
@REQUEST_PARSING_ONLY
def test_get_keyvalues_bad_request_is_400(
    client: TestClient, filled: str, params: dict, body: bytes
) -> None:
    r = get_with_body(client, url(filled, "keyvalues"), body, **params)
    assert r.status_code == 400
    assert read(client, filled, "b") == b"[1, 2, 3]"


def test_get_keyvalues_protobuf_range_outside_is_400(client: TestClient, filled: str) -> None:
    request = pb.Keys()
    request.key_ranges.add(key="d", byte_start=0, byte_end=2)  # "42" has 2 bytes
    r = get_with_body(client, url(filled, "keyvalues"), request.SerializeToString())
    assert r.status_code == 400


# --------------------------------------------------------------------------- POST /keyvalues


def test_post_keyvalues_then_read_back(client: TestClient, root: str) -> None:
    write(client, root, "old", b"to be replaced")
    pairs = [
        ("old", b"replaced"),
        ("bin", ALL_BYTES),
        ("empty", b""),
        ("B", b"upper"),
        ("a b", b"sp"),
    ]
    r = client.post(url(root, "keyvalues"), content=kvs_message(pairs))
    assert r.status_code == 200, r.text
    assert r.content == b""
    for key, value in pairs:
        assert read(client, root, key) == value
    assert keys_at(client, root) == ["B", "a b", "bin", "empty", "old"]


def test_post_keyvalues_empty_message(client: TestClient, root: str) -> None:
    write(client, root, "known", KNOWN)
    r = client.post(url(root, "keyvalues"), content=b"")
    assert r.status_code == 200
    assert_known_unchanged(client, root, ["known"])


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xff\xff\xff",
        b"\x0a\xff\x01",
        b"\x0a\x05\x0a\x01",
        kvs_message([("known", b"CHANGED")])[:-2] + b"\x0a",
    ],
    ids=["garbage", "truncated-length", "truncated-nested", "cut-short"],
)
def test_post_keyvalues_malformed_is_400_and_writes_nothing(
    client: TestClient, root: str, body: bytes
) -> None:
    write(client, root, "known", KNOWN)
    r = client.post(url(root, "keyvalues"), content=body)
    assert r.status_code == 400
    assert_known_unchanged(client, root, ["known"])


@pytest.mark.parametrize("bad_key", ["", "x" * 481], ids=["empty-key", "long-key"])
def test_post_keyvalues_with_bad_key_is_400_and_writes_nothing(
    client: TestClient, root: str, bad_key: str
) -> None:
    write(client, root, "known", KNOWN)
    body = kvs_message([("known", b"CHANGED"), ("new", b"new"), (bad_key, b"x")])
    r = client.post(url(root, "keyvalues"), content=body)
    assert r.status_code == 400
    assert_known_unchanged(client, root, ["known"])


# --------------------------------------------------------------------------- bad inputs


BAD_REQUESTS = [
    ("POST", "key/" + "x" * 481, {}),
    ("POST", "key/", {}),
    ("POST", "keyvalues", {"content": b"\xff\xff\xff"}),
    ("POST", "keyvalues", {"content": kvs_message([("known", b"CHANGED"), ("", b"x")])}),
    ("POST", "bogus", {"content": b"x"}),
    ("GET", "bogus", {}),
    ("DELETE", "bogus", {}),
    ("GET", "key/known", {"params": {"byte_start": "1"}}),
    ("GET", "key/known", {"params": {"byte_start": "3", "byte_end": "99"}}),
    ("GET", "keyrangevalues/a/z", {"params": {"json": "true", "tar": "true"}}),
    ("GET", "keyvalues", {"content": b"\xff\xff", "params": {}}),
    ("GET", "keyvalues", {"content": b"{", "params": {"json": "true"}}),
    ("POST", "tags", {"content": b"not json"}),
]


@REFUSED_BEFORE_THE_STORE
@pytest.mark.parametrize(
    ("method", "rest", "kwargs"),
    BAD_REQUESTS,
    ids=[f"{m}-{rest[:20]}-{i}" for i, (m, rest, _) in enumerate(BAD_REQUESTS)],
)
def test_bad_input_is_400_and_leaves_data_unchanged(
    client: TestClient, root: str, method: str, rest: str, kwargs: dict
) -> None:
    write(client, root, "known", KNOWN)
    kwargs = {"content": b"v", **kwargs} if method == "POST" else kwargs
    r = client.request(method, url(root, rest), **kwargs)
    assert r.status_code == 400, (r.status_code, r.text)
    assert_known_unchanged(client, root, ["known"])
    r = client.get(url(root, "tags"))
    assert r.status_code == 200
    assert r.json() == {"Tags": None}


# --------------------------------------------------------------------------- versioning


def test_worked_example_reads(client: TestClient, api, root: str) -> None:
    """README §2.2: R writes k=1; A deletes k; B of A writes k=2; C branches off R."""
    write(client, root, "k", b"1")
    api.commit(root)
    a = api.newversion(root)
    api.delete(a, DATA, "k")
    api.commit(a)
    b = api.newversion(a)
    write(client, b, "k", b"2")
    c = api.branch(root, "exp")
    assert read(client, root, "k") == b"1"
    assert read(client, a, "k") is None
    assert client.head(url(a, "key/k")).status_code == 404
    assert read(client, b, "k") == b"2"
    assert read(client, c, "k") == b"1"
    assert keys_at(client, root) == ["k"]
    assert keys_at(client, a) == []
    assert keys_at(client, b) == ["k"]
    assert keys_at(client, c) == ["k"]


def test_worked_example_merge_tombstone_shadows_common_ancestor(
    client: TestClient, api, root: str
) -> None:
    write(client, root, "k", b"1")
    write(client, root, "other", b"o")
    api.commit(root)
    a = api.newversion(root)
    api.delete(a, DATA, "k")
    api.commit(a)
    c = api.branch(root, "exp")
    api.commit(c)
    for parents in ([a, c], [c, a]):
        m = api.merge(root, parents)
        assert read(client, m, "k") is None, parents
        assert read(client, m, "other") == b"o"
        assert keys_at(client, m) == ["other"]
        r = client.get(url(m, "keyrangevalues/a/z"))
        assert parse_kvs(r.content) == [("other", b"o")]


def test_worked_example_merge_conflict_until_written(client: TestClient, api, root: str) -> None:
    write(client, root, "k", b"1")
    write(client, root, "other", b"o")
    api.commit(root)
    a = api.newversion(root)
    api.delete(a, DATA, "k")
    api.commit(a)
    b = api.newversion(a)
    write(client, b, "k", b"2")
    api.commit(b)
    c = api.branch(root, "exp")
    write(client, c, "k", b"3")
    api.commit(c)
    m = api.merge(root, [b, c])
    r = client.get(url(m, "key/k"))
    assert r.status_code == 400
    assert read(client, m, "other") == b"o"  # only the conflicting key fails
    assert read(client, b, "k") == b"2"
    assert read(client, c, "k") == b"3"
    write(client, m, "k", b"resolved")
    assert read(client, m, "k") == b"resolved"
    assert keys_at(client, m) == ["k", "other"]
    assert read(client, b, "k") == b"2"
    assert read(client, c, "k") == b"3"


def test_merge_conflict_resolved_by_delete_at_merge_node(
    client: TestClient, api, root: str
) -> None:
    api.commit(root)
    x = api.newversion(root)
    write(client, x, "k", b"x")
    api.commit(x)
    y = api.branch(root, "y")
    write(client, y, "k", b"y")
    api.commit(y)
    m = api.merge(root, [x, y])
    assert client.get(url(m, "key/k")).status_code == 400
    api.delete(m, DATA, "k")
    assert read(client, m, "k") is None
    assert keys_at(client, m) == []


def test_merge_conflict_even_with_equal_values(client: TestClient, api, root: str) -> None:
    """Conflicts are decided by versions, not by comparing values (README §2.2)."""
    api.commit(root)
    x = api.newversion(root)
    write(client, x, "k", b"same")
    api.commit(x)
    y = api.branch(root, "y")
    write(client, y, "k", b"same")
    api.commit(y)
    m = api.merge(root, [x, y])
    assert client.get(url(m, "key/k")).status_code == 400


@pytest.mark.parametrize("order", ["newer-first", "newer-last"])
def test_merge_inherited_value_never_conflicts_with_newer_change(
    client: TestClient, api, root: str, order: str
) -> None:
    write(client, root, "k", b"1")
    api.commit(root)
    b = api.newversion(root)
    write(client, b, "k", b"2")
    api.commit(b)
    c = api.branch(root, "exp")
    write(client, c, "unrelated", b"u")
    api.commit(c)
    m = api.merge(root, [b, c] if order == "newer-first" else [c, b])
    assert read(client, m, "k") == b"2"
    assert read(client, m, "unrelated") == b"u"
    assert keys_at(client, m) == ["k", "unrelated"]


def test_keys_listing_per_version(client: TestClient, api, root: str) -> None:
    for key in ["a", "b", "c"]:
        write(client, root, key, f"root-{key}".encode())
    api.commit(root)
    x = api.newversion(root)
    y = api.branch(root, "y")
    api.delete(x, DATA, "b")
    write(client, x, "x", b"x")
    write(client, y, "y", b"y")
    write(client, y, "a", b"y-a")
    assert keys_at(client, root) == ["a", "b", "c"]
    assert keys_at(client, x) == ["a", "c", "x"]
    assert keys_at(client, y) == ["a", "b", "c", "y"]
    assert read(client, x, "a") == b"root-a"
    assert read(client, y, "a") == b"y-a"
    assert read(client, y, "b") == b"root-b"
    assert read(client, x, "y") is None
    assert read(client, y, "x") is None
    assert read(client, root, "x") is None
    assert client.get(url(x, "keyrange/a/b")).json() == ["a"]
    assert client.get(url(y, "keyrange/a/b")).json() == ["a", "b"]
    assert parse_kvs(client.get(url(x, "keyrangevalues/a/z")).content) == [
        ("a", b"root-a"),
        ("c", b"root-c"),
        ("x", b"x"),
    ]
    # The tombstone is inherited by descendants, until a descendant writes the key again.
    api.commit(x)
    x2 = api.newversion(x)
    assert keys_at(client, x2) == ["a", "c", "x"]
    assert read(client, x2, "b") is None
    write(client, x2, "b", b"x2-b")
    assert keys_at(client, x2) == ["a", "b", "c", "x"]
    assert read(client, x2, "b") == b"x2-b"
    assert read(client, x, "b") is None
    assert read(client, root, "b") == b"root-b"


def test_dag_three_levels_with_branch_and_merge(client: TestClient, api, root: str) -> None:
    r = root
    write(client, r, "k1", b"r")
    api.commit(r)
    a = api.newversion(r)
    write(client, a, "k2", b"a")
    api.commit(a)
    b = api.newversion(a)
    write(client, b, "k1", b"b")
    api.commit(b)
    c = api.branch(a, "side")
    write(client, c, "k3", b"c")
    api.delete(c, DATA, "k2")
    api.commit(c)
    m = api.merge(r, [b, c])
    # k1: B's write shadows R's. k2: C's tombstone shadows A's value on B's path too.
    assert read(client, m, "k1") == b"b"
    assert read(client, m, "k2") is None
    assert read(client, m, "k3") == b"c"
    assert keys_at(client, m) == ["k1", "k3"]
    write(client, m, "k4", b"m")
    api.commit(m)
    d = api.newversion(m)
    assert keys_at(client, d) == ["k1", "k3", "k4"]
    write(client, d, "k2", b"d")
    assert read(client, d, "k2") == b"d"
    assert parse_kvs(client.get(url(d, "keyrangevalues/k1/k4")).content) == [
        ("k1", b"b"),
        ("k2", b"d"),
        ("k3", b"c"),
        ("k4", b"m"),
    ]
    # Nothing above changed.
    expected = {
        r: ["k1"],
        a: ["k1", "k2"],
        b: ["k1", "k2"],
        c: ["k1", "k3"],
        m: ["k1", "k3", "k4"],
    }
    for node, keys in expected.items():
        assert keys_at(client, node) == keys
    assert read(client, r, "k1") == b"r"
    assert read(client, b, "k2") == b"a"
    assert read(client, c, "k1") == b"r"


@REFUSED_BEFORE_THE_STORE
@pytest.mark.parametrize(
    ("method", "rest", "content"),
    [
        ("POST", "key/k", b"changed"),
        ("POST", "key/new", b"new"),
        ("DELETE", "key/k", None),
        ("POST", "keyvalues", kvs_message([("k", b"changed"), ("new", b"new")])),
    ],
)
def test_write_to_committed_node_is_400(
    client: TestClient, api, root: str, method: str, rest: str, content: bytes | None
) -> None:
    write(client, root, "k", b"original")
    api.commit(root)
    child = api.newversion(root)
    r = client.request(method, url(root, rest), content=content)
    assert r.status_code == 400
    assert read(client, root, "k") == b"original"
    assert keys_at(client, root) == ["k"]
    assert read(client, child, "k") == b"original"
    assert keys_at(client, child) == ["k"]


def test_instance_created_at_child_holds_no_data_at_ancestor(client: TestClient, api) -> None:
    r = api.new_repo()
    api.commit(r)
    a = api.newversion(r)
    api.new_instance(a, "keyvalue", DATA)
    write(client, a, "k", b"v")
    assert keys_at(client, r) == []
    assert read(client, r, "k") is None
    assert read(client, a, "k") == b"v"


def test_version_references(client: TestClient, api, root: str) -> None:
    r = root
    write(client, r, "k", b"R")
    api.commit(r)
    m1 = api.newversion(r)
    write(client, m1, "k", b"M1")
    api.commit(m1)
    m2 = api.newversion(m1)
    write(client, m2, "k", b"M2")
    e1 = api.branch(m1, "exp")
    write(client, e1, "k", b"E1")
    api.commit(e1)
    e2 = api.newversion(e1)
    write(client, e2, "k", b"E2")

    cases = {
        ":master": b"M2",
        f"{r[:6]}:master": b"M2",
        f"{e2[:6]}:master": b"M2",
        f"{r[:6]}:": b"M2",
        f"{r[:6]}:master~0": b"M2",
        f"{r[:6]}:master~1": b"M1",
        f"{r[:6]}:master~2": b"R",
        f"{m2[:6]}:exp": b"E2",
        ":exp": b"E2",
        f"{r[:6]}:exp~1": b"E1",
        f"{r[:6]}:exp~2": b"M1",
        f"{r[:6]}:exp~3": b"R",
        r[:8]: b"R",
        m1[:8]: b"M1",
        e1[:8]: b"E1",
        e2: b"E2",
    }
    for ref, expected in cases.items():
        assert read(client, ref, "k") == expected, ref

    # Writes through a reference go to the node it resolves to.
    write(client, ":master", "viaref", b"w")
    assert read(client, m2, "viaref") == b"w"
    assert read(client, m1, "viaref") is None
    # A reference to a committed node is a committed node.
    r400 = client.post(url(f"{r[:6]}:master~1", "key/k"), content=b"no")
    assert r400.status_code == 400
    assert read(client, m1, "k") == b"M1"

    # Resolution is per request: `:master` follows a new leaf.
    api.commit(m2)
    m3 = api.newversion(m2)
    assert read(client, ":master", "k") == b"M2"
    write(client, ":master", "k", b"M3")
    assert read(client, m3, "k") == b"M3"
    assert read(client, m2, "k") == b"M2"
    assert read(client, f"{r[:6]}:master~1", "k") == b"M2"


@REFUSED_BEFORE_THE_STORE
@pytest.mark.parametrize(
    "ref",
    ["zzzzzz", "{r}:nosuchbranch", "{r}:exp~9", "{r}:exp~x", "{r}:exp~-1", "{r}:master:exp"],
)
def test_bad_version_reference_is_400(client: TestClient, api, root: str, ref: str) -> None:
    write(client, root, "k", b"R")
    api.commit(root)
    api.branch(root, "exp")
    r = client.get(url(ref.format(r=root[:6]), "key/k"))
    assert r.status_code == 400


# --------------------------------------------------------------------------- unversioned


def test_unversioned_instance_is_repo_wide_and_ignores_locks(client: TestClient, api) -> None:
    r = api.new_repo()
    api.new_instance(r, "keyvalue", "flat", versioned="false")
    api.new_instance(r, "keyvalue", DATA)
    write(client, r, "k", b"from-root", data="flat")
    api.commit(r)
    a = api.newversion(r)
    c = api.branch(r, "side")
    api.commit(a)
    b = api.newversion(a)
    nodes = [r, a, b, c]
    for node in nodes:
        assert read(client, node, "k", data="flat") == b"from-root"
    # A write at a leaf is visible at the root and at a sibling branch.
    write(client, b, "k", b"from-b", data="flat")
    write(client, c, "c", b"from-c", data="flat")
    # Writes at locked nodes work.
    write(client, a, "a", b"from-a", data="flat")
    write(client, r, "r", b"from-r", data="flat")
    r_batch = client.post(url(a, "keyvalues", "flat"), content=kvs_message([("batch", b"x")]))
    assert r_batch.status_code == 200
    for node in nodes:
        assert read(client, node, "k", data="flat") == b"from-b"
        assert keys_at(client, node, "flat") == ["a", "batch", "c", "k", "r"]
    # Deletes too, at a locked node.
    r_del = client.delete(url(r, "key/c", "flat"))
    assert r_del.status_code == 200
    for node in nodes:
        assert read(client, node, "c", data="flat") is None
        assert keys_at(client, node, "flat") == ["a", "batch", "k", "r"]
    # The versioned instance next to it still enforces the lock.
    assert client.post(url(r, "key/k"), content=b"x").status_code == 400
    assert keys_at(client, r) == []


# --------------------------------------------------------------------------- info, tags, help


HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_info(client: TestClient, api, method: str) -> None:
    r = api.new_repo()
    api.commit(r)
    a = api.newversion(r)
    api.new_instance(a, "keyvalue", "meshes")
    resp = client.request(method, url(a, "info", "meshes"))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    info = resp.json()
    assert set(info) == {"Base", "Extended"}
    assert info["Extended"] == {}
    base = info["Base"]
    assert base["TypeName"] == "keyvalue"
    assert base["TypeURL"] == "github.com/janelia-flyem/dvid/datatype/keyvalue"
    assert base["TypeVersion"] == "0.2"
    assert base["Name"] == "meshes"
    assert HEX32.match(base["DataUUID"])
    assert base["DataUUID"] not in (r, a)
    assert base["RepoUUID"] == a  # the node it was created on
    assert base["Compression"] == "LZ4 compression, level -1"
    assert base["Checksum"] == "No checksum"
    assert base["Syncs"] == []
    assert base["Versioned"] is True
    assert base["Tags"] is None
    # The same instance, seen from another node.
    assert client.get(url(r, "info", "meshes")).json() == info


def test_info_unversioned(client: TestClient, api) -> None:
    r = api.new_repo()
    api.new_instance(r, "keyvalue", "flat", versioned="false")
    assert client.get(url(r, "info", "flat")).json()["Base"]["Versioned"] is False


def test_two_instances_have_distinct_data_uuids(client: TestClient, api, root: str) -> None:
    api.new_instance(root, "keyvalue", "other")
    write(client, root, "k", b"in kv")
    u1 = client.get(url(root, "info")).json()["Base"]["DataUUID"]
    u2 = client.get(url(root, "info", "other")).json()["Base"]["DataUUID"]
    assert u1 != u2
    assert read(client, root, "k", data="other") is None


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("none", "No compression, level -1"),
        ("snappy", "Go Snappy compression, level -1"),
        ("lz4", "LZ4 compression, level -1"),
        ("gzip:7", "gzip compression, level 7"),
    ],
)
def test_compression_setting_is_reported_and_transparent(
    client: TestClient, api, setting: str, expected: str
) -> None:
    r = api.new_repo()
    api.new_instance(r, "keyvalue", "c", Compression=setting)
    assert client.get(url(r, "info", "c")).json()["Base"]["Compression"] == expected
    value = ALL_BYTES * 64 + b"\x00" * 10000
    write(client, r, "v", value, data="c")
    assert read(client, r, "v", data="c") == value


def test_tags(client: TestClient, root: str) -> None:
    r = client.get(url(root, "tags"))
    assert r.status_code == 200
    assert r.json() == {"Tags": None}
    assert client.post(url(root, "tags"), json={"a": "1", "b": "2"}).status_code == 200
    assert client.get(url(root, "tags")).json() == {"Tags": {"a": "1", "b": "2"}}
    # Without replace, tags are merged.
    assert client.post(url(root, "tags"), json={"b": "20", "c": "3"}).status_code == 200
    assert client.get(url(root, "tags")).json() == {"Tags": {"a": "1", "b": "20", "c": "3"}}
    # With replace=true, the new tags replace all old ones.
    resp = client.post(url(root, "tags"), params={"replace": "true"}, json={"z": "26"})
    assert resp.status_code == 200
    assert client.get(url(root, "tags")).json() == {"Tags": {"z": "26"}}
    assert client.get(url(root, "info")).json()["Base"]["Tags"] == {"z": "26"}


def test_tags_at_creation(client: TestClient, api) -> None:
    r = api.new_repo()
    api.new_instance(r, "keyvalue", "t", Tags="k1=v1,k2=v2")
    assert client.get(url(r, "tags", "t")).json() == {"Tags": {"k1": "v1", "k2": "v2"}}
    assert client.get(url(r, "info", "t")).json()["Base"]["Tags"] == {"k1": "v1", "k2": "v2"}


def test_help(client: TestClient, root: str) -> None:
    r = client.get(url(root, "help"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "keyvalue" in r.text
    assert "keyrangevalues" in r.text


@REFUSED_BEFORE_THE_STORE
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_keyword_is_400(client: TestClient, root: str, method: str) -> None:
    r = client.request(method, url(root, "nosuchendpoint"))
    assert r.status_code == 400


def test_unknown_instance_or_uuid_is_400(client: TestClient, root: str) -> None:
    write(client, root, "k", b"v")
    assert client.get(url(root, "keys", "nosuchdata")).status_code == 400
    assert client.get(url(root, "key/k", "nosuchdata")).status_code == 400
    assert client.get(url("0" * 32, "key/k")).status_code == 400


# --------------------------------------------------------------------------- durability


def test_data_survives_restart(client: TestClient, api, make_client) -> None:
    r = api.new_repo()
    api.new_instance(r, "keyvalue", DATA)
    api.new_instance(r, "keyvalue", "flat", versioned="false")
    write(client, r, "a", b"root-a")
    write(client, r, "b", b"root-b")
    write(client, r, "f", b"flat-root", data="flat")
    api.commit(r)
    child = api.newversion(r)
    api.delete(child, DATA, "b")
    write(client, child, "bin", ALL_BYTES)
    write(client, child, "empty", b"")
    r_batch = client.post(url(child, "keyvalues"), content=kvs_message([("batch", b"bv")]))
    assert r_batch.status_code == 200
    write(client, child, "f", b"flat-child", data="flat")
    info_before = client.get(url(r, "info")).json()

    second = make_client()
    assert keys_at(second, r) == ["a", "b"]
    assert read(second, r, "b") == b"root-b"
    assert keys_at(second, child) == ["a", "batch", "bin", "empty"]
    assert read(second, child, "a") == b"root-a"
    assert read(second, child, "b") is None
    assert read(second, child, "bin") == ALL_BYTES
    assert read(second, child, "empty") == b""
    assert read(second, r, "f", data="flat") == b"flat-child"
    assert parse_kvs(second.get(url(child, "keyrangevalues/a/bz")).content) == [
        ("a", b"root-a"),
        ("batch", b"bv"),
        ("bin", ALL_BYTES),
    ]
    assert second.get(url(r, "info")).json() == info_before
    assert second.get(url(r[:8], "key/a")).content == b"root-a"
    assert second.get(url(":master", "key/bin")).content == ALL_BYTES
    # The lock survives, and the open node still takes writes.
    assert second.post(url(r, "key/a"), content=b"no").status_code == 400
    write(second, child, "after", b"restart")
    third = make_client()
    assert read(third, child, "after") == b"restart"
    assert read(third, r, "a") == b"root-a"
    assert keys_at(third, child) == ["a", "after", "batch", "bin", "empty"]
