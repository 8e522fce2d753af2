"""``GET /api/repo/{uuid}/diff/{from}/{to}``, ``/api/node/{to}/{name}/diff/{from}`` and
``dvid-cloud diff``: what differs between two versions, per instance.

The keyed and volume cases run on the local folder and moto S3; the per-datatype members
on the in-memory store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from app.cli import main
from app.proto import labelmap_pb2 as pb
from app.server import create_app
from app.settings import Settings
from backends.local import LocalStore
from tests.conftest import Api


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def diff(api: Api, was: str, now: str, root: str | None = None) -> dict:
    r = api.c.get(f"/api/repo/{root or was}/diff/{was}/{now}")
    assert r.status_code == 200, r.text
    return r.json()


def raw(api: Api, uuid: str, name: str, offset: str, value: int, dtype: str = "u1") -> None:
    """One 32³ block of ``value`` at voxel ``offset`` (x_y_z)."""
    body = np.full(32**3, value, dtype=dtype).tobytes()
    r = api.c.post(f"/api/node/{uuid}/{name}/raw/0_1_2/32_32_32/{offset}", content=body)
    assert r.status_code == 200, r.text


def kv_repo(api: Api) -> str:
    root = api.new_repo()
    api.new_instance(root, "keyvalue", "kv")
    for key, value in (("a", b"1"), ("b", b"2"), ("same", b"s")):
        api.put(root, "kv", key, value)
    api.commit(root)
    return root


def test_keys_added_changed_deleted_and_back(api: Api) -> None:
    root = kv_repo(api)
    child = api.newversion(root)
    api.put(child, "kv", "a", b"changed")
    api.delete(child, "kv", "b")
    api.put(child, "kv", "c", b"new")
    api.put(child, "kv", "same", b"s")  # rewritten with the same bytes: no change
    keys = {"added": ["c"], "changed": ["a"], "deleted": ["b"]}
    # The open child's own records are read from a listing (it has no index yet).
    assert diff(api, root, child) == {
        "from": root,
        "to": child,
        "instances": {"kv": {"typename": "keyvalue", "keys": keys}},
    }
    api.commit(child)
    assert diff(api, root, child)["instances"]["kv"]["keys"] == keys
    back = diff(api, child, root, root)["instances"]["kv"]["keys"]
    assert back == {"added": ["b"], "changed": ["a"], "deleted": ["c"]}


def test_identical_versions_leave_every_instance_out(api: Api) -> None:
    root = kv_repo(api)
    api.new_instance(api.newversion(root), "keyvalue", "later")
    leaf = api.c.get(f"/api/repo/{root}/branch-versions/master").json()[0]
    assert diff(api, root, root)["instances"] == {}
    assert diff(api, root, leaf)["instances"] == {}  # a child that wrote nothing
    assert diff(api, leaf, leaf)["instances"] == {}


def test_volume_blocks_from_bitmaps(api: Api) -> None:
    root = api.new_repo()
    api.new_instance(root, "uint8blk", "img", BlockSize="32,32,32")
    raw(api, root, "img", "0_0_0", 1)
    raw(api, root, "img", "32_0_0", 1)
    api.commit(root)
    child = api.newversion(root)
    raw(api, child, "img", "32_0_0", 2)
    raw(api, child, "img", "0_32_-32", 3)
    found = diff(api, root, child)["instances"]["img"]
    # In chunk order: z, then y, then x.
    assert found == {"typename": "uint8blk", "blocks": [[0, 1, -1], [1, 0, 0]]}


def test_volume_blocks_over_merges(api: Api) -> None:
    root = api.new_repo()
    api.new_instance(root, "uint8blk", "img", BlockSize="32,32,32")
    raw(api, root, "img", "0_0_0", 1)
    api.commit(root)
    left = api.newversion(root)
    right = api.branch(root, "side")
    raw(api, left, "img", "0_0_0", 2)
    raw(api, right, "img", "0_0_0", 3)  # written on both paths: a read conflict
    raw(api, right, "img", "32_0_0", 3)
    api.commit(left)
    api.commit(right)
    merged = api.merge(root, [left, right])
    again = api.merge(root, [right, left])
    assert diff(api, left, merged, root)["instances"]["img"]["blocks"] == [[0, 0, 0], [1, 0, 0]]
    assert diff(api, right, merged, root)["instances"]["img"]["blocks"] == [[0, 0, 0]]
    # Two merges of the same parents see the same conflicted chunk: no difference.
    assert diff(api, merged, again, root)["instances"] == {}


def test_diff_across_branches_and_over_a_merge(api: Api) -> None:
    root = kv_repo(api)
    left = api.newversion(root)
    right = api.branch(root, "side")
    api.put(left, "kv", "a", b"left")
    api.put(left, "kv", "l", b"only left")
    api.put(right, "kv", "r", b"only right")
    api.delete(right, "kv", "b")
    api.commit(left)
    api.commit(right)
    across = diff(api, left, right, root)["instances"]["kv"]["keys"]
    assert across == {"added": ["r"], "changed": ["a"], "deleted": ["b", "l"]}
    merged = api.merge(root, [left, right])
    # From one parent to the merge: the other side's changes.
    over = diff(api, left, merged, root)["instances"]["kv"]["keys"]
    assert over == {"added": ["r"], "changed": [], "deleted": ["b"]}
    over = diff(api, right, merged, root)["instances"]["kv"]["keys"]
    assert over == {"added": ["l"], "changed": ["a"], "deleted": []}
    # References resolve as everywhere in the API: a prefix, a branch's leaf.
    assert diff(api, left[:8], f"{root[:8]}:side", root)["instances"]["kv"]["keys"] == across
    assert diff(api, ":side", ":master", root)["instances"]["kv"]["keys"] == over


def test_instance_endpoint_and_references(api: Api) -> None:
    root = kv_repo(api)
    child = api.newversion(root)
    api.put(child, "kv", "z", b"1")
    r = api.c.get(f"/api/node/{child}/kv/diff/{root[:6]}")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "from": root,
        "to": child,
        "instances": {
            "kv": {"typename": "keyvalue", "keys": {"added": ["z"], "changed": [], "deleted": []}}
        },
    }


def test_an_instance_created_later_is_all_added(api: Api) -> None:
    root = kv_repo(api)
    child = api.newversion(root)
    api.new_instance(child, "keyvalue", "late")
    api.put(child, "late", "k", b"v")
    found = diff(api, root, child)["instances"]
    assert found == {
        "late": {"typename": "keyvalue", "keys": {"added": ["k"], "changed": [], "deleted": []}}
    }


def test_unknown_versions_are_400(api: Api) -> None:
    root = kv_repo(api)
    other = api.new_repo()
    for was, now in (("nosuch", root), (root, "nosuch"), (root, other), (root, ":nobranch")):
        r = api.c.get(f"/api/repo/{root}/diff/{was}/{now}")
        assert r.status_code == 400, r.text
        assert r.headers["content-type"].startswith("text/plain")
    r = api.c.get(f"/api/node/{root}/kv/diff/nosuch")
    assert r.status_code == 400
    assert "nosuch" in r.text
    assert api.c.get(f"/api/node/{root}/kv/diff/{other}").status_code == 400


# --- every datatype's members (in-memory store) -----------------------------------------


def test_labelmap_blocks_labels_and_mutations(mem: Api) -> None:
    root = mem.new_repo()
    mem.new_instance(root, "labelmap", "seg", BlockSize="32,32,32")
    raw(mem, root, "seg", "0_0_0", 1, "<u8")
    raw(mem, root, "seg", "32_0_0", 2, "<u8")
    raw(mem, root, "seg", "64_0_0", 3, "<u8")
    mem.commit(root)
    child = mem.newversion(root)
    r = mem.c.post(f"/api/node/{child}/seg/merge", content=b"[1, 2]")
    assert r.status_code == 200, r.text
    raw(mem, child, "seg", "0_32_0", 7, "<u8")
    found = diff(mem, root, child)["instances"]["seg"]
    assert found["typename"] == "labelmap"
    assert found["blocks"] == [[0, 1, 0]]  # a merge rewrites no voxels
    assert found["labels"] == [1, 2, 7]
    assert [m["Action"] for m in found["mutations"]] == ["merge-complete"]
    assert found["mutations"][0]["Target"] == 1


def test_labelmap_labels_whose_mapping_alone_changed(mem: Api) -> None:
    root = mem.new_repo()
    mem.new_instance(root, "labelmap", "seg", BlockSize="32,32,32")
    raw(mem, root, "seg", "0_0_0", 9, "<u8")
    raw(mem, root, "seg", "32_0_0", 11, "<u8")
    mem.commit(root)
    child = mem.newversion(root)
    ops = pb.MappingOps(mappings=[pb.MappingOp(mapped=7, original=[9])])
    r = mem.c.post(f"/api/node/{child}/seg/mappings", content=ops.SerializeToString())
    assert r.status_code == 200, r.text
    found = diff(mem, root, child)["instances"]["seg"]
    assert found == {"typename": "labelmap", "labels": [7, 9]}  # 9 lost its voxels to 7


def test_annotation_elements(mem: Api) -> None:
    root = mem.new_repo()
    mem.new_instance(root, "annotation", "syn")
    a = {"Pos": [1, 2, 3], "Kind": "Note", "Tags": [], "Prop": {}}
    b = {"Pos": [100, 2, 3], "Kind": "Note", "Tags": [], "Prop": {}}
    c = {"Pos": [5, 5, 5], "Kind": "PreSyn", "Tags": [], "Prop": {}}
    post = mem.c.post(f"/api/node/{root}/syn/elements", content=orjson.dumps([a, b]))
    assert post.status_code == 200, post.text
    mem.commit(root)
    child = mem.newversion(root)
    moved = {**a, "Prop": {"checked": "yes"}}
    r = mem.c.post(f"/api/node/{child}/syn/elements", content=orjson.dumps([moved, c]))
    assert r.status_code == 200, r.text
    r = mem.c.delete(f"/api/node/{child}/syn/element/100_2_3")
    assert r.status_code == 200, r.text
    elements = diff(mem, root, child)["instances"]["syn"]["elements"]
    assert [e["Pos"] for e in elements["added"]] == [[5, 5, 5]]
    assert [(e["Pos"], e["Prop"]) for e in elements["changed"]] == [([1, 2, 3], {"checked": "yes"})]
    assert [e["Pos"] for e in elements["deleted"]] == [[100, 2, 3]]


def test_roi_spans(mem: Api) -> None:
    root = mem.new_repo()
    mem.new_instance(root, "roi", "r")
    r = mem.c.post(f"/api/node/{root}/r/roi", content=b"[[0, 0, 0, 5], [1, 0, 0, 0]]")
    assert r.status_code == 200, r.text
    mem.commit(root)
    child = mem.newversion(root)
    r = mem.c.post(f"/api/node/{child}/r/roi", content=b"[[0, 0, 2, 7], [2, 1, 3, 3]]")
    assert r.status_code == 200, r.text
    spans = diff(mem, root, child)["instances"]["r"]["spans"]
    assert spans == {"added": [[0, 0, 6, 7], [2, 1, 3, 3]], "deleted": [[0, 0, 0, 1], [1, 0, 0, 0]]}
    # Over a merge whose parents' ROIs disagree (a read there conflicts): their union.
    mem.commit(child)
    side = mem.branch(root, "side")
    r = mem.c.post(f"/api/node/{side}/r/roi", content=b"[[5, 5, 5, 5]]")
    assert r.status_code == 200, r.text
    mem.commit(side)
    merged = mem.merge(root, [child, side])
    assert mem.c.get(f"/api/node/{merged}/r/roi").status_code == 400
    spans = diff(mem, child, merged, root)["instances"]["r"]["spans"]
    assert spans == {"added": [[5, 5, 5, 5]], "deleted": []}


def test_neuronjson_keys_and_schema(mem: Api) -> None:
    root = mem.new_repo()
    mem.new_instance(root, "neuronjson", "nj")
    for body in (10, 20):
        r = mem.c.post(f"/api/node/{root}/nj/key/{body}?u=me", json={"bodyid": body})
        assert r.status_code == 200, r.text
    mem.commit(root)
    child = mem.newversion(root)
    r = mem.c.post(f"/api/node/{child}/nj/key/10?u=me", json={"bodyid": 10, "status": "x"})
    assert r.status_code == 200, r.text
    assert mem.c.delete(f"/api/node/{child}/nj/key/20?u=me").status_code == 200
    r = mem.c.post(f"/api/node/{child}/nj/key/30?u=me", json={"bodyid": 30})
    assert r.status_code == 200, r.text
    r = mem.c.post(f"/api/node/{child}/nj/schema", content=b'{"type": "object"}')
    assert r.status_code == 200, r.text
    keys = diff(mem, root, child)["instances"]["nj"]["keys"]
    assert keys == {"added": ["30", "schema"], "changed": ["10"], "deleted": ["20"]}


def test_types_without_indexes_are_skipped_not_failed(mem: Api) -> None:
    root = mem.new_repo()
    mem.new_instance(root, "annotation", "syn")
    mem.new_instance(root, "labelsz", "sz")
    mem.new_instance(root, "keyvalue", "kv", versioned="false")
    mem.put(root, "kv", "k", b"v")
    mem.commit(root)
    child = mem.newversion(root)
    mem.put(child, "kv", "k", b"w")  # unversioned: the same data at every version
    answer = diff(mem, root, child)
    assert answer["instances"] == {}
    assert list(answer["skipped"]) == ["sz"]
    r = mem.c.get(f"/api/node/{child}/sz/diff/{root}")  # asked for it alone: a 400
    assert r.status_code == 400, r.text
    assert "labelsz" in r.text
    r = mem.c.get(f"/api/node/{child}/kv/diff/{root}")
    assert r.json() == {"from": root, "to": child, "instances": {}}


# --- the command ------------------------------------------------------------------------


def test_cli_prints_a_summary_and_json(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with TestClient(create_app(Settings(), {"default": LocalStore(store)})) as c:
        api = Api(c)
        root = kv_repo(api)
        child = api.newversion(root)
        api.put(child, "kv", "a", b"x")
        api.put(child, "kv", "n", b"x")
        api.new_instance(child, "uint8blk", "img", BlockSize="32,32,32")
        raw(api, child, "img", "0_0_0", 1)
    result = CliRunner().invoke(main, ["diff", root[:8], child, "--data-dir", str(store)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"diff {root} -> {child}",
        "  img [uint8blk]: 1 blocks",
        "  kv [keyvalue]: keys: 1 added, 1 changed",
    ]
    result = CliRunner().invoke(main, ["diff", root, root, "--data-dir", str(store), "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output) == {"from": root, "to": root, "instances": {}}
    result = CliRunner().invoke(main, ["diff", root, "nosuch", "--data-dir", str(store)])
    assert result.exit_code != 0
    assert "nosuch" in result.output
    only = ["diff", root, child, "--data-dir", str(store), "--json", "--instance"]
    result = CliRunner().invoke(main, [*only, "kv"])
    assert result.exit_code == 0, result.output
    assert list(orjson.loads(result.output)["instances"]) == ["kv"]
    result = CliRunner().invoke(main, [*only, "nosuch"])
    assert result.exit_code != 0
    assert "nosuch" in result.output
