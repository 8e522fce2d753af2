"""Behaviour of the ``roi`` datatype.

The rules come from /work/shared/spec/roi.md and DVID's Go code (datatype/roi/roi.go: the
handlers, ``PutSpans``, ``GetMask``, ``PointQuery``, ``Partition``; roi_test.go's spans,
points and expected partitions are reused here as golden data). Storage and versioning
run on every backend; request parsing and the computations over spans read the ROI with
the same single record get on every backend, so their tables run on the memory store.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, cast

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import app.datatypes.roi.partition as partition_module
from app.datatypes import bind, capabilities
from app.datatypes.roi import Roi
from tests.conftest import Api

DATA = "roi"
MEMORY_ONLY = pytest.mark.parametrize("backend", ["memory"], indirect=True)
EMPTY_EXTENDED = {"BlockSize": [32, 32, 32], "MinZ": 2**31 - 1, "MaxZ": -(2**31)}

#: roi_test.go's ``testSpans``, ``testPoints`` and ``expectedInclusions``.
DVID_SPANS = [
    [100, 101, 200, 210], [100, 102, 200, 210], [100, 103, 201, 212],
    [101, 101, 201, 213], [101, 102, 202, 215], [101, 103, 202, 216],
    [102, 101, 200, 210], [102, 103, 201, 216], [102, 104, 203, 217],
    [103, 101, 200, 210], [103, 103, 200, 210], [103, 105, 201, 212],
]  # fmt: skip
DVID_POINTS = [
    [6400, 3232, 3167], [6400, 3232, 3200], [6719, 3232, 3200], [6720, 3232, 3200],
    [6720, 4100, 3263], [6720, 3233, 3201], [6720, 3234, 3200],
]  # fmt: skip
DVID_INCLUSIONS = [False, True, True, True, False, True, True]


def _sub(lo: list[int], hi: list[int], chunk_lo: list[int], chunk_hi: list[int], n: int, a: int):
    return {
        "MinPoint": lo,
        "MaxPoint": hi,
        "MinChunk": chunk_lo,
        "MaxChunk": chunk_hi,
        "TotalBlocks": n,
        "ActiveBlocks": a,
    }


#: roi_test.go's ``expectedPartition`` (batchsize=5&optimized=true) ...
DVID_OPTIMIZED = {
    "NumTotalBlocks": 450,
    "NumActiveBlocks": 152,
    "NumSubvolumes": 3,
    "ROI": {"MinChunk": [0, 0, 100], "MaxChunk": [217, 105, 103]},
    "Subvolumes": [
        _sub([6400, 3232, 3200], [6591, 3391, 3359], [200, 101, 100], [205, 105, 104], 150, 61),
        _sub([6592, 3232, 3200], [6783, 3391, 3359], [206, 101, 100], [211, 105, 104], 150, 67),
        _sub([6784, 3232, 3200], [6975, 3391, 3359], [212, 101, 100], [217, 105, 104], 150, 24),
    ],
}
#: ... and ``expectedSimplePartition`` (batchsize=5).
DVID_SIMPLE = {
    "NumTotalBlocks": 1375,
    "NumActiveBlocks": 152,
    "NumSubvolumes": 10,
    "ROI": {"MinChunk": [0, 0, 100], "MaxChunk": [217, 105, 103]},
    "Subvolumes": [
        _sub([6368, 3168, 3136], [6527, 3327, 3295], [199, 99, 98], [203, 103, 102], 125, 25),
        _sub([6528, 3168, 3136], [6687, 3327, 3295], [204, 99, 98], [208, 103, 102], 125, 40),
        _sub([6688, 3168, 3136], [6847, 3327, 3295], [209, 99, 98], [213, 103, 102], 125, 30),
        _sub([6848, 3168, 3136], [7007, 3327, 3295], [214, 99, 98], [218, 103, 102], 125, 8),
        _sub([6496, 3328, 3136], [6655, 3487, 3295], [203, 104, 98], [207, 108, 102], 125, 5),
        _sub([6656, 3328, 3136], [6815, 3487, 3295], [208, 104, 98], [212, 108, 102], 125, 5),
        _sub([6816, 3328, 3136], [6975, 3487, 3295], [213, 104, 98], [217, 108, 102], 125, 5),
        _sub([6368, 3232, 3296], [6527, 3391, 3455], [199, 101, 103], [203, 105, 107], 125, 11),
        _sub([6528, 3232, 3296], [6687, 3391, 3455], [204, 101, 103], [208, 105, 107], 125, 15),
        _sub([6688, 3232, 3296], [6847, 3391, 3455], [209, 101, 103], [213, 105, 107], 125, 8),
    ],
}


# --------------------------------------------------------------------------- helpers


def url(uuid: str, rest: str, data: str = DATA) -> str:
    return f"/api/node/{uuid}/{data}/{rest}"


def new_roi(api: Api, uuid: str | None = None, name: str = DATA, **settings: str) -> str:
    uuid = uuid or api.new_repo()
    api.new_instance(uuid, "roi", name, **settings)
    return uuid


def post_roi(client: TestClient, uuid: str, spans: Any, data: str = DATA) -> None:
    r = client.post(url(uuid, "roi", data), json=spans)
    assert r.status_code == 200, r.text


def get_roi(client: TestClient, uuid: str, data: str = DATA) -> list[list[int]]:
    r = client.get(url(uuid, "roi", data))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def extended(client: TestClient, uuid: str, data: str = DATA) -> dict[str, Any]:
    r = client.get(url(uuid, "info", data))
    assert r.status_code == 200, r.text
    return r.json()["Extended"]


def ptquery(client: TestClient, uuid: str, points: Any, data: str = DATA) -> list[bool]:
    r = client.post(url(uuid, "ptquery", data), json=points)
    assert r.status_code == 200, r.text
    return r.json()


def bound_roi(client: TestClient, uuid: str, name: str = DATA) -> Roi:
    services = cast(FastAPI, client.app).state.services
    repo, node = services.catalog.resolve(uuid)
    data = bind(services, repo, node.uuid, repo.instance(name))
    assert isinstance(data, Roi)
    return data


def block_set(spans: list[list[int]]) -> set[tuple[int, int, int]]:
    """The blocks (x, y, z) of spans, the obvious way."""
    return {(x, y, z) for z, y, x0, x1 in spans for x in range(x0, x1 + 1)}


def random_spans(rng: np.random.Generator, n: int, extent: int = 6) -> list[list[int]]:
    """Spans in a small cube around the origin, overlapping and adjacent ones included."""
    spans = []
    for _ in range(n):
        z, y, x0 = (int(v) for v in rng.integers(-extent, extent, 3))
        spans.append([z, y, x0, x0 + int(rng.integers(0, 4))])
    return spans


# --------------------------------------------------------------------------- storage


def test_roi_round_trip_sorts_and_replaces(api: Api) -> None:
    uuid = new_roi(api)
    assert get_roi(api.c, uuid) == []
    assert extended(api.c, uuid) == EMPTY_EXTENDED

    posted = [[3, 1, 5, 9], [0, 2, 3, 5], [0, 0, 0, 1], [0, 2, 3, 5], [0, 2, 1, 7], [-2, 4, -3, -3]]
    post_roi(api.c, uuid, posted)
    r = api.c.get(url(uuid, "roi"))
    # DVID's keys are the spans: sorted by z, y, x0, x1, exact duplicates once, overlaps kept.
    assert r.content == b"[[-2,4,-3,-3],[0,0,0,1],[0,2,1,7],[0,2,3,5],[3,1,5,9]]"
    assert extended(api.c, uuid) == {**EMPTY_EXTENDED, "MinZ": -2, "MaxZ": 3}

    post_roi(api.c, uuid, [[7, 7, 7, 8]])  # replaces, not adds
    assert get_roi(api.c, uuid) == [[7, 7, 7, 8]]
    assert extended(api.c, uuid) == {**EMPTY_EXTENDED, "MinZ": 7, "MaxZ": 7}
    post_roi(api.c, uuid, [])
    assert get_roi(api.c, uuid) == []
    assert extended(api.c, uuid) == EMPTY_EXTENDED


def test_delete_is_per_version(api: Api) -> None:
    root = new_roi(api)
    post_roi(api.c, root, [[0, 0, 0, 3]])
    assert api.c.delete(url(root, "roi")).status_code == 200
    assert get_roi(api.c, root) == []
    post_roi(api.c, root, [[1, 1, 1, 1]])
    api.commit(root)

    child = api.newversion(root)
    assert get_roi(api.c, child) == [[1, 1, 1, 1]]  # inherited
    assert api.c.delete(url(child, "roi")).status_code == 200
    assert get_roi(api.c, child) == []
    assert extended(api.c, child) == EMPTY_EXTENDED
    assert get_roi(api.c, root) == [[1, 1, 1, 1]]
    assert extended(api.c, root)["MinZ"] == 1
    api.commit(child)

    grandchild = api.newversion(child)
    assert get_roi(api.c, grandchild) == []  # the tombstone is inherited too
    post_roi(api.c, grandchild, [[2, 2, 2, 2]])
    assert get_roi(api.c, grandchild) == [[2, 2, 2, 2]]
    assert get_roi(api.c, child) == [] and get_roi(api.c, root) == [[1, 1, 1, 1]]

    sibling = api.branch(root, "other")
    assert get_roi(api.c, sibling) == [[1, 1, 1, 1]]


def test_locked_node_refuses_writes_but_answers_reads(api: Api) -> None:
    root = new_roi(api)
    post_roi(api.c, root, DVID_SPANS)
    api.commit(root)
    for method in ("POST", "DELETE"):
        r = api.c.request(method, url(root, "roi"), json=[[0, 0, 0, 0]])
        assert r.status_code == 400 and "locked" in r.text, (method, r.text)
    assert get_roi(api.c, root) == sorted(DVID_SPANS)
    # POST ptquery only reads (DVID's IsMutationRequest), so it works at a locked node.
    assert ptquery(api.c, root, DVID_POINTS) == DVID_INCLUSIONS
    r = api.c.get(url(root, "mask/0_1_2/10_10_10/6400_3232_3200"))
    assert r.status_code == 200 and r.content == b"\x01" * 1000
    r = api.c.get(url(root, "partition?batchsize=5&optimized=true"))
    assert r.status_code == 200 and r.json() == DVID_OPTIMIZED


def test_mask_matches_blocks_of_spans(api: Api) -> None:
    uuid = new_roi(api, BlockSize="4,3,2")
    spans = random_spans(np.random.default_rng(7), 40)
    post_roi(api.c, uuid, spans)
    size, offset = (19, 17, 13), (-11, -9, -7)  # not block-aligned, crossing the origin
    r = api.c.get(url(uuid, "mask/0_1_2/{}_{}_{}/{}_{}_{}".format(*size, *offset)))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    got = np.frombuffer(r.content, np.uint8).reshape(size[::-1])

    blocks = block_set(spans)
    expected = np.zeros(size[::-1], np.uint8)
    for z, y, x in itertools.product(*(range(n) for n in size[::-1])):
        vx, vy, vz = x + offset[0], y + offset[1], z + offset[2]
        expected[z, y, x] = (vx // 4, vy // 3, vz // 2) in blocks
    assert got.any() and not got.all()
    np.testing.assert_array_equal(got, expected)

    far = api.c.get(url(uuid, "mask/0_1_2/8_8_8/1000_1000_1000"))
    assert far.status_code == 200 and far.content == bytes(512)


def test_ptquery_answers_in_request_order(api: Api) -> None:
    uuid = new_roi(api)
    assert ptquery(api.c, uuid, DVID_POINTS) == [False] * len(DVID_POINTS)  # no ROI yet
    post_roi(api.c, uuid, DVID_SPANS)
    assert ptquery(api.c, uuid, DVID_POINTS) == DVID_INCLUSIONS
    assert ptquery(api.c, uuid, DVID_POINTS[::-1]) == DVID_INCLUSIONS[::-1]
    assert ptquery(api.c, uuid, []) == []


def test_bad_spans_change_nothing(api: Api) -> None:
    uuid = new_roi(api)
    post_roi(api.c, uuid, [[1, 2, 3, 4]])
    for body in (b"[[0, 0, 5, 4]]", b"[[0, 0, 0]]", b"[[0, 0, 0, 1.5]]", b"{", b""):
        r = api.c.post(url(uuid, "roi"), content=body)
        assert r.status_code == 400, (body, r.text)
    assert get_roi(api.c, uuid) == [[1, 2, 3, 4]]


# --------------------------------------------------------------------------- request parsing


@MEMORY_ONLY
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[[0, 0, 5, 4]]", "x0 > x1"),
        (b"[[1, 1, 1, 1], [0, 0, 2, 1]]", "span 1"),
        (b"[[0, 0, 0]]", "4 integer"),
        (b"[[0, 0, 0, 1, 2]]", "4 integer"),
        (b"[[0, 0, 0, 1.0]]", "4 integer"),
        (b'[[0, 0, 0, "1"]]', "4 integer"),
        (b"[[0, 0, true, 1]]", "4 integer"),
        (b"[[0, 0, null, 1]]", "4 integer"),
        (b"[0, 0, 0, 1]", "4 integer"),
        (b"[[0, 0, 0, 1048576]]", "outside"),
        (b"[[0, 0, 0, 9223372036854775808]]", "outside"),
        (b"[[0, 0, -99999999999999999999999, 1]]", "4 integer"),  # orjson: a float
        (b'{"spans": []}', "JSON list"),
        (b"7", "JSON list"),
        (b"null", "JSON list"),
        (b"", "JSON list"),
        (b"[[0, 0, 0, 1]", "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
    ],
)
def test_bad_spans_are_400s(api: Api, body: bytes, message: str) -> None:
    uuid = new_roi(api)
    post_roi(api.c, uuid, [[5, 5, 5, 5]])
    r = api.c.post(url(uuid, "roi"), content=body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("text/plain")
    assert message in r.text
    assert get_roi(api.c, uuid) == [[5, 5, 5, 5]]


@MEMORY_ONLY
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "mask/0_1/10_10/0_0_0", None),
        ("GET", "mask/xy/10_10_1/0_0_0", None),
        ("GET", "mask/0_1_3/10_10_10/0_0_0", None),
        ("GET", "mask/0_1_2/10_10/0_0_0", None),
        ("GET", "mask/0_1_2/10_0_10/0_0_0", None),
        ("GET", "mask/0_1_2/10_10_10/0_0_x", None),
        ("GET", "mask/0_1_2/10_10_10/0_0_2000000000", None),
        ("GET", "mask/0_1_2/10_10_10", None),
        ("POST", "mask/0_1_2/10_10_10/0_0_0", None),
        ("GET", "ptquery", None),
        ("POST", "ptquery", b""),
        ("POST", "ptquery", b"[[1, 2]]"),
        ("POST", "ptquery", b"[[1, 2, 3.5]]"),
        ("POST", "ptquery", b'{"x": 1}'),
        ("POST", "ptquery", b"[[1, 2, 3]"),
        ("POST", "ptquery", b"[[1, 2, 99999999999]]"),
        ("GET", "partition", None),
        ("GET", "partition?batchsize=", None),
        ("GET", "partition?batchsize=eight", None),
        ("GET", "partition?batchsize=0", None),
        ("GET", "partition?batchsize=-3", None),
        ("GET", "partition?batchsize=99999999999999999999", None),
        ("POST", "partition?batchsize=8", None),
        ("PUT", "roi", b"[]"),
    ],
)
def test_bad_requests_are_400s(api: Api, method: str, path: str, body: bytes | None) -> None:
    uuid = new_roi(api)
    post_roi(api.c, uuid, [[0, 0, 0, 1]])
    r = api.c.request(method, url(uuid, path), content=body)
    assert r.status_code == 400, (path, r.status_code, r.text)
    assert r.headers["content-type"].startswith("text/plain")


@MEMORY_ONLY
def test_mask_size_is_bounded(make_client: Any) -> None:
    client = make_client(max_voxels=1000)
    uuid = new_roi(Api(client))
    assert client.get(url(uuid, "mask/0_1_2/10_10_10/0_0_0")).status_code == 200
    assert client.get(url(uuid, "mask/0_1_2/10_10_11/0_0_0")).status_code == 413


@MEMORY_ONLY
@pytest.mark.parametrize(
    ("setting", "block_size"),
    [(None, [32, 32, 32]), ("8,16,4", [8, 16, 4]), (" 1, 2 ,3", [1, 2, 3])],
)
def test_block_size_setting(api: Api, setting: str | None, block_size: list[int]) -> None:
    settings = {} if setting is None else {"BlockSize": setting}
    uuid = new_roi(api, **settings)
    assert extended(api.c, uuid) == {**EMPTY_EXTENDED, "BlockSize": block_size}
    r = api.c.get(url(uuid, "info"))
    assert r.json()["Base"]["TypeName"] == "roi"


@MEMORY_ONLY
@pytest.mark.parametrize("setting", ["32", "32,32", "0,32,32", "-1,2,3", "a,b,c", "1.5,2,3"])
def test_bad_block_size_is_400(api: Api, setting: str) -> None:
    uuid = api.new_repo()
    body = {"typename": "roi", "dataname": DATA, "BlockSize": setting}
    r = api.c.post(f"/api/repo/{uuid}/instance", json=body)
    assert r.status_code == 400, r.text
    assert "BlockSize" in r.text


@MEMORY_ONLY
def test_help_is_dvids(api: Api) -> None:
    uuid = new_roi(api)
    r = api.c.get(url(uuid, "help"))
    assert r.status_code == 200
    assert r.text.startswith(
        "\nAPI for 'roi' datatype (github.com/janelia-flyem/dvid/datatype/roi)"
    )
    assert "BlockSize      Size in pixels  (default: 32)" in r.text
    assert "GET <api URL>/node/<UUID>/<data name>/partition?batchsize=8" in r.text


# --------------------------------------------------------------------------- partition


@MEMORY_ONLY
def test_partition_is_dvids_byte_for_byte(api: Api) -> None:
    uuid = new_roi(api)
    post_roi(api.c, uuid, DVID_SPANS)
    for query, expected in (("", DVID_SIMPLE), ("&optimized=true", DVID_OPTIMIZED)):
        r = api.c.get(url(uuid, f"partition?batchsize=5{query}"))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json() == expected
        # Go's json.MarshalIndent(v, "", "    "): one value per line, no trailing newline.
        assert r.text == json.dumps(expected, indent=4)
    # Only "true" and "on" ask for the optimized form, as in DVID.
    assert api.c.get(url(uuid, "partition?batchsize=5&optimized=1")).json() == DVID_SIMPLE
    assert api.c.get(url(uuid, "partition?batchsize=5&optimized=on")).json() == DVID_OPTIMIZED


@MEMORY_ONLY
def test_partition_of_empty_roi(api: Api) -> None:
    uuid = new_roi(api)
    for query in ("", "&optimized=true"):
        r = api.c.get(url(uuid, f"partition?batchsize=8{query}"))
        assert r.status_code == 200, r.text
        assert r.json() == {
            "NumTotalBlocks": 0,
            "NumActiveBlocks": 0,
            "NumSubvolumes": 0,
            "ROI": {"MinChunk": [0, 0, 2**31 - 1], "MaxChunk": [0, 0, -(2**31)]},
            "Subvolumes": [],
        }


@MEMORY_ONLY
def test_simple_partition_counts_every_grid_cell(api: Api) -> None:
    """A small ROI worked by hand: batchsize 2, block size 10. z 0..2 (dz 3, 1 left
    over: layers start 0 above MinZ) gives layers z 0-1 and 2-3; y and x likewise."""
    uuid = new_roi(api, BlockSize="10,10,10")
    spans = [[0, 0, 0, 2], [1, 1, 1, 1], [2, 5, 4, 4]]
    post_roi(api.c, uuid, spans)
    got = api.c.get(url(uuid, "partition?batchsize=2")).json()
    # Layer z 0-1: y 0..1 (dy 2, no leftover) -> one row y 0-1; x 0..2 (dx 3, 1 left:
    # 0 before) -> cells x 0-1 (actives: x 0,1 of span 1 + x 1 of span 2 = 3) and x 2-3 (1).
    # Layer z 2-3: y 5 (dy 1, 1 left: 0 before) -> row y 5-6; x 4 -> cell x 4-5 (1).
    assert got["Subvolumes"] == [
        _sub([0, 0, 0], [19, 19, 19], [0, 0, 0], [1, 1, 1], 8, 3),
        _sub([20, 0, 0], [39, 19, 19], [2, 0, 0], [3, 1, 1], 8, 1),
        _sub([40, 50, 20], [59, 69, 39], [4, 5, 2], [5, 6, 3], 8, 1),
    ]
    assert got["NumTotalBlocks"] == 24 and got["NumActiveBlocks"] == 5
    assert got["ROI"] == {"MinChunk": [0, 0, 0], "MaxChunk": [4, 5, 2]}


@MEMORY_ONLY
def test_partition_layers_follow_gaps_in_z(api: Api) -> None:
    """Every span lands in a layer that contains it, however far apart in z (DVID
    advances one layer per span and misplaces the later ones)."""
    uuid = new_roi(api)
    post_roi(api.c, uuid, [[0, 0, 0, 0], [100, 0, 0, 0], [101, 0, 0, 0], [300, 0, 0, 0]])
    for query in ("", "&optimized=true"):
        got = api.c.get(url(uuid, f"partition?batchsize=4{query}")).json()
        assert got["NumActiveBlocks"] == 4
        layers = [(s["MinChunk"][2], s["MaxChunk"][2]) for s in got["Subvolumes"]]
        for z in (0, 100, 101, 300):
            assert any(lo <= z <= hi for lo, hi in layers), (query, z, layers)


@MEMORY_ONLY
def test_optimized_partition_cuts_at_gaps(api: Api) -> None:
    """A row with gaps: a subvolume with a gap is cut at its longest one, its covered part
    joins the previous subvolume (DVID's merge, which sets ``MaxPoint`` to the first voxel
    of the new last block) and the next subvolume starts after the gap; a gap in the very
    first subvolume, where DVID would panic, starts one."""
    uuid = new_roi(api, BlockSize="2,2,2")
    post_roi(api.c, uuid, [[0, 0, 0, 5], [0, 0, 8, 8], [0, 0, 11, 11]])
    got = api.c.get(url(uuid, "partition?batchsize=3&optimized=true")).json()
    # Layer z 0-2; one row y 0-3 (dy 1 % 3 = 1 row one deeper): 12 blocks per x.
    # x 0..11 (dx 12, none left over): x 0-2 and 3-5 covered; x 6-8 has gap 6-7 at its
    # start -> next at 8; x 8-10 has gap 9-10 after 8 -> x 8 joins x 3-5, next at 11;
    # x 11-13 has gap 12-13 -> x 11 joins too.
    assert got["Subvolumes"] == [
        _sub([0, 0, 0], [5, 7, 5], [0, 0, 0], [2, 3, 2], 36, 3),
        _sub([6, 0, 0], [22, 6, 4], [3, 0, 0], [11, 3, 2], 36 + 12 + 12, 3 + 1 + 1),
    ]
    assert (got["NumTotalBlocks"], got["NumActiveBlocks"]) == (96, 8)

    post_roi(api.c, uuid, [[0, 0, 0, 0], [0, 0, 10, 10]])
    got = api.c.get(url(uuid, "partition?batchsize=5&optimized=true")).json()
    assert [(s["MinChunk"], s["MaxChunk"]) for s in got["Subvolumes"]] == [([0, 0, 0], [10, 5, 4])]
    assert got["NumActiveBlocks"] == 2


@MEMORY_ONLY
def test_partition_size_is_bounded(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partition_module, "MAX_SUBVOLUMES", 1000)
    uuid = new_roi(api)
    post_roi(api.c, uuid, [[0, y, 0, 99] for y in range(20)])
    assert api.c.get(url(uuid, "partition?batchsize=1")).status_code == 413
    assert api.c.get(url(uuid, "partition?batchsize=1&optimized=true")).status_code == 413
    assert api.c.get(url(uuid, "partition?batchsize=16")).status_code == 200


# --------------------------------------------------------------------------- Region capability


@MEMORY_ONLY
def test_region_capability_matches_the_spans(api: Api) -> None:
    uuid = new_roi(api, BlockSize="4,4,4")
    spans = random_spans(np.random.default_rng(3), 60)
    post_roi(api.c, uuid, spans)
    blocks = block_set(spans)

    region = capabilities.region_at(bound_roi(api.c, uuid), DATA)
    assert isinstance(region, capabilities.Region)
    assert region.region_block_size() == (4, 4, 4)
    listed = region.region_blocks()
    assert listed.dtype == np.int64 and listed.shape == (len(blocks), 3)
    assert [tuple(b) for b in listed.tolist()] == sorted(blocks, key=lambda b: b[::-1])

    points = np.random.default_rng(4).integers(-30, 30, (5000, 3))
    expected = [(x // 4, y // 4, z // 4) in blocks for x, y, z in points.tolist()]
    assert region.region_contains(points).tolist() == expected
    assert ptquery(api.c, uuid, points[:500].tolist()) == expected[:500]


@MEMORY_ONLY
def test_region_at_names_a_version(api: Api) -> None:
    root = new_roi(api)
    post_roi(api.c, root, [[0, 0, 0, 0]])
    api.commit(root)
    child = api.newversion(root)
    post_roi(api.c, child, [[0, 0, 1, 1]])
    at_child = bound_roi(api.c, child)
    origin, next_block = np.array([[0, 0, 0]]), np.array([[32, 0, 0]])
    here = capabilities.region_at(at_child, DATA)
    assert here.region_contains(origin).tolist() == [False]
    assert here.region_contains(next_block).tolist() == [True]
    there = capabilities.region_at(at_child, f"{DATA},{root}")
    assert there.region_contains(origin).tolist() == [True]
    assert there.region_blocks().tolist() == [[0, 0, 0]]


@MEMORY_ONLY
def test_region_of_many_spans_is_vectorised(api: Api) -> None:
    """10^5 spans and 10^5 points: the lookups are array operations, and agree with a
    set of the blocks."""
    rng = np.random.default_rng(11)
    z, y = np.divmod(np.arange(100_000), 400)
    x0 = rng.integers(-1000, 1000, 100_000)
    spans = np.stack([z // 2, y, x0, x0 + rng.integers(0, 5, 100_000)], axis=1).tolist()
    uuid = new_roi(api, BlockSize="1,1,1")
    post_roi(api.c, uuid, spans)
    roi = bound_roi(api.c, uuid)
    points = np.stack(
        [
            rng.integers(-1000, 1010, 100_000),
            rng.integers(0, 400, 100_000),
            rng.integers(0, 125, 100_000),
        ],
        axis=1,
    )
    inside = roi.region_contains(points)
    assert inside.any()
    rows: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for sz, sy, sx0, sx1 in spans:
        rows.setdefault((sz, sy), []).append((sx0, sx1))
    for i in range(0, 100_000, 97):
        x, y_, z_ = points[i].tolist()
        expected = any(a <= x <= b for a, b in rows.get((z_, y_), []))
        assert inside[i] == expected, points[i]
    assert len(roi.region_blocks()) == len(block_set(spans))
