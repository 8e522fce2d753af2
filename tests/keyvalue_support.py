"""Steps the keyvalue tests that count store calls share."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from fastapi.testclient import TestClient

from app.server import create_app
from app.settings import Settings
from backends import ObjectStore
from backends.base import Blob
from backends.memory import MemoryStore


class CallLog(MemoryStore):
    """A memory store that records, per read, the key and the thread that asked (its
    conditional reads are gets too: the base class's)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, str]] = []

    def get(self, key: str) -> Blob | None:
        self.reads.append((key, threading.current_thread().name))
        return super().get(key)

    def data_reads_by_thread(self) -> list[tuple[str, str]]:
        """The reads of instance data since the last call (repo checks left out), each
        with the name of the thread that made it."""
        found = [(key, thread) for key, thread in self.reads if key.startswith("data/")]
        self.reads.clear()
        return found

    def data_reads(self) -> list[str]:
        """The keys of :meth:`data_reads_by_thread`."""
        return [key for key, _ in self.data_reads_by_thread()]


def ok(response: object) -> None:
    assert getattr(response, "status_code", None) == 200, getattr(response, "text", response)


def repo_with_keyvalue(client: TestClient) -> str:
    """A new repo's root, holding a keyvalue instance ``kv``."""
    root = client.post("/api/repos", json={}).json()["root"]
    ok(client.post(f"/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "kv"}))
    return str(root)


def open_child_inheriting(client: TestClient) -> tuple[str, str]:
    """A repo whose committed root holds key ``k`` (``b"at root"``), and its open child:
    their UUIDs."""
    root = repo_with_keyvalue(client)
    ok(client.post(f"/api/node/{root}/kv/key/k", content=b"at root"))
    ok(client.post(f"/api/node/{root}/commit", json={}))
    return root, str(client.post(f"/api/node/{root}/newversion", json={}).json()["child"])


@contextlib.contextmanager
def two_replicas(store: ObjectStore) -> Iterator[tuple[TestClient, TestClient]]:
    """Two apps on ``store``: two replicas, each with its own caches."""
    with (
        TestClient(create_app(Settings(), {"default": store})) as one,
        TestClient(create_app(Settings(), {"default": store})) as other,
    ):
        yield one, other
