"""Repo checks shared by concurrent requests (app.catalog.SharedChecks) are never stale.

A request needing a repo whose check is in flight waits for the next check rather than
taking the running one's answer, which may predate a write acknowledged before the
request came. Two replicas on one store (apps with their own catalogs) check that
another replica's write, commit and instance deletion are seen on the next request
while the first replica's readers keep its checks of that repo always in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.catalog import SharedChecks
from app.server import create_app
from app.settings import Settings
from backends.base import Blob
from backends.memory import MemoryStore


def _wait(condition: object, what: str) -> None:
    for _ in range(2000):
        if callable(condition) and condition():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


class _Gated:
    """Checks that each hold until their gate opens, numbered by start."""

    def __init__(self) -> None:
        self.gates: list[threading.Event] = []
        self.failing = False

    def __call__(self) -> str:
        gate = threading.Event()
        self.gates.append(gate)
        n = len(self.gates)
        assert gate.wait(10)
        if self.failing:
            raise RuntimeError(f"check {n} failed")
        return f"check {n}"


def _call(checks: SharedChecks[str], key: str, check: _Gated) -> tuple[threading.Thread, list]:
    """``checks.run`` on a thread; the list gets its answer or error."""
    out: list = []

    def run() -> None:
        try:
            out.append(checks.run(key, check))
        except RuntimeError as error:
            out.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_a_caller_never_gets_a_check_that_started_before_it_came() -> None:
    checks: SharedChecks[str] = SharedChecks()
    gated = _Gated()
    first, got_first = _call(checks, "r", gated)
    _wait(lambda: len(gated.gates) == 1, "check 1")
    # Came while check 1 runs: they wait for check 2, and share it.
    second, got_second = _call(checks, "r", gated)
    third, got_third = _call(checks, "r", gated)
    time.sleep(0.05)
    assert len(gated.gates) == 1 and not got_second and not got_third
    gated.gates[0].set()
    first.join(10)
    assert got_first == ["check 1"]
    _wait(lambda: len(gated.gates) == 2, "check 2")
    fourth, got_fourth = _call(checks, "r", gated)  # came while check 2 runs
    time.sleep(0.05)
    gated.gates[1].set()
    second.join(10)
    third.join(10)
    assert got_second == got_third == ["check 2"]
    _wait(lambda: len(gated.gates) == 3, "check 3")
    gated.gates[2].set()
    fourth.join(10)
    assert got_fourth == ["check 3"]
    # Another key has checks of its own.
    other, got_other = _call(checks, "s", gated)
    _wait(lambda: len(gated.gates) == 4, "check 4")
    gated.gates[3].set()
    other.join(10)
    assert got_other == ["check 4"]
    # A failure reaches the callers that waited for that check, and only them.
    gated.failing = True
    failed, got_failed = _call(checks, "r", gated)
    _wait(lambda: len(gated.gates) == 5, "check 5")
    waiting = [_call(checks, "r", gated) for _ in range(2)]
    time.sleep(0.05)
    gated.gates[4].set()
    failed.join(10)
    assert [str(e) for e in got_failed] == ["check 5 failed"]
    _wait(lambda: len(gated.gates) == 6, "check 6")
    gated.failing = False
    gated.gates[5].set()
    for thread, _ in waiting:
        thread.join(10)
    assert [out for _, out in waiting] == [["check 6"], ["check 6"]]


class _SlowRepoReads(MemoryStore):
    """Repo reads whose answers take a while to arrive, so that a check is nearly always
    in flight, holding what the repo was when it started."""

    def get(self, key: str) -> Blob | None:
        found = super().get(key)
        if key.startswith("meta/repos/"):
            time.sleep(0.01)
        return found


@pytest.fixture
def replicas() -> Iterator[tuple[TestClient, TestClient]]:
    store = _SlowRepoReads()
    with (
        TestClient(create_app(Settings(), {"default": store})) as one,
        TestClient(create_app(Settings(), {"default": store})) as other,
    ):
        yield one, other


def test_another_replicas_changes_are_seen_while_checks_are_shared(
    replicas: tuple[TestClient, TestClient],
) -> None:
    one, other = replicas
    root = one.post("/api/repos", json={}).json()["root"]
    body = {"typename": "keyvalue", "dataname": "kv"}
    assert one.post(f"/api/repo/{root}/instance", json=body).status_code == 200
    key = f"/api/node/{root}/kv/key/k"
    assert one.post(key, content=b"v").status_code == 200
    assert isinstance(one.app, FastAPI)
    catalog = one.app.state.services.catalog
    stop = threading.Event()

    def read() -> None:  # replica one's other requests: its repo check always running
        while not stop.is_set():
            catalog.repo(root)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in readers:
        thread.start()
    try:
        for n in range(5):
            tags = {"round": str(n)}
            assert other.post(f"/api/node/{root}/kv/tags", json=tags).status_code == 200
            assert one.get(f"/api/node/{root}/kv/tags").json() == {"Tags": tags}
        assert other.post(f"/api/node/{root}/commit", json={}).status_code == 200
        assert one.post(key, content=b"w").status_code == 400  # locked, seen at once
        assert other.delete(f"/api/repo/{root}/kv?imsure=true").status_code == 200
        assert one.get(key).status_code == 400  # no instance kv any more
    finally:
        stop.set()
        for thread in readers:
            thread.join(10)
