"""Repo leases (app/catalog.py, docs/format.md "Repo leases"): reads of data spare the
repo check, and are never stale where it matters.

Two replicas share one store. Tests that need a decisive lease stretch it to seconds, so
that a change which did not outlast the other replica's lease would be seen stale.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app import catalog as catalog_module
from app.api import instances
from app.catalog import Catalog
from app.repo import Repo
from backends.base import Blob, Unchanged
from tests.keyvalue_support import CallLog, ok, repo_with_keyvalue, two_replicas

LONG_LEASE = 3.0


def _repo_reads(store: CallLog) -> int:
    """Reads of repo objects since the last call."""
    found = sum(1 for key, _ in store.reads if key.startswith("meta/repos/"))
    store.reads.clear()
    return found


@pytest.fixture
def long_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_module, "REPO_LEASE_SECONDS", LONG_LEASE)


@pytest.fixture
def replicas() -> Iterator[tuple[CallLog, TestClient, TestClient]]:
    store = CallLog()
    with two_replicas(store) as (one, other):
        yield store, one, other


def _leased_key(one: TestClient) -> tuple[str, str]:
    """A repo with key ``k`` in instance ``kv``, read once by ``one`` (who now holds a
    lease of it): its root and the key's path."""
    root = repo_with_keyvalue(one)
    key = f"/api/node/{root}/kv/key/k"
    ok(one.post(key, content=b"v"))
    assert one.get(key).content == b"v"
    return root, key


def test_reads_within_the_lease_check_no_repo(
    replicas: tuple[CallLog, TestClient, TestClient], long_lease: None
) -> None:
    store, one, _ = replicas
    root, key = _leased_key(one)
    _repo_reads(store)
    for _ in range(5):
        assert one.get(key).content == b"v"
    assert _repo_reads(store) == 0
    # Routes that show the repo itself, and writes, check it every time.
    for _ in range(3):
        ok(one.get(f"/api/repo/{root}/info"))
    assert _repo_reads(store) == 3
    ok(one.post(key, content=b"w"))
    assert _repo_reads(store) >= 1


