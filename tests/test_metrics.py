"""Observability: ``GET /metrics``, request ids and access logs (app.metrics, app.logs)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.logs import JSONFormatter
from app.metrics import InstrumentedStore
from app.server import create_app
from app.settings import Settings
from backends import ObjectInfo, StoreUnavailable
from backends.memory import MemoryStore

HEX32 = re.compile(r"[0-9a-f]{32}")
KEY_ROUTE = "/api/node/{uuid}/{dataname}/key/{key}"


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(), {"default": MemoryStore()})) as c:
        yield c


def samples(client: TestClient, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample named ``name`` in a scrape."""
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
        if s.name == name
    ]


def value(client: TestClient, name: str, **labels: str) -> float:
    return sum(v for got, v in samples(client, name) if labels.items() <= got.items())


def new_repo_with_kv(client: TestClient) -> str:
    root = client.post("/api/repos", json={}).json()["root"]
    r = client.post(f"/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "kv"})
    assert r.status_code == 200, r.text
    return root


def test_requests_are_counted_by_route_template_never_by_path(client: TestClient) -> None:
    root = new_repo_with_kv(client)
    for i in range(3):
        assert client.post(f"/api/node/{root}/kv/key/k{i}", content=b"v").status_code == 200
        assert client.get(f"/api/node/{root}/kv/key/k{i}").status_code == 200
    client.get(f"/api/node/{root}/kv/key/missing")  # 404
    client.get(f"/api/node/{root}/nosuchdata/key/a")  # unknown instance, 400
    client.get(f"/api/node/{root}/kv/not-an-endpoint/x")  # no such datatype route
    for i in range(20):
        client.get(f"/scanner/probe-{i}/{root}")  # random paths: one series, not twenty
    client.get(f"/api/node/{root}/status")

    counts = samples(client, "dvid_http_requests_total")
    by_key = {(s["method"], s["route"], s["status"]): v for s, v in counts}
    assert by_key["POST", KEY_ROUTE, "200"] == 3
    assert by_key["GET", KEY_ROUTE, "200"] == 3
    assert by_key["GET", KEY_ROUTE, "404"] == 1
    assert by_key["POST", "/api/repos", "200"] == 1
    assert by_key["POST", "/api/repo/{uuid}/instance", "200"] == 1
    assert by_key["GET", "/api/node/{uuid}/status", "200"] == 1
    # Never reached a datatype route: labelled by the template its path matches, or coarsely.
    assert by_key["GET", KEY_ROUTE, "400"] == 1
    assert by_key["GET", "/api/node/{uuid}/{dataname}/{path}", "400"] == 1
    assert by_key["GET", "unmatched", "400"] == 20
    routes = {s["route"] for s, _ in counts}
    assert not any(HEX32.search(r) or "probe" in r or r.endswith("/k0") for r in routes), routes
    assert value(client, "dvid_http_request_duration_seconds_count", route=KEY_ROUTE) == 8
    # /api/load still answers, from its own counters.
    assert client.get("/api/load").json()["PUT requests"] >= 5


def test_refused_requests_are_counted_with_their_template() -> None:
    app = create_app(Settings(max_body_bytes=8), {"default": MemoryStore()})
    with TestClient(app) as client:
        root = client.post("/api/repos", json={}).json()["root"]
        r = client.post(f"/api/node/{root}/kv/key/big", content=b"x" * 100)
        assert r.status_code == 413
        assert value(client, "dvid_http_requests_total", route=KEY_ROUTE, status="413") == 1


def test_store_operations_are_counted_and_timed(client: TestClient) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    store = services.stores["default"]
    assert isinstance(store, InstrumentedStore) and isinstance(store.inner, MemoryStore)
    assert services.catalog.store is store and services.inflight.store is store
    assert store.description == store.inner.description

    root = new_repo_with_kv(client)
    puts = value(client, "dvid_store_operations_total", store="default", op="put", outcome="ok")
    written = value(client, "dvid_store_bytes_total", store="default", direction="written")
    assert client.post(f"/api/node/{root}/kv/key/k", content=b"12345").status_code == 200
    after = value(client, "dvid_store_operations_total", store="default", op="put", outcome="ok")
    assert after > puts
    written_after = value(client, "dvid_store_bytes_total", store="default", direction="written")
    assert written_after >= written + 5
    assert value(client, "dvid_store_operations_total", op="get", outcome="ok") > 0
    assert value(client, "dvid_store_operations_total", op="list") > 0
    assert value(client, "dvid_store_operation_duration_seconds_count", op="put") >= after


def test_cache_hits_and_misses_are_exposed(client: TestClient) -> None:
    root = new_repo_with_kv(client)
    client.post(f"/api/node/{root}/kv/key/k", content=b"cached")
    assert client.post(f"/api/node/{root}/commit", json={}).status_code == 200
    for _ in range(3):  # answers at a locked node named by UUID are kept
        assert client.get(f"/api/node/{root}/kv/key/k").content == b"cached"
    for _ in range(3):  # by prefix (not kept as answers), the node's values are cached
        assert client.get(f"/api/node/{root[:8]}/kv/key/k").content == b"cached"
    assert value(client, "dvid_cache_hits_total", cache="answers") == 2
    for cache in ("value", "index", "bitmap", "answers"):
        assert [s for s, _ in samples(client, "dvid_cache_hit_ratio") if s["cache"] == cache]
        assert [s for s, _ in samples(client, "dvid_cache_misses_total") if s["cache"] == cache]
    assert value(client, "dvid_cache_hits_total", cache="value") >= 2
    assert value(client, "dvid_cache_misses_total", cache="value") >= 1
    assert 0 < value(client, "dvid_cache_hit_ratio", cache="value") < 1


def test_each_app_has_its_own_registry() -> None:
    with (
        TestClient(create_app(Settings(), {"default": MemoryStore()})) as one,
        TestClient(create_app(Settings(), {"default": MemoryStore()})) as two,
    ):
        for _ in range(3):
            one.get("/api/heartbeat")
        assert value(one, "dvid_http_requests_total", route="/api/heartbeat") == 3
        assert value(two, "dvid_http_requests_total", route="/api/heartbeat") == 0


def test_request_ids_are_echoed_or_made(client: TestClient) -> None:
    assert (
        client.get("/api/heartbeat", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    made = {client.get("/api/heartbeat").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3 and all(HEX32.fullmatch(m) for m in made)
    # Ids that could forge log lines or bloat them are replaced.
    for bad in ("has space", "x" * 200, "new\tline"):
        echoed = client.get("/api/heartbeat", headers={"X-Request-Id": bad}).headers
        assert HEX32.fullmatch(echoed["x-request-id"])
    # Errors carry the id too.
    r = client.get("/no/such/endpoint", headers={"X-Request-Id": "err-1"})
    assert r.status_code == 400 and r.headers["x-request-id"] == "err-1"


class FlakyStore(MemoryStore):
    """Listing fails as an unavailable bucket would, logging from the worker thread."""

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        if prefix.startswith("meta/repos"):
            logging.getLogger("tests.flaky").warning("listing failed")
            raise StoreUnavailable("bucket is down")
        return super().list(prefix, start_after=start_after)


def test_log_lines_carry_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Settings(), {"default": FlakyStore()})
    with TestClient(app) as client, caplog.at_level(logging.INFO):
        r = client.get("/api/repos/info", headers={"X-Request-Id": "trace-42"})
        assert r.status_code == 503
        client.get("/api/heartbeat", headers={"X-Request-Id": "other"})
    mine = [rec for rec in caplog.records if getattr(rec, "request_id", None) == "trace-42"]
    messages = {rec.name: rec.getMessage() for rec in mine}
    # Logged in the endpoint's worker thread, by the error handler, and the access line.
    assert messages["tests.flaky"] == "listing failed"
    assert messages["dvid_cloud"] == "store unavailable"
    access = next(rec for rec in mine if rec.name == "dvid_cloud.access")
    assert access.getMessage() == "request"
    assert (access.method, access.path, access.status) == ("GET", "/api/repos/info", 503)
    assert access.route == "/api/repos/info" and isinstance(access.duration_ms, float)
    line = json.loads(JSONFormatter().format(access))
    assert line["request_id"] == "trace-42" and line["status"] == 503
    # Outside requests, records carry no id.
    logging.getLogger("tests.outside").warning("between requests")
    assert not hasattr(caplog.records[-1], "request_id")
