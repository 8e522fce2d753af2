"""Locked data is cached and never stale; a failing store gives 503, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.cache import LRUCache
from app.server import create_app
from app.settings import Settings
from backends import Blob, ObjectInfo, StoreUnavailable
from backends.memory import MemoryStore
from tests.conftest import Api


class FlakyStore(MemoryStore):
    """A memory store that can be told to fail every call, as an unreachable bucket does."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.gets = 0

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("connection refused (simulated)")

    def get(self, key: str) -> Blob | None:
        self._check()
        self.gets += 1
        return super().get(key)

    def put(self, key: str, data: bytes, **kwargs) -> str:
        self._check()
        return super().put(key, data, **kwargs)

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        self._check()
        return super().list(prefix, start_after=start_after)


@pytest.fixture
def flaky() -> FlakyStore:
    return FlakyStore()


@pytest.fixture
def api(flaky: FlakyStore) -> Api:
    return Api(TestClient(create_app(Settings(), {"default": flaky})))


def test_store_outage_is_503_and_writes_nothing(api: Api, flaky: FlakyStore) -> None:
    root = api.new_repo()
    api.new_instance(root, "keyvalue", "kv")
    api.put(root, "kv", "k", b"before")
    flaky.down = True
    for method, path, body in [
        ("GET", f"/api/node/{root}/kv/key/k", None),
        ("POST", f"/api/node/{root}/kv/key/k", b"during"),
        ("POST", f"/api/node/{root}/commit", b"{}"),
        ("GET", f"/api/repo/{root}/info", None),
        ("POST", "/api/repos", b"{}"),
    ]:
        r = api.c.request(method, path, content=body)
        assert r.status_code == 503, (path, r.text)
        assert "unavailable" in r.text
    flaky.down = False
    assert api.get(root, "kv", "k") == b"before"
    assert api.c.get(f"/api/node/{root}/status").json() == {"Locked": False}


def test_locked_values_are_cached_open_values_are_not(api: Api, flaky: FlakyStore) -> None:
    root = api.new_repo()
    api.new_instance(root, "keyvalue", "kv")
    api.put(root, "kv", "k", b"v1")
    # Open node: every read goes to the store, and sees the latest write.
    assert api.get(root, "kv", "k") == b"v1"
    api.put(root, "kv", "k", b"v2")
    assert api.get(root, "kv", "k") == b"v2"
    api.commit(root)
    child = api.newversion(root)
    assert api.get(child, "kv", "k") == b"v2"
    # The committed record is now served from memory: remove it from the store behind
    # the server's back and it still reads (a locked node's data can never change).
    record = next(i.key for i in flaky.list("data/") if f"/v/{root}/" in i.key)
    flaky.delete(record)
    assert api.get(child, "kv", "k") == b"v2"
    load = api.c.get("/api/load").json()
    assert load["cache hits"] >= 1 and load["cache bytes"] >= 2
    # A write at the open child shadows it immediately.
    api.put(child, "kv", "k", b"v3")
    assert api.get(child, "kv", "k") == b"v3"


def test_lru_cache_bounds_bytes() -> None:
    cache: LRUCache[bytes] = LRUCache(10, weigh=len)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # a is now the most recent
    cache.put("c", b"1234")  # evicts b
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    assert cache.weight == 8
    cache.put("huge", b"x" * 11)  # larger than the cache: not kept
    assert cache.get("huge") is None and len(cache) == 2