def test_a_read_after_the_lease_checks_again(
    replicas: tuple[CallLog, TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, one, _ = replicas
    monkeypatch.setattr(catalog_module, "REPO_LEASE_SECONDS", 0.0)
    _, key = _leased_key(one)
    _repo_reads(store)
    for _ in range(3):
        assert one.get(key).content == b"v"
    assert _repo_reads(store) == 3


class _CountedBindings(ThreadPoolExecutor):
    """The dispatcher's binding threads, counting the requests bound on them."""

    def __init__(self) -> None:
        super().__init__(4)
        self.bound = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.bound += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def bindings(monkeypatch: pytest.MonkeyPatch) -> Iterator[_CountedBindings]:
    counted = _CountedBindings()
    monkeypatch.setattr(instances, "_BINDING", counted)
    yield counted
    counted.shutdown()


def test_reads_within_the_lease_bind_without_a_thread(
    replicas: tuple[CallLog, TestClient, TestClient],
    long_lease: None,
    bindings: _CountedBindings,
) -> None:
    _, one, _ = replicas
    root, key = _leased_key(one)
    bindings.bound = 0
    for _ in range(3):
        assert one.get(key).content == b"v"
    assert bindings.bound == 0
    ok(one.post(key, content=b"w"))  # a write binds on a thread
    assert bindings.bound == 1
    # An instance that settles its journal before a read (a volume at an open node)
    # binds on a thread, lease or not.
    body = {"typename": "uint8blk", "dataname": "grey", "BlockSize": "32,32,32"}
    ok(one.post(f"/api/repo/{root}/instance", json=body))
    ok(one.get(f"/api/node/{root}/grey/info"))
    bindings.bound = 0
    ok(one.get(f"/api/node/{root}/grey/info"))
    assert bindings.bound == 1


def test_reads_after_the_lease_bind_on_a_thread(
    replicas: tuple[CallLog, TestClient, TestClient],
    monkeypatch: pytest.MonkeyPatch,
    bindings: _CountedBindings,
) -> None:
    _, one, _ = replicas
    monkeypatch.setattr(catalog_module, "REPO_LEASE_SECONDS", 0.0)
    _, key = _leased_key(one)
    bindings.bound = 0
    for _ in range(3):
        assert one.get(key).content == b"v"
    assert bindings.bound == 3


def test_another_replicas_deletion_and_changes_are_seen_at_once(
    replicas: tuple[CallLog, TestClient, TestClient], long_lease: None
) -> None:
    _, one, other = replicas
    root, key = _leased_key(one)
    tags = f"/api/node/{root}/kv/tags"
    ok(other.post(tags, json={"stage": "review"}))
    assert one.get(tags).json() == {"Tags": {"stage": "review"}}
    ok(other.delete(f"/api/repo/{root}/kv?imsure=true"))
    gone = one.get(key)
    assert gone.status_code == 400 and "kv" in gone.text


def test_what_the_lease_lacks_is_looked_up_afresh(
    replicas: tuple[CallLog, TestClient, TestClient], long_lease: None
) -> None:
    _, one, other = replicas
    root, _ = _leased_key(one)
    body = {"typename": "keyvalue", "dataname": "later"}
    ok(other.post(f"/api/repo/{root}/instance", json=body))
    ok(other.post(f"/api/node/{root}/later/key/a", content=b"new instance"))
    assert one.get(f"/api/node/{root}/later/key/a").content == b"new instance"
    ok(other.post(f"/api/node/{root}/commit", json={}))
    child = other.post(f"/api/node/{root}/newversion", json={}).json()["child"]
    ok(other.post(f"/api/node/{child}/kv/key/k", content=b"at child"))
    assert one.get(f"/api/node/{child}/kv/key/k").content == b"at child"


def test_another_replicas_commit_refuses_writes_at_once(
    replicas: tuple[CallLog, TestClient, TestClient], long_lease: None
) -> None:
    _, one, other = replicas
    root, key = _leased_key(one)
    ok(other.post(f"/api/node/{root}/commit", json={}))
    # A lease that still shows the node open reads it as open: the same value, kept
    # nowhere and not marked immutable.
    read = one.get(key)
    assert read.content == b"v"
    assert "immutable" not in read.headers.get("cache-control", "")
    assert one.post(key, content=b"late").status_code == 400
    assert one.get(f"/api/node/{root}/commit").json() == {"Locked": True}
    # Those checked the repo afresh: reads now take the lease that shows it locked.
    assert "immutable" in one.get(key).headers["cache-control"]


def test_a_replicas_own_commit_ends_its_lease(
    replicas: tuple[CallLog, TestClient, TestClient], long_lease: None
) -> None:
    _, one, _ = replicas
    root, key = _leased_key(one)
    ok(one.post(f"/api/node/{root}/commit", json={}))
    assert "immutable" in one.get(key).headers["cache-control"]


class _HeldRepoCheck(CallLog):
    """A store whose next conditional repo read, once armed, waits for a gate."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.started = threading.Event()
        self.gate = threading.Event()

    def get_if_changed(self, key: str, token: str) -> Blob | Unchanged | None:
        if self.armed and key.startswith("meta/repos/"):
            self.armed = False
            found = super().get_if_changed(key, token)  # what the repo was when it began
            self.started.set()
            assert self.gate.wait(10)
            return found
        return super().get_if_changed(key, token)


def test_a_check_begun_before_an_own_update_gives_no_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = _HeldRepoCheck()
    with two_replicas(store) as (one, _):
        root, _key = _leased_key(one)
    catalog = Catalog(store)
    monkeypatch.setattr(catalog_module, "REPO_LEASE_SECONDS", 0.0)
    catalog.resolve(root)  # knows the root, and its lease has run out already
    monkeypatch.setattr(catalog_module, "REPO_LEASE_SECONDS", LONG_LEASE)
    store.armed = True
    checking = threading.Thread(target=catalog.resolve, args=(root,))
    checking.start()
    assert store.started.wait(10)

    def note(repo: Repo) -> None:
        repo.dag.node(root).note = "updated while the check ran"

    catalog.update(root, note)
    store.gate.set()
    checking.join(10)
    _repo_reads(store)
    repo, _ = catalog.resolve(root, leased=True)
    assert _repo_reads(store) == 1
    assert repo.dag.node(root).note == "updated while the check ran"
