"""Answers at open versions kept in memory (app/immutable.py, ``OPEN_KEY``): a repeated
read at an open node is replayed, but never after anything it follows from changed, on
whichever replica the change was made. Two apps on one store stand for two replicas."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Match, Mount

from app.api.instances import resolve
from app.immutable import ImmutableAnswers
from app.server import create_app
from app.settings import Settings
from app.storage.journal import Journal
from app.volumes.base import VolumeData
from app.volumes.geometry import Box
from backends import ObjectStore
from backends.local import LocalStore
from backends.memory import MemoryStore

EDGE = 32
ROOT_VOXELS = (np.arange(EDGE**3, dtype=np.uint64) % 251 + 1).astype(np.uint8)
CHUNK = f"raw/0_1_2/{EDGE}_{EDGE}_{EDGE}/0_0_0"


@pytest.fixture(params=["memory", "local"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ObjectStore]:
    """Every call opens the same data, as another replica would."""
    if request.param == "memory":
        shared = MemoryStore()
        return lambda: shared
    return lambda: LocalStore(tmp_path / "store")


@pytest.fixture
def replicas(open_store: Callable[[], ObjectStore]) -> Iterator[tuple[TestClient, TestClient]]:
    with (
        TestClient(create_app(Settings(), {"default": open_store()})) as a,
        TestClient(create_app(Settings(), {"default": open_store()})) as b,
    ):
        yield a, b


def _answers(client: TestClient) -> ImmutableAnswers:
    return cast(ImmutableAnswers, cast(FastAPI, client.app).state.services.answers)


def _ok(response: object) -> None:
    status = getattr(response, "status_code", None)
    assert status == 200, getattr(response, "text", response)


def _repo(client: TestClient, typename: str = "uint8blk", **settings: str) -> tuple[str, str]:
    """A root holding ``vol`` (one chunk of :data:`ROOT_VOXELS`, as ``typename``), locked,
    and an open child that wrote nothing."""
    root = client.post("/api/repos", json={}).json()["root"]
    body = {"typename": typename, "dataname": "vol", "BlockSize": f"{EDGE},{EDGE},{EDGE}"}
    _ok(client.post(f"/api/repo/{root}/instance", json={**body, **settings}))
    voxels = ROOT_VOXELS if typename == "uint8blk" else ROOT_VOXELS.astype(np.uint64)
    _ok(client.post(f"/api/node/{root}/vol/{CHUNK}", content=voxels.tobytes()))
    _ok(client.post(f"/api/node/{root}/commit", json={}))
    child = client.post(f"/api/node/{root}/newversion", json={}).json()["child"]
    return root, child


def _kept_read(client: TestClient, path: str) -> bytes:
    """GET ``path`` twice: the second answer must come from the kept answers."""
    first = client.get(path)
    assert first.status_code == 200, first.text
    assert first.headers["cache-control"] == "no-cache" and "etag" not in first.headers
    hits = _answers(client).cache.hits
    again = client.get(path)
    assert again.content == first.content and again.headers["cache-control"] == "no-cache"
    assert _answers(client).cache.hits == hits + 1, "the open answer was not kept"
    return first.content


def test_open_read_is_kept_until_another_replica_writes(
    replicas: tuple[TestClient, TestClient],
) -> None:
    a, b = replicas
    _, child = _repo(a)
    path = f"/api/node/{child}/vol/{CHUNK}"
    assert _kept_read(a, path) == ROOT_VOXELS.tobytes()  # the chunk the root owns
    rewritten = (ROOT_VOXELS + 7).astype(np.uint8)
    _ok(b.post(path, content=rewritten.tobytes()))
    assert a.get(path).content == rewritten.tobytes()
    assert _kept_read(a, path) == rewritten.tobytes()  # kept again, under the new stamp


def test_background_written_at_open_node_is_seen(replicas: tuple[TestClient, TestClient]) -> None:
    """A chunk rewritten as all background is stored as no object at all (a tombstone:
    the node owns it, its array holds nothing): the ancestor's chunk must not show."""
    a, b = replicas
    _, child = _repo(a)
    path = f"/api/node/{child}/vol/{CHUNK}"
    assert _kept_read(a, path) == ROOT_VOXELS.tobytes()
    _ok(b.post(path, content=bytes(EDGE**3)))
    assert a.get(path).content == bytes(EDGE**3)


