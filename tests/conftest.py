"""Shared fixtures: a dvid-cloud app on each backend, driven through its HTTP API."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

import app.server as server_module
from app.api.instances import InstanceDispatcher
from app.datatypes import load_all
from app.server import create_app
from app.settings import Settings
from backends import ObjectStore
from backends.local import LocalStore
from backends.memory import MemoryStore
from tests.fixtures_stores import (
    gcs_endpoint,
    gcs_env,
    make_gcs_store,
    make_s3_store,
    new_bucket_name,
    s3_endpoint,
    s3_env,
)

__all__ = ["gcs_endpoint", "gcs_env", "s3_endpoint", "s3_env"]

BACKENDS = ["memory", "local", "s3", "gcs"]

# Servers the tests start run one process each unless a test asks for more (serve's
# default is one per core): the suite runs many servers at once on two cores.
os.environ.setdefault("DVID_CLOUD_WORKERS", "1")


_dispatchers: dict[tuple[object, ...], InstanceDispatcher] = {}
_dispatchers_lock = threading.Lock()


def _shared_dispatcher(build_app: Callable[[APIRouter], FastAPI]) -> InstanceDispatcher:
    """One :class:`InstanceDispatcher` per set of registered datatypes, per test process.

    A served process builds its app once; the suite builds one per test (and more for
    restarts and replicas), and building the datatypes' sub-applications is almost all of
    ``create_app``'s cost (FastAPI analyses every route's signature: about 0.7 s of CPU per
    app, 20 minutes over the suite). The dispatcher holds only those sub-applications:
    per-app state (services, settings, stores) is read from the request scope, so sharing
    it changes no behaviour. A plugin that registers a new datatype gets a new one.
    """
    key = (build_app, *load_all().items())
    with _dispatchers_lock:
        dispatcher = _dispatchers.get(key)
        if dispatcher is None:
            dispatcher = _dispatchers[key] = InstanceDispatcher(build_app)
    return dispatcher


@pytest.fixture(scope="session", autouse=True)
def _share_datatype_apps() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(server_module, "InstanceDispatcher", _shared_dispatcher)
        yield


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[], ObjectStore]:
    """Opens the test's store; every call opens the same data, as a restarted server or
    another replica would (a new client on the same folder or bucket)."""
    if backend == "memory":
        shared = MemoryStore()
        return lambda: shared
    if backend == "local":
        return lambda: LocalStore(tmp_path / "store")
    bucket = new_bucket_name()
    # tensorstore (chunk arrays) finds the fake servers and credentials through env vars.
    request.getfixturevalue(f"{backend}_env")
    if backend == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        make_s3_store(endpoint, bucket=bucket).client.create_bucket(Bucket=bucket)
        return lambda: make_s3_store(endpoint, bucket=bucket, prefix="dvid")
    endpoint = request.getfixturevalue("gcs_endpoint")
    make_gcs_store(endpoint, bucket=bucket).client.create_bucket(bucket)
    return lambda: make_gcs_store(endpoint, bucket=bucket, prefix="dvid")


@pytest.fixture
def make_client(make_store: Callable[[], ObjectStore]) -> Iterator[Callable[..., TestClient]]:
    """Builds a fresh server process-equivalent on the same store (a restart or a replica)."""
    clients: list[TestClient] = []

    def make(**settings: object) -> TestClient:
        app = create_app(Settings(**settings), {"default": make_store()})
        client = TestClient(app)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


class Api:
    """Terse helpers for the calls most tests make; every helper asserts success."""

    def __init__(self, client: TestClient) -> None:
        self.c = client

    def new_repo(self, **body: str) -> str:
        r = self.c.post("/api/repos", json=body)
        assert r.status_code == 200, r.text
        return r.json()["root"]

    def new_instance(self, uuid: str, typename: str, name: str, **settings: str) -> None:
        r = self.c.post(
            f"/api/repo/{uuid}/instance", json={"typename": typename, "dataname": name, **settings}
        )
        assert r.status_code == 200, r.text

    def commit(self, uuid: str, note: str = "") -> None:
        r = self.c.post(f"/api/node/{uuid}/commit", json={"note": note})
        assert r.status_code == 200, r.text

    def newversion(self, uuid: str, /, **body: str) -> str:
        r = self.c.post(f"/api/node/{uuid}/newversion", json=body)
        assert r.status_code == 200, r.text
        return r.json()["child"]

    def branch(self, uuid: str, name: str, /, **body: str) -> str:
        r = self.c.post(f"/api/node/{uuid}/branch", json={"branch": name, **body})
        assert r.status_code == 200, r.text
        return r.json()["child"]

    def merge(self, uuid: str, parents: list[str], note: str = "") -> str:
        body = {"mergeType": "conflict-free", "parents": parents, "note": note}
        r = self.c.post(f"/api/repo/{uuid}/merge", json=body)
        assert r.status_code == 200, r.text
        return r.json()["child"]

    def put(self, uuid: str, data: str, key: str, value: bytes) -> None:
        r = self.c.post(f"/api/node/{uuid}/{data}/key/{key}", content=value)
        assert r.status_code == 200, r.text

    def get(self, uuid: str, data: str, key: str) -> bytes | None:
        """The value, or None on 404."""
        r = self.c.get(f"/api/node/{uuid}/{data}/key/{key}")
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        return r.content

    def delete(self, uuid: str, data: str, key: str) -> None:
        r = self.c.delete(f"/api/node/{uuid}/{data}/key/{key}")
        assert r.status_code == 200, r.text

    def keys(self, uuid: str, data: str) -> list[str]:
        r = self.c.get(f"/api/node/{uuid}/{data}/keys")
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def api(client: TestClient) -> Api:
    return Api(client)


@pytest.fixture
def mem() -> Iterator[Api]:
    """An :class:`Api` on an app over a fresh memory store, for cases that are not about
    the backend."""
    with TestClient(create_app(Settings(), {"default": MemoryStore()})) as c:
        yield Api(c)
