"""Answers at locked versions: ETag, immutable Cache-Control, 304 on If-None-Match, and
kept in memory so that a repeat is answered without reading the store; everything else
stays fresh (no-cache), and a deleted instance is not served from memory."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import tensorstore as ts
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.immutable import Answer, ImmutableAnswers, _unchanging
from app.server import create_app
from app.settings import Settings
from app.volumes.requests import array_bytes
from backends.memory import MemoryStore

IMMUTABLE = "public, max-age=31536000, immutable"
VOXELS = np.arange(32**3, dtype=np.uint64).astype(np.uint8).tobytes()


def _client(store: MemoryStore, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(**settings), {"default": store}))


def _answers(client: TestClient) -> ImmutableAnswers:
    return cast(ImmutableAnswers, cast(FastAPI, client.app).state.services.answers)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def repo(store: MemoryStore) -> tuple[TestClient, str, str]:
    """A root (locked) holding ``gray`` (uint8blk) and ``kv`` (keyvalue), and an open child."""
    client = _client(store)
    uuid = client.post("/api/repos", json={}).json()["root"]
    for typename, name in (("uint8blk", "gray"), ("keyvalue", "kv")):
        body = {"typename": typename, "dataname": name}
        assert client.post(f"/api/repo/{uuid}/instance", json=body).status_code == 200
    raw = f"/api/node/{uuid}/gray/raw/0_1_2/32_32_32/0_0_0"
    assert client.post(raw, content=VOXELS).status_code == 200
    assert client.post(f"/api/node/{uuid}/kv/key/a", content=b"value").status_code == 200
    assert client.post(f"/api/node/{uuid}/commit", json={}).status_code == 200
    child = client.post(f"/api/node/{uuid}/newversion", json={}).json()["child"]
    return client, uuid, child


def test_locked_reads_are_immutable_and_kept(repo: tuple[TestClient, str, str]) -> None:
    client, uuid, _ = repo
    answers = _answers(client)
    for path, body in (
        (f"/api/node/{uuid}/gray/raw/0_1_2/32_32_32/0_0_0", VOXELS),
        (f"/api/node/{uuid}/kv/key/a", b"value"),
    ):
        first = client.get(path)
        assert first.status_code == 200 and first.content == body
        assert first.headers["cache-control"] == IMMUTABLE
        etag = first.headers["etag"]
        hits = answers.cache.hits
        again = client.get(path)
        assert again.content == body and again.headers["etag"] == etag
        assert answers.cache.hits == hits + 1  # answered from memory
        head = client.head(path)
        assert head.status_code == 200 and head.headers["etag"] == etag and head.content == b""
        not_modified = client.get(path, headers={"If-None-Match": etag})
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert not_modified.headers["etag"] == etag


def test_volume_answers_are_kept_as_sent(
    repo: tuple[TestClient, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A volume read sends a read-only view of the voxels it read, and its answer is kept
    as that view, not copied (16 MiB copied into fresh memory on the event loop cost about
    as much as the read); a body that could still change is kept as a copy."""
    client, uuid, _ = repo
    answers = _answers(client)
    kept: list[Answer] = []
    put = answers.cache.put

    def keep(key: str, answer: Answer) -> None:
        kept.append(answer)
        put(key, answer)

    monkeypatch.setattr(answers.cache, "put", keep)
    path = f"/api/node/{uuid}/gray/raw/0_1_2/32_32_32/0_0_0"
    assert client.get(path).content == VOXELS
    (answer,) = kept
    assert isinstance(answer.body, memoryview) and answer.body.readonly
    assert answer.body == VOXELS
    assert client.get(path).content == VOXELS  # replayed from the view
    writable = bytearray(b"voxels")
    copy = _unchanging(memoryview(writable))
    writable[0:1] = b"V"
    assert copy == b"voxels"


def test_etags_agree_across_replicas(repo: tuple[TestClient, str, str], store: MemoryStore) -> None:
    """Another process (nothing kept yet) answers the first replica's ETag with 304."""
    client, uuid, _ = repo
    path = f"/api/node/{uuid}/gray/raw/0_1_2/8_8_8/4_4_4"
    etag = client.get(path).headers["etag"]
    with _client(store) as other:
        r = other.get(path, headers={"If-None-Match": etag})
        assert r.status_code == 304
        assert other.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


def test_the_cache_bound_holds(repo: tuple[TestClient, str, str], store: MemoryStore) -> None:
    _, uuid, _ = repo
    with _client(store, response_cache_bytes=64 << 10) as small:
        for z in range(32):
            assert small.get(f"/api/node/{uuid}/gray/raw/0_1_2/32_32_1/0_0_{z}").status_code == 200
        answers = _answers(small)
        assert 0 < answers.cache.weight <= 64 << 10