def test_head_is_kept_and_replayed_without_body(replicas: tuple[TestClient, TestClient]) -> None:
    a, _ = replicas
    _, child = _repo(a)
    path = f"/api/node/{child}/vol/{CHUNK}"
    _kept_read(a, path)
    head = a.head(path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["cache-control"] == "no-cache"


def test_branch_reference_follows_its_newest_node(
    replicas: tuple[TestClient, TestClient],
) -> None:
    """A read through ``:master`` is kept under the node it names now: once another
    replica commits and writes at a new child, the branch shows the new data."""
    a, b = replicas
    root, child = _repo(a)
    path = f"/api/node/{root[:8]}:master/vol/{CHUNK}"
    assert _kept_read(a, path) == ROOT_VOXELS.tobytes()
    _ok(b.post(f"/api/node/{child}/commit", json={}))
    grandchild = b.post(f"/api/node/{child}/newversion", json={}).json()["child"]
    rewritten = (ROOT_VOXELS + 3).astype(np.uint8)
    _ok(b.post(f"/api/node/{grandchild}/vol/{CHUNK}", content=rewritten.tobytes()))
    assert a.get(path).content == rewritten.tobytes()


def test_recreated_instance_is_not_answered_from_the_old_one(
    replicas: tuple[TestClient, TestClient],
) -> None:
    """Both instances wrote nothing at the open node (the same journal stamp, none), so
    only the instance's own id tells their answers apart."""
    a, b = replicas
    root, child = _repo(a)
    path = f"/api/node/{child}/vol/{CHUNK}"
    assert _kept_read(a, path) == ROOT_VOXELS.tobytes()
    _ok(b.delete(f"/api/repo/{root}/vol", params={"imsure": "true"}))
    body = {"typename": "uint8blk", "dataname": "vol", "BlockSize": f"{EDGE},{EDGE},{EDGE}"}
    _ok(b.post(f"/api/repo/{child}/instance", json=body))
    assert a.get(path).content == bytes(EDGE**3)


def test_mapping_change_at_open_node_shows_in_mapped_reads(
    replicas: tuple[TestClient, TestClient],
) -> None:
    """labelmap bodies come through the version's mapping: a merge through another
    replica changes the open node's mapped answer, kept or not."""
    a, b = replicas
    _, child = _repo(a, "labelmap")
    labels = ROOT_VOXELS.astype(np.uint64)
    for query in ("", "?compression=googlegzip"):
        path = f"/api/node/{child}/vol/{CHUNK}{query}"
        _kept_read(a, path)
    merged = b.post(f"/api/node/{child}/vol/merge", json=[1, 2])
    _ok(merged)
    got = np.frombuffer(a.get(f"/api/node/{child}/vol/{CHUNK}").content, np.uint64)
    expected = np.where(labels == 2, np.uint64(1), labels)
    assert np.array_equal(got, expected)
    sizes = a.get(f"/api/node/{child}/vol/{CHUNK}?compression=googlegzip")
    assert sizes.status_code == 200
    supervoxels = a.get(f"/api/node/{child}/vol/{CHUNK}?supervoxels=true").content
    assert np.array_equal(np.frombuffer(supervoxels, np.uint64), labels)


def test_settings_change_is_not_answered_from_before(
    replicas: tuple[TestClient, TestClient],
) -> None:
    """``isotropic`` reads follow the voxel size: instance metadata, shared by every
    version, so changing it at one open node changes answers at another, whose journal
    saw nothing."""
    a, b = replicas
    root, child = _repo(a)
    sibling = a.post(f"/api/node/{root}/branch", json={"branch": "other"}).json()["child"]
    path = f"/api/node/{sibling}/vol/isotropic/0_1/{EDGE}_{EDGE}/0_0_0/raw"
    square = _kept_read(a, path)
    _ok(b.post(f"/api/node/{child}/vol/resolution", json=[8, 32, 8]))
    stretched = a.get(path)
    assert stretched.status_code == 200 and stretched.content != square


def test_settled_stamp_changes_with_every_write(open_store: Callable[[], ObjectStore]) -> None:
    """The journal's stamp is what open answers are kept under: the same while nothing
    is written, new after each transaction, and none while a writer holds the head."""
    journal = Journal(open_store(), "data", "node")
    assert journal.recover() == ""
    with journal.transaction() as txn:
        txn.store.put("data/x", b"1")
        assert journal.recover() is None  # a write in flight
    first = journal.recover()
    assert first and journal.recover() == first
    with journal.transaction() as txn:
        txn.store.put("data/x", b"2")
    assert journal.recover() not in (None, first)


def test_instance_paths_reach_only_the_instance_mount() -> None:
    """ImmutableResponses hands instance reads straight to the instance mount, skipping
    the router: that is only right while no route before the mount takes such a path.
    Every datatype route of the OpenAPI document, its parameters filled in, must find
    the mount first."""
    app = create_app(Settings(), {"default": MemoryStore()})
    routes = cast(FastAPI, app).router.routes
    prefix = "/api/node/{uuid}/{dataname}/"
    probes = [
        re.sub(r"\{[^}]+\}", "1", template)
        for template in cast(FastAPI, app).openapi()["paths"]
        if template.startswith(prefix)
    ]
    assert len(probes) > 50
    for path in probes:
        for method in ("GET", "HEAD"):
            scope = {"type": "http", "path": path, "method": method, "root_path": ""}
            first = next(r for r in routes if r.matches(scope)[0] is Match.FULL)
            assert isinstance(first, Mount) and first.path == prefix.rstrip("/"), path


#: Per case: the chunks (of 8) the root writes, then per later version (each a child of
#: the last) a value and the chunks it writes (value 0: all background).
HISTORIES = {
    "root-holds-most": ([0, 1, 2, 3, 4, 5, 6, 7], [(40, [0]), (0, [1]), (60, [2])]),
    "leaf-holds-most": ([0, 1, 2], [(40, [0]), (0, [1]), (60, [2, 3, 4, 5])]),
    "none-holds-half": ([0, 1], [(40, [2]), (0, [3]), (60, [4])]),
}


@pytest.mark.parametrize("history", HISTORIES.values(), ids=HISTORIES.keys())
def test_read_over_versions_matches_each_chunks_owner(
    history: tuple[list[int], list[tuple[int, list[int]]]],
) -> None:
    """A box whose chunks come from several versions (VersionedVolume.read reads the
    version holding most of them over the whole box when that is at least half, then
    the others' chunks over it): each chunk shows its nearest writer, a chunk rewritten
    as background shows background (not the ancestor's), and unwritten ones too."""
    rooted, later = history
    with TestClient(create_app(Settings(), {"default": MemoryStore()})) as client:
        root = client.post("/api/repos", json={}).json()["root"]
        body = {"typename": "uint8blk", "dataname": "vol", "BlockSize": "16,16,16"}
        _ok(client.post(f"/api/repo/{root}/instance", json=body))
        expected = np.zeros((32, 32, 32), np.uint8)
        corners = [(x, y, z) for z in (0, 16) for y in (0, 16) for x in (0, 16)]

        def write(node: str, chunk: int, value: int) -> None:
            x, y, z = corners[chunk]
            block = np.zeros((16, 16, 16), np.uint8)
            if value:
                block[:] = value + chunk
                block[0, 0, :] = np.arange(16, dtype=np.uint8)  # not uniform
            path = f"/api/node/{node}/vol/raw/0_1_2/16_16_16/{x}_{y}_{z}"
            _ok(client.post(path, content=block.tobytes()))
            expected[z : z + 16, y : y + 16, x : x + 16] = block

        node = root
        for chunk in rooted:
            write(node, chunk, 10)
        for value, chunks in later:
            _ok(client.post(f"/api/node/{node}/commit", json={}))
            node = client.post(f"/api/node/{node}/newversion", json={}).json()["child"]
            for chunk in chunks:
                write(node, chunk, value)
        got = client.get(f"/api/node/{node}/vol/raw/0_1_2/32_32_32/0_0_0").content
        assert np.array_equal(np.frombuffer(got, np.uint8).reshape(32, 32, 32), expected)
        got = client.get(f"/api/node/{node}/vol/raw/0_1_2/20_12_30/5_9_1").content
        part = np.frombuffer(got, np.uint8).reshape(30, 12, 20)
        assert np.array_equal(part, expected[1:31, 9:21, 5:25])


def test_write_after_a_read_does_not_build_on_the_stamp_it_read(
    replicas: tuple[TestClient, TestClient],
) -> None:
    """An instance bound for a read keeps the open node's chunk bitmap under the stamp
    it saw; if the same binding then writes (in a transaction, after another replica
    wrote), a partial block must be merged with the chunk as it is now, not as of that
    stamp."""
    a, b = replicas
    _, child = _repo(a)
    services = cast(FastAPI, a.app).state.services
    data = resolve(services, child, "vol")
    assert isinstance(data, VolumeData)
    data.prepare_read()
    assert data.settled is not None
    whole = Box((0, 0, 0), (EDGE, EDGE, EDGE))
    assert np.array_equal(data.volume().read(whole).ravel(), ROOT_VOXELS)
    theirs = np.full(EDGE**3, 99, np.uint8)
    _ok(b.post(f"/api/node/{child}/vol/{CHUNK}", content=theirs.tobytes()))
    corner = Box((0, 0, 0), (4, 4, 4))
    with data.transaction():
        data.write(corner, np.full((4, 4, 4), 5, np.uint8))
    expected = theirs.reshape(EDGE, EDGE, EDGE).copy()
    expected[:4, :4, :4] = 5
    got = np.frombuffer(a.get(f"/api/node/{child}/vol/{CHUNK}").content, np.uint8)
    assert np.array_equal(got.reshape(EDGE, EDGE, EDGE), expected)
