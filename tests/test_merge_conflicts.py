"""``POST /api/repo/{uuid}/merge?dryrun=true`` and ``mode=strict``: every conflict a merge
would have, three-way against the common ancestor, before anything is written.

The keyed and volume cases run on the local folder and moto S3; labelmap and annotation
conflicts on the in-memory store."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import orjson
import pytest

from app.proto import labelmap_pb2 as pb
from backends import ObjectStore
from tests.conftest import Api

MERGE = {"mergeType": "conflict-free"}


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def raw(api: Api, uuid: str, name: str, offset: str, value: int, dtype: str = "u1") -> None:
    body = np.full(32**3, value, dtype=dtype).tobytes()
    r = api.c.post(f"/api/node/{uuid}/{name}/raw/0_1_2/32_32_32/{offset}", content=body)
    assert r.status_code == 200, r.text


def merge(api: Api, root: str, parents: list[str], query: str = "") -> object:
    return api.c.post(f"/api/repo/{root}/merge{query}", json={**MERGE, "parents": parents})


def diverged(api: Api) -> tuple[str, str, str]:
    """A root with keyvalue ``kv`` and uint8blk ``img``, and two committed branches
    changing them: conflicts on key ``both`` and block (0,0,0); one-side changes, a key
    changed to the same bytes on both sides and a block written alike on both."""
    root = api.new_repo()
    api.new_instance(root, "keyvalue", "kv")
    api.new_instance(root, "uint8blk", "img", BlockSize="32,32,32")
    for key in ("both", "left", "right", "alike", "kept"):
        api.put(root, "kv", key, b"base")
    raw(api, root, "img", "0_0_0", 1)
    raw(api, root, "img", "32_0_0", 1)
    api.commit(root)
    left = api.newversion(root)
    right = api.branch(root, "side")
    for uuid, side in ((left, b"L"), (right, b"R")):
        api.put(uuid, "kv", "both", side)
        api.put(uuid, "kv", "alike", b"same on both")
        api.put(uuid, "kv", "kept", b"base")  # rewritten unchanged: a one-side no-op
        raw(api, uuid, "img", "0_0_0", 2 if uuid == left else 3)
        raw(api, uuid, "img", "32_0_0", 9)  # the same voxels, so the same chunk bytes
    api.put(left, "kv", "left", b"L")
    api.delete(right, "kv", "right")
    raw(api, left, "img", "0_32_0", 4)
    api.commit(left)
    api.commit(right)
    return root, left, right


def listing(store: ObjectStore) -> dict[str, int]:
    return {info.key: info.size for info in store.list("")}


def test_dryrun_reports_both_side_changes_only_and_writes_nothing(
    api: Api, make_store: Callable[[], ObjectStore]
) -> None:
    root, left, right = diverged(api)
    dag = api.c.get(f"/api/repo/{root}/info").json()["DAG"]
    before = listing(make_store())
    r = merge(api, root, [left, right], "?dryrun=true")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "parents": [left, right],
        "bases": [root],
        "count": 2,
        "conflicts": {
            "img": {"typename": "uint8blk", "blocks": [[0, 0, 0]]},
            "kv": {"typename": "keyvalue", "keys": ["both"]},
        },
    }
    assert api.c.get(f"/api/repo/{root}/info").json()["DAG"] == dag
    assert listing(make_store()) == before
    # Parent order and references do not change what conflicts.
    r = merge(api, root, [f"{right[:8]}", left[:8]], "?dryrun=true")
    assert r.json()["conflicts"]["kv"]["keys"] == ["both"]


def test_strict_refuses_any_conflict_and_merges_without(api: Api) -> None:
    root, left, right = diverged(api)
    dag = api.c.get(f"/api/repo/{root}/info").json()["DAG"]
    r = merge(api, root, [left, right], "?mode=strict")
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/plain")
    assert "2 conflicts" in r.text
    assert "img, kv" in r.text
    assert api.c.get(f"/api/repo/{root}/info").json()["DAG"] == dag
    # Settle both conflicts on one side: the strict merge goes through.
    fix = api.newversion(right)
    api.put(fix, "kv", "both", b"L")
    raw(api, fix, "img", "0_0_0", 2)
    api.commit(fix)
    assert merge(api, root, [left, fix], "?dryrun=true").json()["count"] == 0
    r = merge(api, root, [left, fix], "?mode=strict")
    assert r.status_code == 200, r.text
    child = r.json()["child"]
    assert api.get(child, "kv", "left") == b"L"
    assert api.get(child, "kv", "right") is None


def test_default_merge_still_merges_and_conflicts_error_on_read(api: Api) -> None:
    root, left, right = diverged(api)
    child = api.merge(root, [left, right])
    assert api.get(child, "kv", "left") == b"L"
    r = api.c.get(f"/api/node/{child}/kv/key/both")
    assert r.status_code == 400
    assert "conflict" in r.text
    r = api.c.get(f"/api/node/{child}/img/raw/0_1_2/32_32_32/0_0_0")
    assert r.status_code == 400


def test_three_parents_and_no_common_change(api: Api) -> None:
    root, left, right = diverged(api)
    third = api.branch(root, "third")
    api.put(third, "kv", "both", b"T")
    api.put(third, "kv", "solo", b"T")
    api.commit(third)
    r = merge(api, root, [left, right, third], "?dryrun=true")
    assert r.status_code == 200, r.text
    assert r.json()["conflicts"]["kv"]["keys"] == ["both"]
    # A branch and its own descendant: nothing was changed on two sides.
    later = api.newversion(left)
    api.put(later, "kv", "both", b"later")
    api.commit(later)
    r = merge(api, root, [left, later], "?dryrun=true")
    assert r.json() == {"parents": [left, later], "bases": [left], "count": 0, "conflicts": {}}


def test_bad_merge_requests_are_400(api: Api) -> None:
    root, left, right = diverged(api)
    open_node = api.newversion(left)
    for query, parents in (
        ("?dryrun=maybe", [left, right]),
        ("?mode=lenient", [left, right]),
        ("?dryrun=true", [left]),
        ("?dryrun=true", [left, "nosuch"]),
        ("?dryrun=true", [left, open_node]),
        ("?mode=strict", [left, open_node]),
    ):
        r = merge(api, root, parents, query)
        assert r.status_code == 400, (query, parents, r.text)
        assert r.headers["content-type"].startswith("text/plain")


# --- datatypes beyond keys and image blocks (in-memory store) ----------------------------


def test_labelmap_blocks_and_labels(mem: Api) -> None:
    root = mem.new_repo()
    mem.new_instance(root, "labelmap", "seg", BlockSize="32,32,32")
    for i, label in enumerate((1, 2, 3)):
        raw(mem, root, "seg", f"{32 * i}_0_0", label, "<u8")
    mem.commit(root)
    left = mem.newversion(root)
    right = mem.branch(root, "side")
    assert mem.c.post(f"/api/node/{left}/seg/merge", content=b"[1, 2]").status_code == 200
    assert mem.c.post(f"/api/node/{right}/seg/merge", content=b"[1, 3]").status_code == 200
    raw(mem, left, "seg", "0_32_0", 8, "<u8")
    raw(mem, right, "seg", "0_32_0", 9, "<u8")
    mem.commit(left)
    mem.commit(right)
    r = merge(mem, root, [left, right], "?dryrun=true")
    assert r.status_code == 200, r.text
    found = r.json()["conflicts"]["seg"]
    assert found["typename"] == "labelmap"
    assert found["blocks"] == [[0, 1, 0]]
    assert found["labels"] == [1]  # body 1's index differs on both sides


def test_labelmap_mapping_conflicts_per_supervoxel(mem: Api) -> None:
    root = mem.new_repo()
    mem.new_instance(root, "labelmap", "seg", BlockSize="32,32,32")
    for i, label in enumerate((9, 10, 11)):
        raw(mem, root, "seg", f"{32 * i}_0_0", label, "<u8")
    mem.commit(root)
    left = mem.newversion(root)
    right = mem.branch(root, "side")
    for uuid, body in ((left, 7), (right, 8)):
        ops = pb.MappingOps(
            mappings=[
                pb.MappingOp(mapped=body, original=[9]),  # to different bodies: a conflict
                pb.MappingOp(mapped=5, original=[10]),  # the same on both sides: none
            ]
        )
        r = mem.c.post(f"/api/node/{uuid}/seg/mappings", content=ops.SerializeToString())
        assert r.status_code == 200, r.text
    ops = pb.MappingOps(mappings=[pb.MappingOp(mapped=6, original=[11])])  # one side only
    r = mem.c.post(f"/api/node/{left}/seg/mappings", content=ops.SerializeToString())
    assert r.status_code == 200, r.text
    mem.commit(left)
    mem.commit(right)
    found = merge(mem, root, [left, right], "?dryrun=true").json()["conflicts"]
    assert found == {"seg": {"typename": "labelmap", "labels": [9]}}


def test_annotation_blocks_and_labels(mem: Api) -> None:
    root = mem.new_repo()
    mem.new_instance(root, "annotation", "syn")
    note = {"Pos": [1, 2, 3], "Kind": "Note", "Tags": ["t"], "Prop": {}}
    r = mem.c.post(f"/api/node/{root}/syn/elements", content=orjson.dumps([note]))
    assert r.status_code == 200, r.text
    mem.commit(root)
    left = mem.newversion(root)
    right = mem.branch(root, "side")
    for uuid, value in ((left, "L"), (right, "R")):
        edit = {**note, "Prop": {"by": value}}
        r = mem.c.post(f"/api/node/{uuid}/syn/elements", content=orjson.dumps([edit]))
        assert r.status_code == 200, r.text
    mem.commit(left)
    mem.commit(right)
    found = merge(mem, root, [left, right], "?dryrun=true").json()["conflicts"]["syn"]
    assert found["blocks"] == [[0, 0, 0]]
    assert found["keys"] == ["tag/t"]


def test_criss_cross_merges_have_two_bases(api: Api) -> None:
    root = api.new_repo()
    api.new_instance(root, "keyvalue", "kv")
    api.commit(root)
    a = api.newversion(root)
    b = api.branch(root, "b")
    api.put(a, "kv", "from-a", b"a")
    api.put(b, "kv", "from-b", b"b")
    api.commit(a)
    api.commit(b)
    one = api.merge(root, [a, b])
    two = api.merge(root, [b, a])
    api.put(one, "kv", "from-a", b"changed on one side only")
    api.put(one, "kv", "k", b"1")
    api.put(two, "kv", "k", b"2")
    api.commit(one)
    api.commit(two)
    r = merge(api, root, [one, two], "?dryrun=true")
    assert r.status_code == 200, r.text
    assert sorted(r.json()["bases"]) == sorted([a, b])
    assert r.json()["conflicts"] == {"kv": {"typename": "keyvalue", "keys": ["k"]}}


def test_lower_scales_conflict_on_their_own(mem: Api) -> None:
    root = mem.new_repo()
    mem.new_instance(root, "labelmap", "seg", BlockSize="32,32,32", MaxDownresLevel="1")
    raw(mem, root, "seg", "0_0_0", 1, "<u8")
    mem.commit(root)
    left = mem.newversion(root)
    right = mem.branch(root, "side")
    # Different scale-0 blocks under one scale-1 chunk: both sides rewrite that chunk.
    raw(mem, left, "seg", "0_0_0", 2, "<u8")
    raw(mem, right, "seg", "32_0_0", 3, "<u8")
    mem.commit(left)
    mem.commit(right)
    r = merge(mem, root, [left, right], "?dryrun=true")
    assert r.status_code == 200, r.text
    found = r.json()
    assert found["conflicts"]["seg"]["scales"] == {"1": [[0, 0, 0]]}
    assert "blocks" not in found["conflicts"]["seg"]
    assert found["count"] == 1 + len(found["conflicts"]["seg"].get("labels", []))
    assert merge(mem, root, [left, right], "?mode=strict").status_code == 400
