"""The hot path of kept answers (app/immutable.py ``KeptAnswers``, app/api/instances.py
``OpenChecks``): a kept answer is sent by the outermost layers as the routed request
sent it (CORS, request ids, counts), never past authentication, and a read at an open
version takes its key only from a binding that started after it came."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app import catalog as catalog_module
from app.api.instances import OpenChecks
from app.datatypes.base import Data
from app.immutable import ImmutableAnswers, OpenRead
from app.server import create_app
from app.services import Services
from app.settings import Settings
from backends.memory import MemoryStore
from tests.test_auth import HS_SECRET, bearer, make_token

EDGE = 16
VOXELS = (np.arange(EDGE**3) % 251).astype(np.uint8).tobytes()
CHUNK = f"raw/0_1_2/{EDGE}_{EDGE}_{EDGE}/0_0_0"
#: Headers that differ between any two answers.
PER_REQUEST = {"x-request-id", "date"}


def _answers(client: TestClient) -> ImmutableAnswers:
    return cast(ImmutableAnswers, cast(FastAPI, client.app).state.services.answers)


def _repo(client: TestClient, **auth: str) -> tuple[str, str]:
    """A locked root holding one chunk of ``gray``, and an open child."""
    root = client.post("/api/repos", json={}, headers=auth).json()["root"]
    body = {"typename": "uint8blk", "dataname": "gray", "BlockSize": f"{EDGE},{EDGE},{EDGE}"}
    assert client.post(f"/api/repo/{root}/instance", json=body, headers=auth).status_code == 200
    written = client.post(f"/api/node/{root}/gray/{CHUNK}", content=VOXELS, headers=auth)
    assert written.status_code == 200
    assert client.post(f"/api/node/{root}/commit", json={}, headers=auth).status_code == 200
    child = client.post(f"/api/node/{root}/newversion", json={}, headers=auth).json()["child"]
    return root, child


def _sent(response: httpx.Response) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in response.headers.multi_items() if k not in PER_REQUEST)


@pytest.mark.parametrize("version", ["committed", "open"])
@pytest.mark.parametrize("origin", [None, "https://viewer.example"], ids=["no origin", "origin"])
def test_a_kept_answer_is_sent_as_the_routed_one_was(version: str, origin: str | None) -> None:
    """Same status, headers (CORS ones included) and body as the routed request that kept
    it, with a request id of its own; counted for /api/load and the metrics alike."""
    with TestClient(create_app(Settings(), {"default": MemoryStore()})) as client:
        root, child = _repo(client)
        path = f"/api/node/{root if version == 'committed' else child}/gray/{CHUNK}"
        headers = {"Origin": origin} if origin else {}
        routed = client.get(path, headers=headers)
        assert routed.status_code == 200 and routed.content == VOXELS
        load = client.get("/api/load").json()
        hits = _answers(client).cache.hits
        kept = client.get(path, headers=headers)
        assert _answers(client).cache.hits == hits + 1
        assert kept.status_code == 200 and kept.content == VOXELS
        assert _sent(kept) == _sent(routed)
        assert kept.headers["x-request-id"] != routed.headers["x-request-id"]
        if origin:
            assert kept.headers["access-control-allow-origin"] == "*"
        else:
            assert "Origin" in kept.headers["vary"]
        counted = client.get("/api/load").json()
        assert counted["GET requests"] == load["GET requests"] + 2  # the kept one, /api/load
        assert counted["file bytes read"] >= load["file bytes read"] + len(VOXELS)


def test_kept_committed_answer_honours_if_none_match_and_head() -> None:
    with TestClient(create_app(Settings(), {"default": MemoryStore()})) as client:
        root, _ = _repo(client)
        path = f"/api/node/{root}/gray/{CHUNK}"
        etag = client.get(path).headers["etag"]
        hits = _answers(client).cache.hits
        again = client.get(path, headers={"If-None-Match": etag, "Origin": "https://a.example"})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag and again.headers["access-control-allow-origin"]
        head = client.head(path)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(VOXELS))
        assert _answers(client).cache.hits == hits + 2


def test_kept_answers_are_not_served_past_authentication() -> None:
    """With authentication required, a kept answer is looked up only once the caller may
    read: the same request without credentials is refused."""
    settings = Settings(auth_required=True, auth_jwt_key=HS_SECRET)
    with TestClient(create_app(settings, {"default": MemoryStore()})) as client:
        token = bearer(make_token(HS_SECRET, algorithm="HS256", dvid={"admin": True}))
        root, child = _repo(client, **token)
        for node in (root, child):
            path = f"/api/node/{node}/gray/{CHUNK}"
            assert client.get(path, headers=token).content == VOXELS
            hits = _answers(client).cache.hits
            assert client.get(path, headers=token).content == VOXELS
            assert _answers(client).cache.hits == hits + 1  # kept
            assert client.get(path).status_code == 401


class _Bound:
    """Stands for an instance bound by the ``n``-th binding."""

    def __init__(self, n: int) -> None:
        self.n = n

    def open_answers_key(self, route: str) -> str:
        return f"binding {self.n}"


class _GatedChecks(OpenChecks):
    """OpenChecks whose bindings wait until the test lets each one finish, and fail
    while ``failing`` is set."""

    def __init__(self) -> None:
        super().__init__(cast(Services, None))
        self.started = 0
        self.gates: list[threading.Event] = []
        self.failing = False

    def _bind(self, ref: str, dataname: str) -> Data:
        gate = threading.Event()
        self.gates.append(gate)
        self.started += 1
        n = self.started
        gate.wait(10)
        if self.failing:
            raise RuntimeError(f"binding {n} failed")
        return cast(Data, _Bound(n))


def test_open_checks_never_share_a_binding_that_started_before_the_request() -> None:
    read = OpenRead("node", "gray", CHUNK)

    async def scenario() -> None:
        checks = _GatedChecks()

        async def until(condition: Any) -> None:
            for _ in range(1000):
                if condition():
                    return
                await asyncio.sleep(0.005)
            raise AssertionError("timed out")

        first = asyncio.create_task(checks(read))
        await until(lambda: checks.started == 1)
        # Came while binding 1 runs: they wait for binding 2, and share it.
        second, third = asyncio.create_task(checks(read)), asyncio.create_task(checks(read))
        await asyncio.sleep(0.02)
        assert checks.started == 1 and not second.done()
        checks.gates[0].set()
        assert await first == "binding 1"
        await until(lambda: checks.started == 2)
        fourth = asyncio.create_task(checks(read))  # came while binding 2 runs
        checks.gates[1].set()
        assert (await second, await third) == ("binding 2", "binding 2")
        await until(lambda: checks.started == 3)
        checks.gates[2].set()
        assert await fourth == "binding 3"
        # Another instance has bindings of its own.
        other = asyncio.create_task(checks(OpenRead("node", "other", CHUNK)))
        await until(lambda: checks.started == 4)
        checks.gates[3].set()
        assert await other == "binding 4"
        # A failure reaches every request that waited for that binding, and only them.
        checks.failing = True
        failed = asyncio.create_task(checks(read))
        await until(lambda: checks.started == 5)
        waiting = [asyncio.create_task(checks(read)) for _ in range(2)]
        checks.gates[4].set()
        with pytest.raises(RuntimeError, match="binding 5 failed"):
            await failed
        await until(lambda: checks.started == 6)
        checks.failing = False
        checks.gates[5].set()
        assert [await task for task in waiting] == ["binding 6", "binding 6"]

    asyncio.run(scenario())


def test_an_open_read_that_fails_to_bind_is_answered_by_its_route(monkeypatch: Any) -> None:
    """A failing check is no answer: the request goes on to its route, which answers
    (here, 503 for a store that fails), and a later one is kept again."""
    monkeypatch.setattr(catalog_module, "REPO_LEASE_SECONDS", 0.0)  # each read checks
    store = MemoryStore()
    with TestClient(create_app(Settings(), {"default": store})) as client:
        _, child = _repo(client)
        path = f"/api/node/{child}/gray/{CHUNK}"
        assert client.get(path).content == VOXELS
        services = cast(FastAPI, client.app).state.services
        inner = services.catalog.store

        class Down:
            def __getattr__(self, name: str) -> Any:
                from backends import StoreUnavailable

                def fail(*args: Any, **kwargs: Any) -> Any:
                    raise StoreUnavailable("the bucket is down")

                return fail if name.startswith("get") else getattr(inner, name)

        monkeypatch.setattr(services.catalog, "store", Down())
        assert client.get(path).status_code == 503
        monkeypatch.setattr(services.catalog, "store", inner)
        assert client.get(path).content == VOXELS
        hits = _answers(client).cache.hits
        assert client.get(path).content == VOXELS
        assert _answers(client).cache.hits == hits + 1
