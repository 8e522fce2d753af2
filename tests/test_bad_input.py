"""Bad numbers in requests — labels, coordinates, sizes, block coordinates, counts — answer
DVID's 400 with a plain-text message naming the problem, never 500, and leave the repo
readable (the instance's info and ``/api/repos/info`` still answer 200).

Labels must be uint64 (and not 0 where DVID refuses the background), voxel coordinates
inside the ±2^30 the chunk arrays address, block coordinates within ±2^20, counts of new
labels must keep the label counter at or below 2^48 (the bound of ``POST maxlabel``).
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.datatypes.labelmap import codecs
from app.server import create_app
from app.settings import Settings
from backends.memory import MemoryStore
from tests.conftest import Api

#: Past uint64 (2^70), and the first integer past it (2^64).
HUGE = str(2**70)
U64 = str(2**64)
#: A voxel coordinate inside the arrays whose 64-voxel block lies past ±2^20 blocks.
FAR = str(2**30 - 1)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """One in-process server on a memory store for the module (conftest's ``client``, built
    once: these are request-parsing tests); each test makes its own repo. Server errors
    come back as 500 responses, not exceptions."""
    client = TestClient(
        create_app(Settings(), {"default": MemoryStore()}), raise_server_exceptions=False
    )
    yield client
    client.close()


@pytest.fixture
def repo(api: Api) -> tuple[TestClient, str]:
    """A repo with a labelmap ``segmentation`` (labels 1 and 2 in 64³ voxels), a uint8blk
    ``grayscale`` (one 32³ block) and a keyvalue ``kv``."""
    uuid = api.new_repo()
    api.new_instance(uuid, "labelmap", "segmentation")
    api.new_instance(uuid, "uint8blk", "grayscale")
    api.new_instance(uuid, "keyvalue", "kv")
    labels = np.ones((64, 64, 64), dtype="<u8")
    labels[:, :, 32:] = 2
    r = api.c.post(
        f"/api/node/{uuid}/segmentation/raw/0_1_2/64_64_64/0_0_0", content=labels.tobytes()
    )
    assert r.status_code == 200, r.text
    gray = np.arange(32**3, dtype=np.uint8).tobytes()
    r = api.c.post(f"/api/node/{uuid}/grayscale/raw/0_1_2/32_32_32/0_0_0", content=gray)
    assert r.status_code == 200, r.text
    return api.c, uuid


def block_stream(coord: tuple[int, int, int]) -> bytes:
    """One solid 64³ label block at block ``coord``, as POST blocks takes it."""
    payload = gzip.compress(codecs.encode_block(np.full((64, 64, 64), 7, np.uint64)))
    return struct.pack("<iiii", *coord, len(payload)) + payload


S = "segmentation"
G = "grayscale"

#: (method, path under /api/node/<uuid>/, body); each answers 400.
CASES = [
    # 1. label counts past the counter's bound
    ("POST", f"{S}/nextlabel/1180591620717411303424", None),
    ("POST", f"{S}/nextlabel/{2**48}", None),
    ("POST", f"{S}/nextlabel/{U64}", None),
    ("POST", f"{S}/nextlabel/0", None),
    ("POST", f"{S}/maxlabel/{HUGE}", None),
    ("POST", f"{S}/maxlabel/{2**48 + 1}", None),
    ("POST", f"{S}/maxlabel/0", None),
    # 2. labels beyond uint64 (or negative, or the background) in a path or query
    ("GET", f"{S}/size/1180591620717411303424?supervoxels=true", None),
    ("GET", f"{S}/size/{HUGE}", None),
    ("GET", f"{S}/size/{U64}", None),
    ("GET", f"{S}/size/-1", None),
    ("GET", f"{S}/size/0", None),
    ("GET", f"{S}/supervoxels/{HUGE}", None),
    ("GET", f"{S}/supervoxel-sizes/{HUGE}", None),
    ("GET", f"{S}/sparsevol-size/{HUGE}?supervoxels=true", None),
    ("GET", f"{S}/sparsevol-coarse/{HUGE}", None),
    ("GET", f"{S}/sparsevol/{HUGE}", None),
    ("GET", f"{S}/sparsevol/{U64}?supervoxels=true", None),
    ("GET", f"{S}/sparsevol/0", None),
    ("HEAD", f"{S}/sparsevol/{HUGE}", None),
    ("GET", f"{S}/sparsevols-coarse/0/{HUGE}", None),
    ("GET", f"{S}/sparsevols-coarse/-5/10", None),
    ("GET", f"{S}/index/{U64}", None),
    ("POST", f"{S}/index/{HUGE}", b""),
    ("GET", f"{S}/listlabels?start={HUGE}", None),
    ("GET", f"{S}/listlabels?start=-1", None),
    # 3. sparsevol bounds
    ("GET", f"{S}/sparsevol/1?minx=abc", None),
    ("GET", f"{S}/sparsevol/1?minx=1.5", None),
    ("GET", f"{S}/sparsevol/1?maxz=", None),
    ("GET", f"{S}/sparsevol/1?miny={HUGE}", None),
    ("GET", f"{S}/sparsevol/1?maxx=-{HUGE}", None),
    ("HEAD", f"{S}/sparsevol/1?minx=abc", None),
    ("GET", f"{S}/sparsevol-by-point/1_1_1?maxy=abc", None),
    # 4. block coordinates
    ("GET", f"{S}/specificblocks?blocks=99999999999999999999,0,0", None),
    ("GET", f"{G}/specificblocks?blocks=99999999999999999999,0,0", None),
    ("GET", f"{S}/specificblocks?blocks=-1048576,0,0", None),
    ("GET", f"{G}/specificblocks?blocks=0,1048576,0", None),
    ("GET", f"{S}/specificblocks?blocks=1.5,0,0", None),
    ("GET", f"{G}/specificblocks?blocks=1,0", None),
    ("GET", f"{G}/blocks/0_0_0/{HUGE}", None),
    ("GET", f"{G}/blocks/0_0_0/0", None),
    ("GET", f"{G}/blocks/{HUGE}_0_0/1", None),
    ("GET", f"{G}/blocks/-1048576_0_0/1", None),
    ("POST", f"{G}/blocks/1048575_0_0/2", bytes(2 * 32**3)),
    ("POST", f"{S}/blocks", block_stream((-(2**20), 0, 0))),
    ("POST", f"{S}/blocks", block_stream((2**31 - 1, 0, 0))),
    ("POST", f"{S}/ingest-supervoxels", block_stream((-(2**31), 0, 0))),
    # 5. points: integers within the coordinate range
    ("GET", f"{S}/labels", b"[[1e30,0,0]]"),
    ("GET", f"{S}/labels", b"[[18446744073709551616,0,0]]"),
    ("POST", f"{S}/labels", b"[[2000000000,0,0]]"),
    ("GET", f"{S}/labels", b"[[1.5,0,0]]"),
    ("GET", f"{S}/labels", b'[["1",0,0]]'),
    ("GET", f"{S}/labels", b"[[true,0,0]]"),
    ("GET", f"{S}/labels", b"[[1,2]]"),
    ("GET", f"{S}/labels", f"[[{FAR},0,0]]".encode()),
    ("GET", f"{S}/label/{FAR}_0_0", None),
    ("GET", f"{S}/label/0_0_{U64}", None),
    ("GET", f"{S}/sparsevol-by-point/-{FAR}_0_0", None),
    # labels in JSON bodies
    ("GET", f"{S}/sizes", f"[{HUGE}]".encode()),
    ("GET", f"{S}/sizes", b"[true]"),
    ("GET", f"{S}/sizes", b"[-1]"),
    ("GET", f"{S}/indices", f"[{U64}]".encode()),
    ("GET", f"{S}/indices", b"[1.0]"),
    ("GET", f"{S}/mapping", f"[{U64}]".encode()),
    ("GET", f"{S}/mapping", b'["1"]'),
    # voxel boxes whose blocks lie past ±2^20 blocks, offsets and sizes past ±2^30
    ("GET", f"{S}/raw/0_1_2/64_64_64/-67108864_0_0", None),
    ("POST", f"{S}/raw/0_1_2/64_64_64/-67108864_0_0", bytes(8 * 64**3)),
    ("GET", f"{S}/raw/0_1_2/64_64_64/{HUGE}_0_0", None),
    ("GET", f"{S}/raw/0_1_2/{HUGE}_1_1/0_0_0", None),
    ("GET", f"{G}/raw/xy/32_32/33554432_0_0", None),
    ("GET", f"{G}/subvolblocks/32_32_32/{HUGE}_0_0", None),
    # arbitrary slices: finite points inside the volume, a finite positive resolution
    ("GET", f"{G}/arb/0_0_0/inf_0_0/0_10_0/1", None),
    ("GET", f"{G}/arb/0_0_0/nan_0_0/0_10_0/1", None),
    ("GET", f"{G}/arb/0_0_0/10_0_0/0_10_0/nan", None),
    ("GET", f"{G}/arb/0_0_0/10_0_0/0_10_0/inf", None),
    ("GET", f"{G}/arb/1e20_0_0/1e20_0_0/1e20_0_0/1", None),
    # extents: integer coordinates inside the volume
    ("POST", f"{G}/extents", b'{"MinPoint":[0,0,0],"MaxPoint":[18446744073709551615,0,0]}'),
    ("POST", f"{S}/extents", b'{"MinPoint":[-9223372036854775808,0,0],"MaxPoint":[1,1,1]}'),
    ("POST", f"{S}/extents", b'{"MinPoint":[true,0,0],"MaxPoint":[1,1,1]}'),
    ("POST", f"{G}/resolution", b"[true,1,1]"),
]


def _case_id(method: str, path: str, body: bytes | None) -> str:
    shown = f" {body.decode()}" if body and len(body) < 80 and body.isascii() else ""
    return f"{method} {path}{shown}"[:100]


@pytest.mark.parametrize(("method", "path", "body"), CASES, ids=[_case_id(*case) for case in CASES])
def test_bad_input_answers_400(
    repo: tuple[TestClient, str], method: str, path: str, body: bytes | None
) -> None:
    client, uuid = repo
    r = client.request(method, f"/api/node/{uuid}/{path}", content=body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("text/plain")
    if method != "HEAD":
        assert r.text.strip(), "a 400 names the problem"
    for after in (f"/api/node/{uuid}/{S}/info", f"/api/node/{uuid}/{G}/info", "/api/repos/info"):
        assert client.get(after).status_code == 200, after
    assert client.get(f"/api/node/{uuid}/{S}/nextlabel").status_code == 200


def test_refused_nextlabel_stores_nothing(repo: tuple[TestClient, str]) -> None:
    client, uuid = repo
    base = f"/api/node/{uuid}/{S}"
    before = client.get(f"{base}/nextlabel").json()["nextlabel"]
    assert client.post(f"{base}/nextlabel/{2**70}").status_code == 400
    assert client.get(f"{base}/nextlabel").json()["nextlabel"] == before
    r = client.post(f"{base}/nextlabel/1")
    assert r.status_code == 200, r.text
    assert r.json() == {"start": before, "end": before}
    # Up to the bound is fine; one more is not.
    r = client.post(f"{base}/nextlabel/{2**48 - before}")
    assert r.status_code == 200, r.text
    assert r.json()["end"] == 2**48
    assert client.post(f"{base}/nextlabel/1").status_code == 400
    assert client.get(f"{base}/info").json()["Extended"]["MaxRepoLabel"] == 2**48


def test_edges_of_the_ranges_are_accepted(repo: tuple[TestClient, str]) -> None:
    """The largest label, block and coordinate each range allows still answer (not 400)."""
    client, uuid = repo
    base = f"/api/node/{uuid}"
    assert client.get(f"{base}/{S}/size/{2**64 - 1}").status_code == 404
    assert client.request("GET", f"{base}/{S}/mapping", content=f"[{2**64 - 1}, 0]").json() == [
        0,
        0,
    ]
    assert client.get(f"{base}/{S}/specificblocks?blocks=1048575,-1048575,0").status_code == 200
    assert client.get(f"{base}/{G}/blocks/1048575_0_0/1").status_code == 200
    r = client.get(f"{base}/{S}/sparsevol/1?minx=-{2**30 - 1}&maxx={2**30 - 1}&maxz=10")
    assert r.status_code == 200, r.text
    r = client.request("GET", f"{base}/{S}/labels", content=b"[[1,1,1],[40,1,1],[-5,0,0]]")
    assert r.json() == [1, 2, 0]
    r = client.post(
        f"{base}/{G}/extents", json={"MinPoint": [0, 0, 0], "MaxPoint": [2**30 - 1, 31, 31]}
    )
    assert r.status_code == 200, r.text
    assert client.get(f"{base}/{G}/metadata").status_code == 200


def test_writing_the_largest_label_keeps_info_readable(repo: tuple[TestClient, str]) -> None:
    client, uuid = repo
    top = np.full((64, 64, 64), 2**64 - 1, dtype="<u8").tobytes()
    r = client.post(f"/api/node/{uuid}/{S}/raw/0_1_2/64_64_64/64_0_0", content=top)
    assert r.status_code == 200, r.text
    assert client.post(f"/api/node/{uuid}/{S}/nextlabel/1").status_code == 400
    assert client.get(f"/api/node/{uuid}/{S}/info").status_code == 200
    assert client.get("/api/repos/info").status_code == 200


#: JSON nested far deeper than any request needs: Python's decoder would recurse into it,
#: so the server refuses such bodies with 400 before decoding them.
DEEP_JSON = {
    "lists": b"[" * 100_000 + b"]" * 100_000,
    "objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
}


@pytest.mark.parametrize("body", list(DEEP_JSON.values()), ids=list(DEEP_JSON))
def test_deeply_nested_json_is_400(repo: tuple[TestClient, str], body: bytes) -> None:
    client, uuid = repo
    for path in (
        "/api/repos",
        f"/api/repo/{uuid}/instance",
        f"/api/node/{uuid}/note",
        f"/api/node/{uuid}/commit",
        f"/api/node/{uuid}/{S}/merge",
        f"/api/node/{uuid}/kv/tags",
    ):
        r = client.post(path, content=body)
        assert r.status_code == 400 and "depth" in r.text, (path, r.status_code, r.text[:200])
    assert client.get(f"/api/node/{uuid}/status").json() == {"Locked": False}
    assert client.get("/api/repos/info").status_code == 200


def test_huge_requested_volumes_are_413(repo: tuple[TestClient, str]) -> None:
    """A read or write box past the voxel bound is refused before anything is allocated."""
    client, uuid = repo
    huge = "raw/0_1_2/1000000_1000000_1000000/0_0_0"
    for name in (S, G):
        assert client.get(f"/api/node/{uuid}/{name}/{huge}").status_code == 413
        assert client.post(f"/api/node/{uuid}/{name}/{huge}", content=b"x").status_code == 413
    assert client.get(f"/api/node/{uuid}/{G}/info").status_code == 200
