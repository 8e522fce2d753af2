"""annotation over HTTP: DVID's element JSON byte for byte, the box, block, label and tag
reads, deletes and moves that keep relationships consistent, label lists that follow a
synced labelmap's edits at the version edited, and bad input that changes nothing.
(Random edit sequences against a plain model are in test_annotation_oracle.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from app.server import create_app
from app.settings import Settings
from backends.memory import MemoryStore
from tests.conftest import Api
from tests.test_labelmap_edits import BLOCK, SIZE, rles, volume

EMBEDDED = pytest.mark.parametrize("backend", ["memory", "local"], indirect=True)

PRE = {"Pos": [5, 40, 10], "Kind": "PreSyn", "Tags": ["t1"], "Prop": {"z": "9", "conf": "0.9"}}
POST_A = {"Pos": [20, 40, 10], "Kind": "PostSyn", "Tags": ["t1", "t2"], "Prop": {}}
POST_B = {"Pos": [40, 10, 10], "Kind": "PostSyn", "Tags": None, "Prop": None}
NOTE = {"Pos": [60, 60, 60], "Kind": "Note", "Tags": [], "Prop": {"text": "hi"}}


def synapses() -> list[dict]:
    """A T-bar on supervoxel 1 with two partners on supervoxels 2 and 3, and a note on 5."""
    return [
        {
            **PRE,
            "Rels": [
                {"Rel": "PreSynTo", "To": [20, 40, 10]},
                {"Rel": "PreSynTo", "To": [40, 10, 10]},
            ],
        },
        {**POST_A, "Rels": [{"Rel": "PostSynTo", "To": [5, 40, 10]}]},
        {**POST_B, "Rels": [{"Rel": "PostSynTo", "To": [5, 40, 10]}]},
        {**NOTE, "Rels": None},
    ]


def _setup(api: Api) -> tuple[Api, str]:
    """labelmap ``seg`` (test_labelmap_edits' volume) and annotation ``syn`` synced to
    it, at a committed root; an open child holds the synapses."""
    root = api.new_repo()
    api.new_instance(root, "labelmap", "seg", BlockSize=f"{BLOCK},{BLOCK},{BLOCK}")
    api.new_instance(root, "annotation", "syn")
    assert api.c.post(f"/api/node/{root}/syn/sync", json={"sync": "seg"}).status_code == 200
    r = api.c.post(
        f"/api/node/{root}/seg/raw/0_1_2/{SIZE}_{SIZE}_{SIZE}/0_0_0", content=volume().tobytes()
    )
    assert r.status_code == 200, r.text
    api.commit(root)
    child = api.newversion(root)
    post(api.c, child, "elements", synapses())
    return api, child


@pytest.fixture
def syn(api: Api) -> tuple[Api, str]:
    return _setup(api)


@pytest.fixture
def syn_memory() -> Iterator[tuple[Api, str]]:
    with TestClient(create_app(Settings(), {"default": MemoryStore()})) as c:
        yield _setup(Api(c))


def url(uuid: str, path: str, data: str = "syn") -> str:
    return f"/api/node/{uuid}/{data}/{path}"


def get(c: TestClient, uuid: str, path: str) -> object:
    r = c.get(url(uuid, path))
    assert r.status_code == 200, (path, r.text)
    return r.json()


def post(c: TestClient, uuid: str, path: str, body: object = None, data: str = "syn") -> None:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    r = c.post(url(uuid, path, data), content=content)
    assert r.status_code == 200, (path, r.text)


def at(c: TestClient, uuid: str, label: int) -> set[tuple[int, ...]]:
    """The positions ``label/{label}`` lists."""
    listed = get(c, uuid, f"label/{label}")
    assert isinstance(listed, list)
    return {tuple(e["Pos"]) for e in listed}


def everything(c: TestClient, uuid: str) -> dict:
    """Every read an edit may change."""
    labels = {str(n): get(c, uuid, f"label/{n}") for n in range(1, 8)}
    tags = {t: get(c, uuid, f"tag/{t}") for t in ("t1", "t2", "new")}
    return {"all": get(c, uuid, "all-elements"), "labels": labels, "tags": tags}


# --- element JSON and the reads ----------------------------------------------------------


def test_elements_read_back_as_dvid_writes_them(syn) -> None:
    api, uuid = syn
    r = api.c.get(url(uuid, "elements/64_64_20/0_0_0"))
    assert r.headers["content-type"] == "application/json"
    found = sorted(r.json(), key=lambda e: e["Pos"])
    assert [e["Pos"] for e in found] == [[5, 40, 10], [20, 40, 10], [40, 10, 10]]
    # Go's field order, Prop keys sorted, absent fields null, empty ones kept as given.
    assert (
        r.content.count(
            b'{"Pos":[5,40,10],"Kind":"PreSyn","Tags":["t1"],"Prop":{"conf":"0.9","z":"9"},"Rels":['
        )
        == 1
    )
    assert b'"Pos":[40,10,10],"Kind":"PostSyn","Tags":null,"Prop":null,' in r.content
    assert b'"Pos":[20,40,10],"Kind":"PostSyn","Tags":["t1","t2"],"Prop":{},' in r.content
    # The box is half-open; an empty one answers null, as DVID's nil slice marshals.
    assert get(api.c, uuid, "elements/5_40_10/0_0_1") is None
    assert [e["Pos"] for e in get(api.c, uuid, "elements/6_41_11/0_0_0")] == [[5, 40, 10]]
    assert api.c.get(url(uuid, "elements/1_1_1/0_0_0")).content == b"null"


@EMBEDDED
def test_blocks_and_all_elements_answer_whole_blocks(syn) -> None:
    api, uuid = syn
    blocks = get(api.c, uuid, "blocks/10_10_10/0_30_0")
    # Block (0,1,0) holds PRE and POST_A; the box meets only that block.
    assert set(blocks) == {"0,1,0"}
    assert sorted(e["Pos"] for e in blocks["0,1,0"]) == [[5, 40, 10], [20, 40, 10]]
    every = get(api.c, uuid, "all-elements")
    assert set(every) == {"0,1,0", "1,0,0", "1,1,1"}
    # A box of thousands of blocks lists which exist rather than probing each.
    assert get(api.c, uuid, "blocks/2048_2048_64/0_0_0") == every
    assert len(get(api.c, uuid, "elements/2048_2048_64/0_0_0")) == 4
    assert get(api.c, uuid, "scan") == {"num kv pairs": 3, "num empty blocks": 0}


@EMBEDDED
def test_label_and_tag_lists_with_and_without_relationships(syn) -> None:
    api, uuid = syn
    assert get(api.c, uuid, "label/1") == [PRE]  # without Rels, as DVID's ElementNR
    assert at(api.c, uuid, 2) == {(20, 40, 10)} and at(api.c, uuid, 3) == {(40, 10, 10)}
    assert at(api.c, uuid, 5) == {(60, 60, 60)} and get(api.c, uuid, "label/4") == []
    full = get(api.c, uuid, "label/2?relationships=true")
    assert full == [{**POST_A, "Rels": [{"Rel": "PostSynTo", "To": [5, 40, 10]}]}]
    verbose = get(api.c, uuid, "label/2?relationships=verbose")
    partner = {
        "Rel": "PostSynTo",
        "To": [5, 40, 10],
        "Kind": "PreSyn",
        "Tags": ["t1"],
        "Prop": PRE["Prop"],
    }
    assert verbose == [{**POST_A, "Rels": [partner]}]
    assert {tuple(e["Pos"]) for e in get(api.c, uuid, "tag/t1")} == {(5, 40, 10), (20, 40, 10)}
    assert get(api.c, uuid, "tag/t2") == [POST_A] and get(api.c, uuid, "tag/none") == []


@EMBEDDED
def test_reposting_an_element_replaces_it_everywhere(syn) -> None:
    api, uuid = syn
    post(api.c, uuid, "elements", [{**POST_A, "Kind": "Gap", "Tags": ["new"], "Rels": []}])
    assert get(api.c, uuid, "tag/t2") == [] and [e["Pos"] for e in get(api.c, uuid, "tag/new")] == [
        [20, 40, 10]
    ]
    assert get(api.c, uuid, "label/2") == [{**POST_A, "Kind": "Gap", "Tags": ["new"]}]
    assert len(get(api.c, uuid, "elements/64_64_64/0_0_0")) == 4


# --- deletes and moves -------------------------------------------------------------------


@EMBEDDED
def test_delete_drops_the_element_and_every_relationship_to_it(syn) -> None:
    api, uuid = syn
    r = api.c.delete(url(uuid, "element/5_40_10"))
    assert r.status_code == 200, r.text
    found = {tuple(e["Pos"]): e for e in get(api.c, uuid, "elements/64_64_64/0_0_0")}
    assert (5, 40, 10) not in found
    assert found[(20, 40, 10)]["Rels"] == [] and found[(40, 10, 10)]["Rels"] == []
    assert get(api.c, uuid, "label/1") == [] and [e["Pos"] for e in get(api.c, uuid, "tag/t1")] == [
        [20, 40, 10]
    ]
    again = api.c.delete(url(uuid, "element/5_40_10"))
    assert again.status_code == 400 and "Did not find element (5,40,10)" in again.text


@EMBEDDED
def test_move_keeps_the_element_and_repoints_its_partners(syn) -> None:
    api, uuid = syn
    r = api.c.post(url(uuid, "move/5_40_10/25_41_12"))  # onto supervoxel 2, another block
    assert r.status_code == 200, r.text
    found = {tuple(e["Pos"]): e for e in get(api.c, uuid, "elements/64_64_64/0_0_0")}
    assert (5, 40, 10) not in found
    moved = found[(25, 41, 12)]
    assert moved["Kind"] == "PreSyn" and moved["Prop"] == PRE["Prop"] and len(moved["Rels"]) == 2
    assert found[(20, 40, 10)]["Rels"] == [{"Rel": "PostSynTo", "To": [25, 41, 12]}]
    assert found[(40, 10, 10)]["Rels"] == [{"Rel": "PostSynTo", "To": [25, 41, 12]}]
    assert get(api.c, uuid, "label/1") == [] and at(api.c, uuid, 2) == {(20, 40, 10), (25, 41, 12)}
    assert (25, 41, 12) in {tuple(e["Pos"]) for e in get(api.c, uuid, "tag/t1")}
    missing = api.c.post(url(uuid, "move/5_40_10/1_1_1"))
    assert missing.status_code == 400 and "Did not find moved element (5,40,10)" in missing.text


# --- following the labelmap --------------------------------------------------------------


def test_label_lists_follow_merge_cleave_and_renumber(syn) -> None:
    api, uuid = syn
    post(api.c, uuid, "merge", [1, 2, 3], data="seg")
    assert at(api.c, uuid, 1) == {(5, 40, 10), (20, 40, 10), (40, 10, 10)}
    assert get(api.c, uuid, "label/2") == [] and get(api.c, uuid, "label/3") == []
    r = api.c.post(url(uuid, "cleave/1", "seg"), content=b"[3]")
    assert r.status_code == 200, r.text
    cleaved = r.json()["CleavedLabel"]
    assert at(api.c, uuid, 1) == {(5, 40, 10), (20, 40, 10)} and at(api.c, uuid, cleaved) == {
        (40, 10, 10)
    }
    post(api.c, uuid, "renumber", [1000, 1], data="seg")
    assert get(api.c, uuid, "label/1") == [] and at(api.c, uuid, 1000) == {
        (5, 40, 10),
        (20, 40, 10),
    }


@EMBEDDED
def test_label_lists_follow_voxel_writes_and_splits(syn) -> None:
    api, uuid = syn
    # Overwrite the block holding POST_B's voxel with supervoxel 5.
    patch = np.full((BLOCK, BLOCK, BLOCK), 5, np.uint64)
    r = api.c.post(
        url(uuid, f"raw/0_1_2/{BLOCK}_{BLOCK}_{BLOCK}/32_0_0", "seg"), content=patch.tobytes()
    )
    assert r.status_code == 200, r.text
    assert get(api.c, uuid, "label/3") == [] and at(api.c, uuid, 5) == {(40, 10, 10), (60, 60, 60)}
    # split: carve the z>=32 half of body 5 (the note) into a new body.
    mask = np.zeros((SIZE, SIZE, SIZE), bool)
    mask[32:, 32:, 48:] = True
    r = api.c.post(url(uuid, "split/5", "seg"), content=rles(mask & (volume() == 5)))
    assert r.status_code == 200, r.text
    new = r.json()["label"]
    assert at(api.c, uuid, 5) == {(40, 10, 10)} and at(api.c, uuid, new) == {(60, 60, 60)}
    # split-supervoxel keeps bodies: the lists do not change.
    mask = np.zeros((SIZE, SIZE, SIZE), bool)
    mask[:, 32:, :8] = True
    r = api.c.post(url(uuid, "split-supervoxel/1", "seg"), content=rles(mask & (volume() == 1)))
    assert r.status_code == 200, r.text
    assert at(api.c, uuid, 1) == {(5, 40, 10)}
    post(api.c, uuid, "merge", [1, 2], data="seg")  # still found by supervoxel after the split
    assert at(api.c, uuid, 1) == {(5, 40, 10), (20, 40, 10)}


def test_edits_never_reach_other_versions(syn) -> None:
    api, uuid = syn
    api.commit(uuid)
    left, right = api.newversion(uuid), api.branch(uuid, "other")
    before = everything(api.c, uuid)
    post(api.c, left, "merge", [1, 2], data="seg")
    post(api.c, left, "elements", [{**NOTE, "Pos": [1, 60, 60]}])
    assert api.c.delete(url(left, "element/40_10_10")).status_code == 200
    assert at(api.c, left, 1) == {(5, 40, 10), (20, 40, 10), (1, 60, 60)}
    assert everything(api.c, uuid) == before and everything(api.c, right) == before
    refused = api.c.post(url(uuid, "elements"), content=orjson.dumps([NOTE]))
    assert refused.status_code == 400 and "locked" in refused.text
    assert api.c.delete(url(uuid, "element/5_40_10")).status_code == 400
    assert everything(api.c, uuid) == before


# --- bulk paths --------------------------------------------------------------------------


@EMBEDDED
def test_posted_blocks_get_lists_only_after_reload(syn) -> None:
    api, uuid = syn
    block = {"0,0,0": [{**NOTE, "Pos": [1, 1, 10], "Tags": ["new"], "Rels": None}]}
    post(api.c, uuid, "blocks", block)
    assert get(api.c, uuid, "blocks/1_1_1/1_1_10") == block
    assert get(api.c, uuid, "tag/new") == [] and at(api.c, uuid, 1) == {(5, 40, 10)}
    post(api.c, uuid, "reload")
    assert [e["Pos"] for e in get(api.c, uuid, "tag/new")] == [[1, 1, 10]]
    assert at(api.c, uuid, 1) == {(5, 40, 10), (1, 1, 10)}
    listed = everything(api.c, uuid)
    post(api.c, uuid, "reload")  # idempotent
    assert everything(api.c, uuid) == listed


@EMBEDDED
def test_posted_labels_replace_label_lists(syn) -> None:
    api, uuid = syn
    elements = [{"Pos": [1, 2, 3], "Kind": "Note", "Tags": None, "Prop": None}]
    post(api.c, uuid, "labels", {"2": orjson.dumps(elements).decode(), "0": "[]"})
    assert get(api.c, uuid, "label/2") == elements


def test_relationships_to_absent_elements_are_kept_as_dvid_keeps_them(syn_memory) -> None:
    api, uuid = syn_memory
    dangling = {**NOTE, "Pos": [2, 2, 10], "Rels": [{"Rel": "GroupedWith", "To": [9, 9, 9]}]}
    post(api.c, uuid, "elements", [dangling])
    assert get(api.c, uuid, "elements/1_1_1/2_2_10") == [dangling]


def test_without_a_sync_there_are_no_label_lists() -> None:
    with TestClient(create_app(Settings(), {"default": MemoryStore()})) as c:
        api = Api(c)
        root = api.new_repo()
        api.new_instance(root, "annotation", "syn")
        post(c, root, "elements", [PRE])
        assert get(c, root, "label/1") == [] and get(c, root, "tag/t1") == [PRE]
        # 64³ blocks without a segmentation to take the size from.
        assert set(get(c, root, "all-elements")) == {"0,0,0"}
        # A segmentation of another block size would hide them: refused, as DVID advises.
        api.new_instance(root, "labelmap", "small", BlockSize="32,32,32")
        api.new_instance(root, "labelmap", "large", BlockSize="64,64,64")
        r = c.post(url(root, "sync"), json={"sync": "small"})
        assert r.status_code == 400 and "sync before posting" in r.text
        assert c.post(url(root, "sync"), json={"sync": "large"}).status_code == 200
        assert get(c, root, "elements/64_64_64/0_0_0") == [{**PRE, "Rels": None}]


# --- bad input ---------------------------------------------------------------------------

BAD_POSTS = [
    ("elements", b"[{"),
    ("elements", b'{"Pos":[1,2,3]}'),
    ("elements", b"[1]"),
    ("elements", b'[{"Pos":[1,2],"Kind":"Note"}]'),
    ("elements", b'[{"Pos":[1,2,3,4],"Kind":"Note"}]'),
    ("elements", b'[{"Pos":[1.5,2,3],"Kind":"Note"}]'),
    ("elements", b'[{"Pos":["1",2,3],"Kind":"Note"}]'),
    ("elements", b'[{"Pos":[true,2,3],"Kind":"Note"}]'),
    ("elements", b'[{"Pos":[1,2,4294967296],"Kind":"Note"}]'),
    ("elements", b'[{"Kind":"Note"}]'),
    ("elements", b'[{"Pos":[1,2,3],"Kind":"Synapse"}]'),
    ("elements", b'[{"Pos":[1,2,3],"Kind":"Note","Tags":"a"}]'),
    ("elements", b'[{"Pos":[1,2,3],"Kind":"Note","Prop":{"a":1}}]'),
    ("elements", b'[{"Pos":[1,2,3],"Kind":"Note","Rels":[{"Rel":"Likes","To":[1,1,1]}]}]'),
    ("elements", b'[{"Pos":[1,2,3],"Kind":"Note","Rels":[{"Rel":"PreSynTo","To":[1,1]}]}]'),
    ("elements", b'[{"Pos":[1,2,3],"Kind":"Note"},{"Pos":[1,2],"Kind":"Note"}]'),
    ("blocks", b'{"a,b,c":[]}'),
    ("blocks", b'{"0,0,0":[{"Pos":[100,0,0],"Kind":"Note"}]}'),
    ("blocks", b"[]"),
    ("labels", b'{"x":"[]"}'),
    ("labels", b'{"5":"[{"}'),
    ("labels", b'{"5":[]}'),
    ("move/5_40_10/1_2", b""),
    ("move/1_1_1/2_2_2", b""),
    ("move/5_40_10/20_40_10", b""),
    ("sync", b'{"sync":"nosuch"}'),
    ("sync", b'{"sync":"syn"}'),
]


@pytest.mark.parametrize(("path", "body"), BAD_POSTS)
def test_bad_posts_get_400_and_change_nothing(syn_memory, path: str, body: bytes) -> None:
    api, uuid = syn_memory
    before = everything(api.c, uuid)
    r = api.c.post(url(uuid, path), content=body)
    assert r.status_code == 400, (path, body, r.status_code, r.text)
    assert r.headers["content-type"].startswith("text/plain") and r.text.strip()
    assert everything(api.c, uuid) == before


@pytest.mark.parametrize(
    "path",
    [
        "label/0",
        "label/x",
        "label/18446744073709551616",
        "elements/0_1_1/0_0_0",
        "elements/1_1/0_0_0",
        "blocks/1_1_1/a_0_0",
        "roi/nosuch",
        "roi/a,b,c",
    ],
)
def test_bad_reads_get_400(syn_memory, path: str) -> None:
    api, uuid = syn_memory
    r = api.c.get(url(uuid, path))
    assert r.status_code == 400, (path, r.status_code, r.text)


@pytest.mark.parametrize("path", ["element/1_2", "element/9_9_9"])
def test_bad_deletes_get_400_and_change_nothing(syn_memory, path: str) -> None:
    api, uuid = syn_memory
    before = everything(api.c, uuid)
    assert api.c.delete(url(uuid, path)).status_code == 400
    assert everything(api.c, uuid) == before


@EMBEDDED
def test_roi_query_returns_the_elements_of_covered_blocks(syn) -> None:
    api, uuid = syn
    api.new_instance(uuid, "roi", "region")
    api.new_instance(uuid, "roi", "coarse", BlockSize="64,64,64")
    # Blocks (0,1,0) (PRE, POST_A) and (1,1,1) (NOTE); spans are [z, y, x0, x1].
    post(api.c, uuid, "roi", [[0, 1, 0, 0], [1, 1, 1, 1]], data="region")
    found = get(api.c, uuid, "roi/region")
    assert sorted(e["Pos"] for e in found) == [[5, 40, 10], [20, 40, 10], [60, 60, 60]]
    assert {tuple(e["Pos"]): e for e in found}[(5, 40, 10)] == synapses()[0]  # with Rels
    api.commit(uuid)
    child = api.newversion(uuid)
    post(api.c, child, "roi", [[0, 0, 1, 1]], data="region")
    assert [e["Pos"] for e in get(api.c, child, "roi/region")] == [[40, 10, 10]]
    assert len(get(api.c, child, f"roi/region,{uuid}")) == 3  # the ROI as of that version
    r = api.c.get(url(child, "roi/coarse"))
    assert r.status_code == 400 and "same block size" in r.text
