"""The one conditional-update helper: edits apply on fresh data, lost responses settle by
reading back, and contention past the retry budget is a 503 with Retry-After."""

from __future__ import annotations

import threading

import orjson
import pytest

from app.api.instances import error_response
from app.errors import Contention
from app.storage import conditional
from backends import ObjectStore, PreconditionFailed, StoreUnavailable
from backends.memory import MemoryStore


def _increment(current: bytes | None) -> bytes:
    return str(int(current or b"0") + 1).encode()


def test_concurrent_increments_are_all_kept() -> None:
    store = MemoryStore()

    def work() -> None:
        for _ in range(50):
            conditional.update(store, "counter", _increment)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("counter").data == b"400"


def test_no_change_writes_nothing() -> None:
    store = MemoryStore()
    store.put("k", b"v")
    token = store.get("k").token
    assert conditional.update(store, "k", lambda current: None) == b"v"
    assert store.get("k").token == token


class LostResponses(MemoryStore):
    """Performs every put, then reports it failed (the response was lost)."""

    def put(self, key: str, data: bytes, **kw) -> str:  # type: ignore[override]
        super().put(key, data, **kw)
        raise StoreUnavailable("response lost")


def test_lost_response_is_settled_by_reading_back() -> None:
    store = LostResponses()
    assert conditional.update(store, "counter", _increment) == b"1"
    assert store.get("counter").data == b"1"  # applied once, not retried into 2


class AlwaysRaced(MemoryStore):
    """Every conditional put loses to a rival that wrote something else."""

    def put(self, key: str, data: bytes, **kw) -> str:  # type: ignore[override]
        super().put(key, str(int(data) + 1000).encode())
        raise PreconditionFailed("raced")


def test_contention_past_the_budget_is_503_with_retry_after(monkeypatch) -> None:
    monkeypatch.setattr(conditional, "MAX_ATTEMPTS", 5)
    monkeypatch.setattr(conditional, "MAX_DELAY", 0.001)
    store: ObjectStore = AlwaysRaced()
    with pytest.raises(Contention) as caught:
        conditional.update(store, "hot", _increment, what="the hot object")
    response = error_response(caught.value, "/api/x")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert b"the hot object is too busy" in response.body


class LandedThenRefused(MemoryStore):
    """Every put of a new object lands, then reports 412, as boto3's retry of a put whose
    response was lost does on S3 (the object now exists)."""

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False
    ) -> str:
        token = super().put(key, data, if_match=if_match, if_absent=if_absent)
        if if_absent:
            raise PreconditionFailed(f"{key}: PreconditionFailed")
        return token


def test_new_repo_whose_put_response_was_lost_is_created() -> None:
    """POST /api/repos answered 400 "repo already exists" for its own repo."""
    from fastapi.testclient import TestClient

    from app.server import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(), {"default": LandedThenRefused()})) as client:
        r = client.post("/api/repos", json={"alias": "lost"})
        assert r.status_code == 200, r.text
        root = r.json()["root"]
        assert client.get(f"/api/repo/{root}/info").json()["Alias"] == "lost"


class OverwrittenAfterLostResponse(MemoryStore):
    """Once armed, the next put of a repo lands, a rival server's edit of the same repo
    lands after it, and the store client's retry of the put (its response was lost) is
    refused with 412: reading back finds the rival's bytes, not ours."""

    armed = False

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False
    ) -> str:
        token = super().put(key, data, if_match=if_match, if_absent=if_absent)
        if not (self.armed and key.startswith("meta/repos/")):
            return token
        self.armed = False
        rival = orjson.loads(data)
        rival["Description"] = "edited by a rival"
        super().put(key, orjson.dumps(rival), if_match=token)
        raise PreconditionFailed(f"{key}: PreconditionFailed")


def test_commit_whose_landed_write_was_overwritten_is_not_refused() -> None:
    """A commit answered 400 "already committed" for the lock it had just written: its
    write landed, a rival's followed, and the retry met its own effect (found by the
    store-fault suite)."""
    from fastapi.testclient import TestClient

    from app.server import create_app
    from app.settings import Settings

    store = OverwrittenAfterLostResponse()
    with TestClient(create_app(Settings(), {"default": store})) as client:
        root = client.post("/api/repos", json={"alias": "raced"}).json()["root"]
        store.armed = True
        r = client.post(f"/api/node/{root}/commit", json={"note": "done"})
        assert r.status_code == 200, r.text
        info = client.get(f"/api/repo/{root}/info").json()
        assert info["Description"] == "edited by a rival"
        assert info["DAG"]["Nodes"][root]["Locked"] is True
        assert info["DAG"]["Nodes"][root]["Note"] == "done"
