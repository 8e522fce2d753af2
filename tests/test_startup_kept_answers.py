"""The first answers a new server keeps (app.immutable) are labelled for the metrics from
their own earlier, routed request: labelling them by matching the OpenAPI templates
would first build the document of every datatype, seconds after start-up."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.server import create_app
from app.settings import Settings
from backends.memory import MemoryStore
from tests.test_metrics import samples, value


def test_kept_answers_take_the_template_of_their_routed_request() -> None:
    app = create_app(Settings(), {"default": MemoryStore()})
    with TestClient(app) as client:
        root = client.post("/api/repos", json={}).json()["root"]
        body = {"typename": "uint8blk", "dataname": "g", "BlockSize": "32,32,32"}
        assert client.post(f"/api/repo/{root}/instance", json=body).status_code == 200
        chunk = f"/api/node/{root}/g/raw/0_1_2/32_32_32/0_0_0"
        voxels = bytes(range(256)) * 128
        assert client.post(chunk, content=voxels).status_code == 200
        assert client.post(f"/api/node/{root}/commit", json={}).status_code == 200
        for _ in range(3):  # the first is routed and kept; the others are answered kept
            assert client.get(chunk).content == voxels

        reads = {
            s["route"]: v
            for s, v in samples(client, "dvid_http_requests_total")
            if s["method"] == "GET" and s["status"] == "200" and "/raw/" in s["route"]
        }
        assert list(reads.values()) == [3], reads
        assert value(client, "dvid_cache_hits_total", cache="answers") == 2
        assert app.openapi_schema is None  # no template table was needed
