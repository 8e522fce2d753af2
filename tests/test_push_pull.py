"""dvid-cloud push and pull (issue 18): versions copied between folders, buckets and
servers, read back on the destination as neuroglancer and DVID clients read them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.server import create_app
from app.settings import Settings
from app.transfer import engine
from app.transfer.cli import open_end, transfer
from app.transfer.layout import Kind, classify
from app.transfer.sides import StoreSide
from backends import StoreError
from backends.local import LocalStore
from backends.memory import MemoryStore
from tests.cli_support import invoke
from tests.dvid_process import DvidServer
from tests.fixtures_stores import (  # noqa: F401 - fixtures
    isolated_server_env,
    make_s3_store,
    s3_endpoint,
    s3_env,
)
from tests.test_auth import ADMIN_TOKEN, auth_settings, bearer, make_token, new_rsa_key

SIZE = 64
BLOCK = "32,32,32"
KEYS = ["a", "b", "c"]
BOX = f"raw/0_1_2/{SIZE}_{SIZE}_{SIZE}/0_0_0"


class Client:
    """DVID calls on a TestClient or an httpx client; each asserts success."""

    def __init__(self, c: Any) -> None:
        self.c = c

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        r = self.c.request(method, path, **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r

    def child(self, uuid: str) -> str:
        return str(self.ok("POST", f"/api/node/{uuid}/newversion", json={}).json()["child"])

    def commit(self, uuid: str) -> None:
        self.ok("POST", f"/api/node/{uuid}/commit", json={})


def populate(c: Client) -> tuple[str, str]:
    """A root with a keyvalue, a uint8blk and a labelmap, and a committed child that
    changed one block of each volume and some keys."""
    rng = np.random.default_rng(7)
    root = c.ok("POST", "/api/repos", json={"alias": "pp"}).json()["root"]
    for typename, name in (("keyvalue", "kv"), ("uint8blk", "grey"), ("labelmap", "seg")):
        body = {"typename": typename, "dataname": name}
        if typename != "keyvalue":
            body["BlockSize"] = BLOCK
        c.ok("POST", f"/api/repo/{root}/instance", json=body)
    grey = rng.integers(0, 255, (SIZE,) * 3, dtype=np.uint8)
    seg = (np.arange(SIZE**3, dtype=np.uint64).reshape((SIZE,) * 3) // 30000) + 1
    c.ok("POST", f"/api/node/{root}/grey/{BOX}", content=grey.tobytes())
    c.ok("POST", f"/api/node/{root}/seg/{BOX}", content=seg.tobytes())
    for k in KEYS:
        c.ok("POST", f"/api/node/{root}/kv/key/{k}", content=f"root-{k}".encode())
    c.commit(root)
    child = c.child(root)
    patch = rng.integers(0, 255, (16, 16, 16), dtype=np.uint8)
    c.ok("POST", f"/api/node/{child}/grey/raw/0_1_2/16_16_16/40_8_0", content=patch.tobytes())
    labels = np.full((32, 32, 32), 777, dtype=np.uint64)
    c.ok("POST", f"/api/node/{child}/seg/raw/0_1_2/32_32_32/0_32_0", content=labels.tobytes())
    c.ok("POST", f"/api/node/{child}/seg/merge", json=[1, 2, 3])
    c.ok("POST", f"/api/node/{child}/kv/key/b", content=b"child-b")
    c.ok("DELETE", f"/api/node/{child}/kv/key/c")
    c.commit(child)
    return root, child


def reads(c: Any, uuid: str) -> dict[str, Any]:
    """What clients read at a version: raw voxels and labels, a precomputed chunk and
    its info, labels and sizes, keyvalue values and keys. Every read but a missing key
    must succeed (equal errors would prove nothing)."""

    def ok(r: Any) -> Any:
        assert r.status_code == 200, f"{r.request.url}: {r.status_code} {r.text}"
        return r

    out: dict[str, Any] = {}
    for name in ("grey", "seg"):
        out[name] = ok(c.get(f"/api/node/{uuid}/{name}/{BOX}")).content
        info = ok(c.get(f"/api/node/{uuid}/{name}/precomputed/info")).json()
        key = info["scales"][0]["key"]
        out[f"{name}-info"] = info
        out[f"{name}-chunk"] = ok(
            c.get(f"/api/node/{uuid}/{name}/precomputed/{key}/32-64_32-64_0-32")
        ).content
    out["label"] = ok(c.get(f"/api/node/{uuid}/seg/label/10_45_10")).json()
    out["merged"] = ok(c.get(f"/api/node/{uuid}/seg/label/48_20_7")).json()  # supervoxel 2
    out["sizes"] = ok(c.post(f"/api/node/{uuid}/seg/sizes", content=b"[1, 2, 777]")).content
    for k in KEYS:
        r = c.get(f"/api/node/{uuid}/kv/key/{k}")
        out[f"kv-{k}"] = (r.status_code, r.content)
    out["keys"] = ok(c.get(f"/api/node/{uuid}/kv/keys")).json()
    out["maxlabel"] = ok(c.get(f"/api/node/{uuid}/seg/maxlabel")).json()
    out["nextlabel"] = ok(c.get(f"/api/node/{uuid}/seg/nextlabel")).json()  # repo-wide
    return out


@pytest.fixture
def folder_app(tmp_path: Path) -> Iterator[Any]:
    """TestClients on data folders (fresh ones read what commands wrote since)."""
    clients: list[TestClient] = []

    def make(name: str) -> TestClient:
        client = TestClient(create_app(Settings(data_dir=tmp_path / name)))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def run(*args: str) -> dict[str, Any]:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def refused(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def node_objects(folder: Path, uuid: str, nodes: set[str]) -> tuple[int, int]:
    """(count, bytes) of the objects of ``uuid`` under ``data/`` of a folder store."""
    count = size = 0
    for path in (folder / "data").rglob("*"):
        if path.is_file():
            rel = path.relative_to(folder / "data").as_posix().split("/", 1)[1]
            kind, owner = classify(rel, nodes)
            if kind is Kind.NODE and owner == uuid:
                count, size = count + 1, size + path.stat().st_size
    return count, size


def test_push_sends_what_is_missing_and_reads_equal(folder_app: Any, tmp_path: Path) -> None:
    src = folder_app("a")
    root, child = populate(Client(src))
    nodes = {root, child}
    a, b = str(tmp_path / "a"), str(tmp_path / "b")

    first = run("push", root, b, "--data-dir", a)
    assert (first["nodes_added"], first["objects"]) == (1, node_objects(Path(a), root, nodes)[0])
    second = run("push", child, b, "--data-dir", a)
    count, nbytes = node_objects(Path(a), child, nodes)
    assert (second["nodes_added"], second["objects"], second["bytes"]) == (1, count, nbytes)
    again = run("push", child, b, "--data-dir", a)
    assert (again["nodes_added"], again["objects"]) == (0, 0)

    dest = folder_app("b")
    for version in (root, child):
        assert reads(dest, version) == reads(src, version)
    before, after = reads(dest, root), reads(dest, child)
    assert all(before[k] != after[k] for k in ("grey", "seg", "merged", "kv-b", "kv-c"))
    dag = dest.get(f"/api/repo/{root}/info").json()["DAG"]["Nodes"]
    assert set(dag) == nodes and all(n["Locked"] for n in dag.values())
    assert reads(dest, child)["kv-c"][0] == 404


class FailingStore(StoreSide):
    """A destination whose writes fail after ``budget`` objects (a dying network)."""

    def __init__(self, folder: str, budget: int) -> None:
        super().__init__({"default": LocalStore(folder)}, "default")
        self.budget = budget

    def put(self, store: str, key: str, data: bytes) -> None:
        if self.budget <= 0:
            raise StoreError("connection reset by peer")
        self.budget -= 1
        super().put(store, key, data)


def test_interrupted_push_resumes_and_nothing_is_visible_before(
    folder_app: Any, tmp_path: Path
) -> None:
    src = folder_app("a")
    root, child = populate(Client(src))
    a, b, c = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c")
    source, dest = open_end(a, None), open_end(b, None)
    planned = engine.plan(source, dest, child)
    half = planned.items[: len(planned.items) // 2]
    dest.prepare()
    engine.copy(source, dest, half, lambda n: None)  # a push killed before publishing
    assert root not in folder_app("b").get("/api/repos/info").json()

    resumed = run("push", child, b, "--data-dir", a)
    assert resumed["skipped_objects"] == len(half) > 0
    assert resumed["objects"] == len(planned.items) - len(half)
    assert reads(folder_app("b"), child) == reads(src, child)

    with pytest.raises(StoreError):  # the copy fails part-way: nothing is published
        transfer(
            "push", open_end(a, None), FailingStore(c, 10), child, flatten_it=False, force=False
        )
    assert root not in folder_app("c").get("/api/repos/info").json()
    after = run("push", child, c, "--data-dir", a)
    assert after["skipped_objects"] >= 10 and after["nodes_added"] == 2
    assert reads(folder_app("c"), child) == reads(src, child)


def test_diverged_branch_is_refused_unless_forced(folder_app: Any, tmp_path: Path) -> None:
    src = folder_app("a")
    root, child = populate(Client(src))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    run("push", root, b, "--data-dir", a)
    dest = Client(folder_app("b"))
    theirs = dest.child(root)
    dest.ok("POST", f"/api/node/{theirs}/kv/key/a", content=b"theirs")
    dest.ok("POST", f"/api/node/{theirs}/seg/maxlabel/100000")
    dest.commit(theirs)

    line = refused("push", child, b, "--data-dir", a)
    assert "diverged" in line and theirs in line
    nodes = dest.ok("GET", f"/api/repo/{root}/info").json()["DAG"]["Nodes"]
    assert set(nodes) == {root, theirs}

    forced = run("push", child, b, "--data-dir", a, "--force")
    assert (forced["nodes_added"], forced["nodes_removed"]) == (1, 1)
    after = folder_app("b")
    assert set(after.get(f"/api/repo/{root}/info").json()["DAG"]["Nodes"]) == {root, child}
    mine, pushed = reads(src, child), reads(after, child)
    assert pushed["nextlabel"] == {"nextlabel": 100001} != mine["nextlabel"]  # never lowered
    assert {k: v for k, v in pushed.items() if k != "nextlabel"} == {
        k: v for k, v in mine.items() if k != "nextlabel"
    }


def test_flatten_gives_one_root_node_with_the_version_s_reads(
    folder_app: Any, tmp_path: Path
) -> None:
    src = folder_app("a")
    root, child = populate(Client(src))
    a, c = str(tmp_path / "a"), str(tmp_path / "c")
    run("push", root, c, "--data-dir", a)  # the original repo is there too
    summary = run("push", child, c, "--data-dir", a, "--flatten")
    assert summary["root"] == child and summary["nodes_added"] == 1
    dest = folder_app("c")
    repo = dest.get(f"/api/repo/{child}/info").json()
    assert repo["Root"] == child and list(repo["DAG"]["Nodes"]) == [child]
    assert reads(dest, child) == reads(src, child)
    assert reads(dest, root) == reads(src, root)
    original = dest.get(f"/api/repo/{root}/info").json()["DataInstances"]
    flat = repo["DataInstances"]
    assert all(flat[n]["Base"]["DataUUID"] != original[n]["Base"]["DataUUID"] for n in flat)
    again = run("push", child, c, "--data-dir", a, "--flatten")
    assert (again["nodes_added"], again["objects"]) == (0, 0)
    assert "already belongs" in refused("push", child, c, "--data-dir", a)


def test_pull_into_the_local_store(folder_app: Any, tmp_path: Path) -> None:
    src = folder_app("a")
    root, child = populate(Client(src))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    summary = run("pull", child, a, "--data-dir", b)
    assert summary["nodes_added"] == 2
    assert reads(folder_app("b"), child) == reads(src, child)
    assert reads(folder_app("b"), root) == reads(src, root)


def test_bad_input_is_one_line_and_publishes_nothing(folder_app: Any, tmp_path: Path) -> None:
    src = Client(folder_app("a"))
    _root, child = populate(src)
    open_node = src.child(child)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert "partial match" in refused("push", "feedbeef", b, "--data-dir", a)
    assert "open" in refused("push", open_node, b, "--data-dir", a)
    assert "cannot reach" in refused("push", child, "http://127.0.0.1:9", "--data-dir", a)
    assert "unsupported store" in refused("push", child, "ftp://x/y", "--data-dir", a)
    assert "cannot reach" in refused("pull", child, "http://127.0.0.1:9", "--data-dir", b)
    assert not (tmp_path / "b" / "meta" / "repos").exists()


def test_push_from_a_folder_into_an_s3_bucket(
    folder_app: Any,
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811 - fixture
    s3_env: str,  # noqa: F811 - fixture
) -> None:
    src = folder_app("a")
    root, child = populate(Client(src))
    bucket = make_s3_store(s3_endpoint).bucket
    url = f"s3://{bucket}/pushed"
    run("push", root, url, "--data-dir", str(tmp_path / "a"))
    second = run("push", child, url, "--data-dir", str(tmp_path / "a"))
    count, nbytes = node_objects(tmp_path / "a", child, {root, child})
    assert (second["objects"], second["bytes"]) == (count, nbytes)
    with TestClient(create_app(Settings(store_url=url))) as dest:
        for version in (root, child):
            assert reads(dest, version) == reads(src, version)


ADMIN = "push-admin-secret"


@pytest.fixture
def two_servers(
    s3_endpoint: str,  # noqa: F811 - fixture
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    """Two server processes, each on its own moto S3 bucket; the second with auth on."""
    tmp = tmp_path_factory.mktemp("push-servers")
    servers: list[DvidServer] = []
    for name in ("src", "dst"):
        env = isolated_server_env(tmp) | {"AWS_ENDPOINT_URL": s3_endpoint}
        if name == "dst":
            env |= {"DVID_CLOUD_AUTH_REQUIRED": "true", "DVID_CLOUD_ADMIN_TOKEN": ADMIN}
        bucket = make_s3_store(s3_endpoint).bucket
        config = tmp / f"{name}.toml"
        config.write_text(f'[store.main]\npath = "s3://{bucket}/dvid"\n')
        servers.append(DvidServer(tmp / f"{name}.log", env, config=config))
    with ThreadPoolExecutor(2) as pool:  # the two start-ups overlap
        list(pool.map(DvidServer.start, servers))
    try:
        yield servers[0].url, servers[1].url
    finally:
        for server in servers:
            server.stop()


def test_push_between_two_servers_on_s3_then_pull(
    two_servers: tuple[str, str],
    s3_env: str,  # noqa: F811 - fixture
    folder_app: Any,
    tmp_path: Path,
) -> None:
    src_url, dst_url = two_servers
    with (
        httpx.Client(base_url=src_url, timeout=60) as src,
        httpx.Client(base_url=dst_url, timeout=60, params={"admintoken": ADMIN}) as dst,
    ):
        root, child = populate(Client(src))
        assert "401" in refused("push", root, dst_url, "--server", src_url)
        first = run("push", root, dst_url, "--server", src_url, "--token", ADMIN)
        second = run("push", child, dst_url, "--server", src_url, "--token", ADMIN)
        assert first["nodes_added"] == second["nodes_added"] == 1
        assert 0 < second["objects"] < first["objects"]
        for version in (root, child):
            assert reads(dst, version) == reads(src, version)

        pulled = run("pull", child, dst_url, "--data-dir", str(tmp_path / "p"), "--token", ADMIN)
        assert pulled["nodes_added"] == 2
        assert reads(folder_app("p"), child) == reads(src, child)


def test_a_merge_and_its_two_branches_travel_and_flatten(folder_app: Any, tmp_path: Path) -> None:
    c = Client(folder_app("a"))
    root = c.ok("POST", "/api/repos", json={}).json()["root"]
    c.ok("POST", f"/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "kv"})
    c.ok("POST", f"/api/node/{root}/kv/key/base", content=b"0")
    c.commit(root)
    sides = []
    for name in ("left", "right"):
        side = c.ok("POST", f"/api/node/{root}/branch", json={"branch": name}).json()["child"]
        c.ok("POST", f"/api/node/{side}/kv/key/{name}", content=name.encode())
        c.commit(side)
        sides.append(side)
    body = {"mergeType": "conflict-free", "parents": sides}
    merged = c.ok("POST", f"/api/repo/{root}/merge", json=body).json()["child"]
    c.commit(merged)
    a = str(tmp_path / "a")
    assert run("push", merged, str(tmp_path / "b"), "--data-dir", a)["nodes_added"] == 4
    run("push", merged, str(tmp_path / "f"), "--data-dir", a, "--flatten")
    want = {k: c.c.get(f"/api/node/{merged}/kv/key/{k}").content for k in ("base", "left", "right")}
    for folder in ("b", "f"):
        dest = folder_app(folder)
        got = {k: dest.get(f"/api/node/{merged}/kv/key/{k}").content for k in want}
        assert got == want == {"base": b"0", "left": b"left", "right": b"right"}


def test_unversioned_instance_written_after_the_root_was_pushed(
    folder_app: Any, tmp_path: Path
) -> None:
    c = Client(folder_app("a"))
    root = c.ok("POST", "/api/repos", json={}).json()["root"]
    body = {"typename": "keyvalue", "dataname": "uv", "versioned": "false"}
    c.ok("POST", f"/api/repo/{root}/instance", json=body)
    c.ok("POST", f"/api/node/{root}/uv/key/u", content=b"1")
    c.commit(root)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    run("push", root, b, "--data-dir", a)
    child = c.child(root)
    c.ok("POST", f"/api/node/{child}/uv/key/u", content=b"22")  # stored at the root
    c.commit(child)
    run("push", child, b, "--data-dir", a)
    assert folder_app("b").get(f"/api/node/{child}/uv/key/u").content == b"22"


def test_tag_nodes_are_told_apart_from_key_words() -> None:
    uuid = "0123456789abcdef0123456789abcdef"
    nodes = {uuid, "v", "release-1"}
    assert classify(f"v/{uuid}/6b", nodes) == (Kind.NODE, uuid)  # a UUID match wins
    assert classify("s0/release-1/c/0/0/0", nodes) == (Kind.NODE, "release-1")
    assert classify("maxrepolabel", nodes) == (Kind.SHARED, "")
    assert classify("s0/fedcba9876543210fedcba9876543210/zarr.json", nodes) == (Kind.SKIP, "")
    assert classify("stage/123-abc/s0/v/c/0/0/0", nodes) == (Kind.SKIP, "")
    with pytest.raises(Exception, match="more than one version"):
        classify("v/v/6b", nodes)


def test_transfer_endpoints_need_read_to_send_and_a_server_admin_to_receive() -> None:
    key = new_rsa_key()
    app = create_app(auth_settings(key), {"default": MemoryStore()})
    with TestClient(app) as c:
        admin = {"admintoken": ADMIN_TOKEN}
        root = c.post("/api/repos", json={}, params=admin).json()["root"]
        writer = bearer(make_token(key, dvid={"repos": {root: "write"}}))
        reader = bearer(make_token(key, dvid={"repos": {root: "read"}}))
        assert c.get(f"/api/repo/{root}/transfer/repo").status_code == 401
        answer = c.get(f"/api/repo/{root}/transfer/repo", headers=reader)
        assert answer.status_code == 200 and answer.json()["node"] == root
        key_path = {"key": f"data/{'ab' * 16}/v/{root}/61"}
        put = c.put("/api/transfer/object", params=key_path, content=b"\x01x", headers=writer)
        assert put.status_code == 403
        publish = c.post("/api/transfer/publish", json={}, headers=writer)
        assert publish.status_code == 403
        put = c.put("/api/transfer/object", params={**key_path, **admin}, content=b"\x01x")
        assert put.status_code == 204
        bad = c.put("/api/transfer/object", params={"key": "meta/repos/x.json", **admin})
        assert bad.status_code == 400 and "not an instance data key" in bad.text
