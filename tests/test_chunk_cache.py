"""The decoded-chunk cache of locked versions (``chunk_cache_bytes``, app/volumes/arrays.py).

A locked version's chunks never change, so what its arrays read is kept and never checked
against the store again; an open version's array is read afresh each time, since another
replica may rewrite its chunks at any moment. Answers are not kept here
(``response_cache_bytes=0``), so every GET reads chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from app.server import create_app
from app.settings import Settings

EDGE = 64
NAME = "grayscale"


def _raw(uuid: str, query: str = "") -> str:
    return f"/api/node/{uuid}/{NAME}/raw/0_1_2/{EDGE}_{EDGE}_{EDGE}/0_0_0{query}"


def _volume(client: TestClient) -> str:
    root = client.post("/api/repos", json={"alias": "cache"}).json()["root"]
    created = client.post(
        f"/api/repo/{root}/instance",
        json={"typename": "uint8blk", "dataname": NAME, "BlockSize": "32,32,32"},
    )
    assert created.status_code == 200, created.text
    return str(root)


def _post(client: TestClient, uuid: str, voxels: np.ndarray) -> None:
    answer = client.post(_raw(uuid), content=voxels.tobytes())
    assert answer.status_code == 200, answer.text


def _get(client: TestClient, uuid: str, query: str = "") -> np.ndarray:
    answer = client.get(_raw(uuid, query))
    assert answer.status_code == 200, answer.text
    return np.frombuffer(answer.content, np.uint8).reshape((EDGE,) * 3)


def _voxels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 255, (EDGE,) * 3, dtype=np.uint8)


def test_a_node_read_while_open_is_read_afresh_once_another_replica_commits_it(
    make_client: Callable[..., TestClient],
) -> None:
    """Replica A reads the open root; replica B rewrites it and commits it; A's next read,
    at a locked node now, sees B's voxels. Had A cached what it read while the node was
    open, it would answer the old voxels for ever."""
    a, b = make_client(response_cache_bytes=0), make_client(response_cache_bytes=0)
    root = _volume(a)
    first, second = _voxels(1), _voxels(2)
    _post(a, root, first)
    assert np.array_equal(_get(a, root), first)
    _post(b, root, second)
    assert np.array_equal(_get(a, root, "?after=write"), second)
    assert b.post(f"/api/node/{root}/commit", json={"note": "by b"}).status_code == 200
    for query in ("?after=commit", "?again=1"):
        assert np.array_equal(_get(a, root, query), second)


def test_a_locked_version_is_read_from_the_cache_and_an_open_one_is_not(tmp_path: Path) -> None:
    """With the chunk files gone from the folder, a replica with a chunk cache still
    answers a locked version's voxels it read before; one without it (and any replica,
    at an open version) reads what the folder now holds."""
    settings = {"data_dir": tmp_path, "response_cache_bytes": 0}
    with (
        TestClient(create_app(Settings(**settings))) as cached,
        TestClient(create_app(Settings(**settings, chunk_cache_bytes=0))) as uncached,
    ):
        root = _volume(cached)
        voxels = _voxels(3)
        _post(cached, root, voxels)
        assert cached.post(f"/api/node/{root}/commit", json={"note": "x"}).status_code == 200
        child = cached.post(f"/api/node/{root}/newversion", json={}).json()["child"]
        _post(cached, child, voxels)
        for client in (cached, uncached):
            for uuid in (root, child):
                assert np.array_equal(_get(client, uuid), voxels)
        chunks = [p for p in tmp_path.rglob("c/*/*/*") if p.is_file()]
        assert len(chunks) == 16  # 8 chunks of 32³ at each version
        for path in chunks:
            path.unlink()
        assert np.array_equal(_get(cached, root, "?gone=1"), voxels)
        assert not _get(uncached, root, "?gone=1").any()
        assert not _get(cached, child, "?gone=1").any()
