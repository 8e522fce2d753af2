"""What a keyvalue GET asks of the store, and that it is never stale.

At an open node a read probes the node's own record (one get: the value, or a tombstone)
and only without one falls back to the ancestors' records, which are immutable and kept
in memory once read. So the keyed layer costs one store call per read of a key the node
wrote (issue 15), and no cache of it can hide another replica's write or delete: two
apps on one store (replicas with their own caches) check that each sees the other's
change on its next request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.keyvalue_support import (
    CallLog,
    ok,
    open_child_inheriting,
    repo_with_keyvalue,
    two_replicas,
)


@pytest.fixture
def replicas() -> Iterator[tuple[CallLog, TestClient, TestClient]]:
    store = CallLog()
    with two_replicas(store) as (one, other):
        yield store, one, other


def test_open_node_read_is_one_store_call_and_never_stale(
    replicas: tuple[CallLog, TestClient, TestClient],
) -> None:
    store, one, other = replicas
    root = repo_with_keyvalue(one)
    key = f"/api/node/{root}/kv/key/k"
    ok(one.post(key, content=b"first"))
    assert one.get(key).content == b"first"  # warm: the repo is known now

    store.data_reads()
    assert one.get(key).content == b"first"
    reads = store.data_reads()
    assert len(reads) == 1 and reads[0].endswith(f"/v/{root}/{b'k'.hex()}"), reads

    ok(other.post(key, content=b"second"))  # another replica's write...
    assert one.get(key).content == b"second"  # ...is seen on the next request
    ok(other.delete(key))
    store.data_reads()
    assert one.get(key).status_code == 404  # a tombstone: still one call
    assert len(store.data_reads()) == 1


def test_open_child_inherits_through_cached_indices_and_sees_new_writes(
    replicas: tuple[CallLog, TestClient, TestClient],
) -> None:
    store, one, other = replicas
    root, child = open_child_inheriting(one)
    key = f"/api/node/{child}/kv/key/k"
    assert one.get(key).content == b"at root"  # loads the root's index and value once

    store.data_reads()
    assert one.get(key).content == b"at root"
    reads = store.data_reads()
    assert len(reads) == 1 and f"/v/{child}/" in reads[0], reads  # only the child's probe

    ok(other.post(key, content=b"at child"))
    assert one.get(key).content == b"at child"
    ok(other.delete(key))
    assert one.get(key).status_code == 404  # the child's tombstone hides the root's value
    assert one.get(f"/api/node/{root}/kv/key/k").content == b"at root"
