"""Reads ahead (app/storage/readahead.py): a keyvalue GET at an open node reads its own
record while its binding checks the repo, not after, and is as fresh as before.

Two apps on one store stand for two replicas with their own caches. The store records
which thread asked for which object: the dispatcher's threads read ahead
(``dvid-read-ahead``), the route's threadpool reads after the binding. Every read here
checks the repo, as one does whenever its repo lease has run out (app/catalog.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from app import catalog
from app.storage import keys, readahead
from backends import StoreUnavailable
from backends.base import Blob
from backends.memory import MemoryStore
from tests import keyvalue_support
from tests.keyvalue_support import (
    ok,
    open_child_inheriting,
    repo_with_keyvalue,
    two_replicas,
)

#: How long a held repo check waits for the read ahead before giving up (the test then
#: fails on the order it saw, not on the time it took).
HOLD_SECONDS = 10.0


class CallLog(keyvalue_support.CallLog):
    """A :class:`keyvalue_support.CallLog` that, inside :meth:`repo_checks_held`, makes a
    read of a repo record wait for a read of instance data to have started first."""

    def __init__(self) -> None:
        super().__init__()
        self.data_started = threading.Event()
        self.holding = False
        #: Per held repo check, whether a data read had started before it answered.
        self.overlapped: list[bool] = []

    def get(self, key: str) -> Blob | None:
        if key.startswith("data/"):
            self.data_started.set()
        elif self.holding and key.startswith("meta/repos/"):
            self.overlapped.append(self.data_started.wait(HOLD_SECONDS))
        return super().get(key)

    @contextlib.contextmanager
    def repo_checks_held(self) -> Iterator[None]:
        self.data_started.clear()
        self.overlapped.clear()
        self.holding = True
        try:
            yield
        finally:
            self.holding = False


@pytest.fixture(autouse=True)
def no_repo_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "REPO_LEASE_SECONDS", 0.0)


@pytest.fixture
def replicas() -> Iterator[tuple[CallLog, TestClient, TestClient]]:
    store = CallLog()
    with two_replicas(store) as (one, other):
        yield store, one, other


def _key_read_once(client: TestClient, value: bytes) -> tuple[str, str]:
    """A repo whose open root holds key ``k`` = ``value``, read once through ``client``
    (which then holds a binding of kv): the root and the key's URL."""
    root = repo_with_keyvalue(client)
    key = f"/api/node/{root}/kv/key/k"
    ok(client.post(key, content=value))
    assert client.get(key).content == value
    return root, key


def _read_ahead(reads: list[tuple[str, str]]) -> bool:
    """Whether every one of ``reads`` was made ahead, on a thread that reads ahead."""
    return all(thread.startswith("dvid-read-ahead") for _, thread in reads)


def test_own_record_is_read_while_the_repo_is_checked(
    replicas: tuple[CallLog, TestClient, TestClient],
) -> None:
    store, one, _ = replicas
    root, key = _key_read_once(one, b"value")  # one now holds a binding of kv

    store.data_reads()
    with store.repo_checks_held():
        assert one.get(key).content == b"value"
        assert one.head(key).status_code == 200
    # Each request's repo check answered only once its own-record read had started...
    assert store.overlapped == [True, True]
    # ...and the route took that read rather than making a second one.
    reads = store.data_reads_by_thread()
    assert len(reads) == 2 and all(k.endswith(f"/v/{root}/{b'k'.hex()}") for k, _ in reads)
    assert _read_ahead(reads), reads


def test_open_child_reads_its_own_record_ahead(
    replicas: tuple[CallLog, TestClient, TestClient],
) -> None:
    store, one, _ = replicas
    _, child = open_child_inheriting(one)
    key = f"/api/node/{child}/kv/key/k"
    assert one.get(key).content == b"at root"  # loads the root's index and value once

    store.data_reads()
    with store.repo_checks_held():
        assert one.get(key).content == b"at root"
    assert store.overlapped == [True]
    reads = store.data_reads_by_thread()
    assert len(reads) == 1 and f"/v/{child}/" in reads[0][0], reads  # the child's probe
    assert _read_ahead(reads), reads


def test_first_request_and_writes_read_nothing_ahead(
    replicas: tuple[CallLog, TestClient, TestClient],
) -> None:
    store, one, other = replicas
    root = repo_with_keyvalue(other)
    key = f"/api/node/{root}/kv/key/k"
    ok(other.post(key, content=b"value"))
    store.data_reads()
    assert one.get(key).content == b"value"  # no earlier binding here: read after it
    reads = store.data_reads_by_thread()
    assert len(reads) == 1 and not _read_ahead(reads), reads
    ok(one.post(key, content=b"new"))  # a write reads nothing ahead
    assert store.data_reads() == []


