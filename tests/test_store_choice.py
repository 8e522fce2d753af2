"""Several configured stores: metadata on the default, each instance on its chosen store."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.server import create_app
from app.settings import BackendConfig, Settings, StoreConfig, load_settings
from backends.local import LocalStore
from backends.memory import MemoryStore
from tests.conftest import Api


def test_instances_live_on_the_store_they_name(tmp_path: Path) -> None:
    settings = Settings(
        store={"ssd": StoreConfig(path=str(tmp_path / "ssd")), "bulk": StoreConfig(path="x")},
        backend=BackendConfig(default="bulk"),
    )
    ssd, bulk = LocalStore(tmp_path / "ssd"), MemoryStore()
    api = Api(TestClient(create_app(settings, {"ssd": ssd, "bulk": bulk})))
    root = api.new_repo()
    api.new_instance(root, "keyvalue", "labels-index", store="ssd")
    api.new_instance(root, "keyvalue", "meshes")
    api.put(root, "labels-index", "k", b"on ssd")
    api.put(root, "meshes", "k", b"on bulk")
    assert api.get(root, "labels-index", "k") == b"on ssd"
    assert api.get(root, "meshes", "k") == b"on bulk"
    # Metadata sits on the default store only; data where each instance says.
    assert any(bulk.list("meta/repos/")) and not any(ssd.list("meta/"))
    assert any(ssd.list("data/")) and len({i.key.split("/")[1] for i in bulk.list("data/")}) == 1
    report = api.c.get("/api/storage").json()
    assert report["instances"][root]["labels-index"]["store"] == "ssd"
    assert report["instances"][root]["meshes"]["store"] == "bulk"
    assert report["stores"]["ssd"]["data bytes"] > 0 and report["stores"]["bulk"]["data bytes"] > 0
    info = api.c.get(f"/api/node/{root}/labels-index/info").json()["Base"]
    assert str(tmp_path / "ssd") in info["KVStore"]
    r = api.c.post(
        f"/api/repo/{root}/instance",
        json={"typename": "keyvalue", "dataname": "x", "store": "nowhere"},
    )
    assert r.status_code == 400 and "nowhere" in r.text


def test_toml_store_sections(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "dvid.toml"
    config.write_text(
        '[server]\nport = 9123\n\n[store.a]\npath = "s3://bucket/prefix"\n'
        'endpoint = "http://127.0.0.1:9"\nregion = "eu-west-1"\n\n'
        '[store.b]\npath = "/tmp/b"\n\n[backend]\ndefault = "a"\n'
    )
    monkeypatch.setenv("DVID_CLOUD_PORT", "9124")
    settings = load_settings(config)
    assert settings.port == 9124  # env beats file
    assert load_settings(config, port=9125).port == 9125  # flag beats env
    assert settings.default_store_name() == "a"
    assert settings.stores()["a"].endpoint == "http://127.0.0.1:9"
    assert settings.stores()["a"].region == "eu-west-1"
    assert settings.stores()["b"].path == "/tmp/b"