@pytest.mark.parametrize(
    "ref", ["child", "prefix", "branch"], ids=["open version", "uuid prefix", "branch ref"]
)
def test_what_may_change_is_not_kept(repo: tuple[TestClient, str, str], ref: str) -> None:
    """Open versions change; prefixes and branch references may later name other nodes."""
    client, uuid, child = repo
    node = {"child": child, "prefix": uuid[:8], "branch": ":master"}[ref]
    path = f"/api/node/{node}/kv/key/a"
    r = client.get(path)
    assert r.status_code == 200 and r.content == b"value"
    assert "etag" not in r.headers
    assert r.headers["cache-control"] == "no-cache"
    hits = _answers(client).cache.hits
    client.get(path)
    assert _answers(client).cache.hits == hits


def test_instance_metadata_stays_fresh(repo: tuple[TestClient, str, str]) -> None:
    """Tags may change at a locked node: ``info`` is never kept."""
    client, uuid, _ = repo
    assert client.get(f"/api/node/{uuid}/kv/info").json()["Base"]["Tags"] is None
    assert client.post(f"/api/node/{uuid}/kv/tags", json={"t": "1"}).status_code == 200
    assert client.get(f"/api/node/{uuid}/kv/info").json()["Base"]["Tags"] == {"t": "1"}


def test_unversioned_instances_are_not_kept(repo: tuple[TestClient, str, str]) -> None:
    client, uuid, child = repo
    body = {"typename": "keyvalue", "dataname": "shared", "versioned": "false"}
    assert client.post(f"/api/repo/{child}/instance", json=body).status_code == 200
    assert client.post(f"/api/node/{child}/shared/key/k", content=b"1").status_code == 200
    assert client.get(f"/api/node/{uuid}/shared/key/k").headers["cache-control"] == "no-cache"
    assert client.post(f"/api/node/{child}/shared/key/k", content=b"2").status_code == 200
    assert client.get(f"/api/node/{uuid}/shared/key/k").content == b"2"


def test_a_deleted_instance_is_not_served_from_memory(repo: tuple[TestClient, str, str]) -> None:
    client, uuid, _ = repo
    path = f"/api/node/{uuid}/kv/key/a"
    assert client.get(path).status_code == 200
    r = client.delete(f"/api/repo/{uuid}/kv", params={"imsure": "true"})
    assert r.status_code == 200
    assert client.get(path).status_code == 400


def test_a_view_of_a_larger_buffer_is_sent_as_a_copy() -> None:
    """A kept view holds its whole buffer while the answer cache counts only the view:
    a contiguous slice of a larger read (a plane of a volume) is copied instead."""
    volume = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    plane = volume[1]
    assert plane.flags.c_contiguous
    sent = array_bytes(plane)
    assert isinstance(sent, bytes) and sent == plane.tobytes()
    whole = array_bytes(volume)
    assert isinstance(whole, memoryview) and whole.readonly and whole == volume.tobytes()
    from_buffer = np.frombuffer(bytes(512), np.uint8)[:256]
    assert isinstance(array_bytes(from_buffer), bytes)
    # An owner that does not say how much it holds (a tensorstore read's capsule): copied.
    read = ts.array(volume).read().result()
    assert read.base is not None
    assert array_bytes(read) == volume.tobytes()


def test_a_large_answer_is_kept_when_asked_for_again(store: MemoryStore) -> None:
    """An answer over 1/64 of the cache is kept from its second request on; one-off
    reads of large volumes leave the cache to the answers that are asked again."""
    client = _client(store, response_cache_bytes=64 * 4096)  # large: over 4 KiB
    uuid = client.post("/api/repos", json={}).json()["root"]
    body = {"typename": "uint8blk", "dataname": "gray"}
    assert client.post(f"/api/repo/{uuid}/instance", json=body).status_code == 200
    large = f"/api/node/{uuid}/gray/raw/0_1_2/32_32_32/0_0_0"  # 32 KiB
    small = f"/api/node/{uuid}/gray/raw/0_1_2/16_16_16/0_0_0"  # 4 KiB
    assert client.post(large, content=VOXELS).status_code == 200
    assert client.post(f"/api/node/{uuid}/commit", json={}).status_code == 200
    answers = _answers(client)
    assert client.get(small).headers["cache-control"] == IMMUTABLE
    hits = answers.cache.hits
    assert client.get(small).content == _block(16)
    assert answers.cache.hits == hits + 1  # a small answer: kept at once
    for hits_after, query in ((0, ""), (0, ""), (1, "")):
        before = answers.cache.hits
        got = client.get(large + query)
        assert got.content == VOXELS and got.headers["cache-control"] == IMMUTABLE
        assert answers.cache.hits - before == hits_after
    for n in range(3):  # asked once each: none kept
        assert client.get(f"{large}?read={n}").content == VOXELS
    assert len(answers.cache) == 2


def _block(edge: int) -> bytes:
    """The ``edge``³ corner of the 32³ volume VOXELS holds, as GET raw sends it."""
    return np.frombuffer(VOXELS, np.uint8).reshape(32, 32, 32)[:edge, :edge, :edge].tobytes()