def test_other_replicas_writes_deletes_and_commits_are_seen(
    replicas: tuple[CallLog, TestClient, TestClient],
) -> None:
    _, one, other = replicas
    root, key = _key_read_once(one, b"first")

    ok(other.post(key, content=b"second"))  # acknowledged before one's next request...
    assert one.get(key).content == b"second"  # ...which reads ahead, and sees it
    ok(other.delete(key))
    assert one.get(key).status_code == 404
    ok(other.post(key, content=b"third"))
    assert one.get(key).content == b"third"

    ok(other.post(f"/api/node/{root}/commit", json={}))
    assert one.get(key).content == b"third"  # locked now: served from the ancestors' path
    assert one.post(key, content=b"late").status_code == 400
    assert one.get(key).content == b"third"


def test_deleted_instance_is_gone_whatever_was_read_ahead(
    replicas: tuple[CallLog, TestClient, TestClient],
) -> None:
    store, one, other = replicas
    root, key = _key_read_once(one, b"old instance")

    # Deleted by the other replica, its records put back as if their removal were still
    # under way: a read ahead of the old path finds the value, yet kv is gone.
    data_uuid = one.get(f"/api/node/{root}/kv/info").json()["Base"]["DataUUID"]
    ok(other.delete(f"/api/repo/{root}/kv", params={"imsure": "true"}))
    record = f"{keys.instance_root(data_uuid)}/v/{root}/{b'k'.hex()}"
    store.put(record, b"\x01old instance")
    store.data_reads()
    gone = one.get(key)
    assert gone.status_code in (400, 404) and b"old instance" not in gone.content
    assert store.data_reads() == [record]  # read ahead, and dropped
    assert one.get(key).status_code in (400, 404)  # nothing is read ahead any more
    assert store.data_reads() == []

    # Made again under the same name: new records, and the old value is not served.
    ok(other.post(f"/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "kv"}))
    assert one.get(key).status_code == 404
    ok(other.post(key, content=b"new instance"))
    assert one.get(key).content == b"new instance"


def test_concurrent_reads_each_see_their_own_answer(
    replicas: tuple[CallLog, TestClient, TestClient],
) -> None:
    """Requests for different keys at once: each takes only its own read ahead."""
    _, one, _ = replicas
    root = repo_with_keyvalue(one)
    for i in range(16):
        ok(one.post(f"/api/node/{root}/kv/key/k{i}", content=f"v{i}".encode()))
    assert one.get(f"/api/node/{root}/kv/key/k0").content == b"v0"

    def read(i: int) -> bytes:
        return one.get(f"/api/node/{root}/kv/key/k{i % 16}").content

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(read, range(64)))
    assert answers == [f"v{i % 16}".encode() for i in range(64)]


# --- the module itself ---------------------------------------------------------------------


class Failing(MemoryStore):
    """Fails its first ``failures`` reads."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.gets = 0

    def get(self, key: str) -> Blob | None:
        self.gets += 1
        if self.gets <= self.failures:
            raise StoreUnavailable("down")
        return super().get(key)


def test_a_read_ahead_is_taken_once_and_only_from_its_store() -> None:
    store, elsewhere = Failing(0), MemoryStore()
    store.put("a", b"1")
    elsewhere.put("a", b"other")
    ahead = readahead.ReadAhead()
    with ThreadPoolExecutor(1) as pool:
        ahead.start(pool, store, ["a"])
        with readahead.scope(ahead):
            other = readahead.get(elsewhere, "a")  # same path, another store: its own read
            assert other is not None and other.data == b"other"
            assert store.gets == 1 and len(ahead) == 1
            store.put("a", b"2")
            first = readahead.get(store, "a")
            assert first is not None and first.data == b"1"  # the read ahead, waited for
            second = readahead.get(store, "a")
            assert second is not None and second.data == b"2"  # taken once: read afresh
            assert store.gets == 2
        with readahead.scope(None):
            assert readahead.get(store, "missing") is None
        assert store.gets == 3


def test_a_failed_read_ahead_is_read_again() -> None:
    store = Failing(1)
    store.put("a", b"1")
    ahead = readahead.ReadAhead()
    with ThreadPoolExecutor(1) as pool:
        ahead.start(pool, store, ["a"])
        with readahead.scope(ahead):
            blob = readahead.get(store, "a")
    assert blob is not None and blob.data == b"1" and store.gets == 2


def test_no_scope_reads_directly() -> None:
    store = MemoryStore()
    store.put("a", b"1")
    blob = readahead.get(store, "a")
    assert blob is not None and blob.data == b"1"
