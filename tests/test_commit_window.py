"""Reads between a commit's lock and its answer are not kept as final.

A commit locks the node, then waits for writes that began before the lock (app/inflight.py)
and only then answers. A read at the node meanwhile sees it locked, but its voxels may
still change: what such a read found must not be kept as the locked version's answer (an
``ETag``, ``Cache-Control: immutable``, the kept-answer cache) or as its decoded chunks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from fastapi.testclient import TestClient

from app.repo import Repo
from app.server import create_app
from app.settings import Settings
from backends.memory import MemoryStore
from tests import live_http as live
from tests.dvid_process import DvidServer
from tests.fixtures_stores import isolated_server_env

EDGE = 32


def _raw(url: str, uuid: str) -> str:
    return f"{url}/api/node/{uuid}/grayscale/raw/0_1_2/{EDGE}_{EDGE}_{EDGE}/0_0_0"


def _ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code == 200, response.text
    return response


def test_a_read_during_a_commits_wait_is_not_kept_as_final(tmp_path: Path) -> None:
    env = {**isolated_server_env(tmp_path), "DVID_CLOUD_WORKERS": "1"}
    with DvidServer(tmp_path / "server.log", env, data_dir=tmp_path / "data") as server:
        url = server.url
        root = _ok(live.post(f"{url}/api/repos", json={"alias": "window"})).json()["root"]
        _ok(
            live.post(
                f"{url}/api/repo/{root}/instance",
                json={"typename": "uint8blk", "dataname": "grayscale", "BlockSize": "32,32,32"},
            )
        )
        old = np.full((EDGE,) * 3, 1, np.uint8).tobytes()
        new = np.full((EDGE,) * 3, 2, np.uint8).tobytes()
        _ok(live.post(_raw(url, root), content=old))
        release = threading.Event()

        def slow_body() -> Iterator[bytes]:
            yield new[: len(new) // 2]
            release.wait(20)
            yield new[len(new) // 2 :]

        written: list[httpx.Response] = []
        committed: list[httpx.Response] = []
        writer = threading.Thread(
            target=lambda: written.append(live.post(_raw(url, root), content=slow_body()))
        )
        committer = threading.Thread(
            target=lambda: committed.append(live.post(f"{url}/api/node/{root}/commit", json={}))
        )
        writer.start()
        try:
            time.sleep(0.5)  # the server is reading the write's body
            committer.start()
            time.sleep(0.5)  # the commit has locked the node and waits for the write
            during = live.get(_raw(url, root))
            assert committed == [], "the commit answered while a write was in flight"
            assert during.status_code == 200, during.text
            assert "immutable" not in during.headers.get("Cache-Control", "")
        finally:
            release.set()
            writer.join(timeout=30)
            committer.join(timeout=30)
        assert committed and committed[0].status_code == 200, committed
        assert written and written[0].status_code == 200, written[0].text
        for query in ("", "?after=commit"):
            after = _ok(live.get(_raw(url, root) + query))
            assert after.content == new, f"GET{query or ''} at the committed node: old voxels"
            assert "immutable" in after.headers["Cache-Control"]


def test_a_commit_that_died_after_locking_is_finished_by_committing_again() -> None:
    """A commit killed between its lock and its end leaves the node locked but not final:
    its reads are not kept, no version may be built on it, and committing it again (a
    retry) finishes it instead of answering "already committed"."""
    services_app = create_app(Settings(), {"default": MemoryStore()})
    with TestClient(services_app) as client:
        root = client.post("/api/repos", json={"alias": "died"}).json()["root"]
        _ok(
            client.post(
                f"/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "kv"}
            )
        )
        _ok(client.post(f"/api/node/{root}/kv/key/k", content=b"v"))
        catalog = services_app.state.services.catalog

        def locked_by_a_commit_that_died(repo: Repo) -> None:
            repo.dag.node(root).locked = True
            repo.sealing.append(root)

        catalog.update(root, locked_by_a_commit_that_died)
        read = _ok(client.get(f"/api/node/{root}/kv/key/k"))
        assert read.content == b"v"
        assert "immutable" not in read.headers.get("Cache-Control", "")
        assert client.post(f"/api/node/{root}/kv/key/k", content=b"w").status_code == 400
        refused = client.post(f"/api/node/{root}/newversion", json={})
        assert refused.status_code == 400
        assert "has not finished" in refused.text
        _ok(client.post(f"/api/node/{root}/commit", json={"note": "again"}))
        assert client.post(f"/api/node/{root}/commit", json={}).status_code == 400
        read = _ok(client.get(f"/api/node/{root}/kv/key/k"))
        assert "immutable" in read.headers["Cache-Control"]
        _ok(client.post(f"/api/node/{root}/newversion", json={}))
