"""Datatypes own their knowledge: which requests mutate (at locked nodes and for auth), how
a request binds to an object of the instance's own class, and size-bounded decompression
of everything a client sends compressed."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import lz4.block
import numpy as np
import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from app.datatypes import get, load_all
from app.datatypes.base import SCOPE_KEY, Data, bound
from app.datatypes.imageblk import ImageBlock, Rgba8Blk, Uint8Blk
from app.datatypes.keyvalue import KeyValue
from app.datatypes.labelmap import Labelmap, codecs
from app.datatypes.roi import Roi
from app.server import create_app
from app.settings import Settings
from backends.memory import MemoryStore
from tests.conftest import Api
from tests.test_auth import ADMIN_TOKEN, auth_settings, bearer, make_token, new_rsa_key

BLOCK = 32


def _seg(api: Api) -> tuple[str, np.ndarray]:
    """A repo whose root holds labelmap ``seg`` with one written 32³ block, committed."""
    root = api.new_repo()
    api.new_instance(root, "labelmap", "seg", BlockSize=f"{BLOCK},{BLOCK},{BLOCK}")
    vol = np.zeros((BLOCK,) * 3, np.uint64)
    vol[:, :, 16:] = 7
    r = api.c.post(f"/api/node/{root}/seg/raw/0_1_2/32_32_32/0_0_0", content=vol.tobytes())
    assert r.status_code == 200, r.text
    api.commit(root)
    return root, vol


def test_registry_maps_typenames_to_classes() -> None:
    registry = load_all()
    assert registry["labelmap"] is Labelmap
    assert registry["keyvalue"] is KeyValue
    assert registry["roi"] is Roi
    assert get("uint8blk") is Uint8Blk and get("rgba8blk") is Rgba8Blk
    images = {name for name, cls in registry.items() if issubclass(cls, ImageBlock)}
    assert images == {"uint8blk", "uint16blk", "uint32blk", "uint64blk", "float32blk", "rgba8blk"}


def test_mutation_and_admin_are_the_datatypes_call() -> None:
    assert not Labelmap.is_mutation("POST", "labels")
    assert Labelmap.is_mutation("POST", "blocks")
    assert not Labelmap.is_mutation("GET", "blocks")
    assert Labelmap.needs_admin("POST", "maxlabel")
    assert not Labelmap.needs_admin("GET", "maxlabel")
    assert KeyValue.is_mutation("POST", "labels")
    assert KeyValue.is_mutation("DELETE", "key")
    assert not KeyValue.needs_admin("POST", "maxlabel")
    assert not Roi.is_mutation("POST", "ptquery")
    assert Roi.is_mutation("POST", "roi") and Roi.is_mutation("DELETE", "roi")


def test_read_posts_work_at_a_locked_node_and_writes_do_not(api: Api) -> None:
    root, vol = _seg(api)
    points = [[0, 0, 0], [20, 3, 4]]
    got = api.c.request("GET", f"/api/node/{root}/seg/labels", content=str(points).encode())
    assert got.status_code == 200, got.text
    posted = api.c.post(f"/api/node/{root}/seg/labels", content=str(points).encode())
    assert posted.status_code == 200, posted.text
    assert posted.json() == got.json() == [0, 7]
    sizes = api.c.post(f"/api/node/{root}/seg/sizes", content=b"[7]")
    assert sizes.status_code == 200, sizes.text
    assert sizes.json() == [int((vol == 7).sum())]
    mapping = api.c.post(f"/api/node/{root}/seg/mapping", content=b"[7]")
    assert (mapping.status_code, mapping.json()) == (200, [7])

    write = api.c.post(f"/api/node/{root}/seg/raw/0_1_2/32_32_32/0_0_0", content=vol.tobytes())
    assert write.status_code == 400
    assert "locked" in write.text
    assert api.c.post(f"/api/node/{root}/seg/maxlabel/100").status_code == 400


def test_auth_asks_the_datatype() -> None:
    key = new_rsa_key()
    with TestClient(create_app(auth_settings(key), {"default": MemoryStore()})) as c:
        admin = {"admintoken": ADMIN_TOKEN}
        root = c.post("/api/repos", json={}, params=admin).json()["root"]
        r = c.post(
            f"/api/repo/{root}/instance",
            json={"typename": "labelmap", "dataname": "seg", "BlockSize": "32,32,32"},
            params=admin,
        )
        assert r.status_code == 200, r.text
        reader = bearer(make_token(key, dvid={"repos": {root: "read"}}))
        writer = bearer(make_token(key, dvid={"repos": {root: "write"}}))
        seg = f"/api/node/{root}/seg"
        assert c.post(f"{seg}/labels", content=b"[[0,0,0]]", headers=reader).status_code == 200
        assert c.post(f"{seg}/nextlabel/5", headers=reader).status_code == 403
        assert c.post(f"{seg}/nextlabel/5", headers=writer).status_code == 200
        assert c.post(f"{seg}/maxlabel/9", headers=writer).status_code == 403
        assert c.post(f"{seg}/maxlabel/9", params=admin).status_code == 200
        # An instance the catalog cannot find needs what any write needs.
        assert c.post(f"/api/node/{root}/nope/labels", headers=reader).status_code == 403


def test_bound_checks_the_class() -> None:
    not_a_labelmap = object()
    dependency = bound(Labelmap)
    scope = {"type": "http", SCOPE_KEY: not_a_labelmap}
    with pytest.raises(TypeError):
        asyncio.run(dependency(Request(scope)))
    assert bound(Data).__name__ == "bound_Data"


def test_posted_volumes_inflate_no_further_than_they_must(api: Api) -> None:
    root = api.new_repo()
    api.new_instance(root, "labelmap", "seg", BlockSize=f"{BLOCK},{BLOCK},{BLOCK}")
    raw = f"/api/node/{root}/seg/raw/0_1_2/32_32_32/0_0_0"
    expected = BLOCK**3 * 8
    bomb = gzip.compress(bytes(expected * 64))
    r = api.c.post(raw, params={"compression": "gzip"}, content=bomb)
    assert r.status_code == 400 and "decompress" in r.text
    r = api.c.post(
        raw,
        params={"compression": "lz4"},
        content=lz4.block.compress(bytes(expected * 2), store_size=False),
    )
    assert r.status_code == 400
    good = np.full((BLOCK,) * 3, 3, np.uint64)
    r = api.c.post(raw, params={"compression": "gzip"}, content=gzip.compress(good.tobytes()))
    assert r.status_code == 200, r.text

    # A block stream whose gzip'd block would inflate past any valid block of this size.
    limit = codecs.max_block_bytes((BLOCK,) * 3)
    payload = zlib.compress(bytes(limit + 1), 9, wbits=31)
    stream = codecs.write_block_stream([((0, 0, 0), payload)])
    r = api.c.post(f"/api/node/{root}/seg/blocks", content=stream)
    assert r.status_code == 400 and "bad block stream" in r.text
    r = api.c.post(f"/api/node/{root}/seg/ingest-supervoxels", content=stream)
    assert r.status_code == 400


def test_max_block_bytes_bounds_real_blocks() -> None:
    rng = np.random.default_rng(0)
    worst = rng.integers(1, 2**63, size=(BLOCK,) * 3, dtype=np.uint64)  # every voxel distinct
    assert len(codecs.encode_block(worst)) <= codecs.max_block_bytes((BLOCK,) * 3)


def test_settings_are_parsed_by_the_class() -> None:
    with TestClient(create_app(Settings(), {"default": MemoryStore()})) as c:
        api = Api(c)
        root = api.new_repo()
        r = c.post(
            f"/api/repo/{root}/instance",
            json={"typename": "uint16blk", "dataname": "g", "Compression": "jpeg"},
        )
        assert r.status_code == 400 and "jpeg" in r.text
        api.new_instance(root, "uint8blk", "j", Compression="jpeg")
        r = c.get(f"/api/node/{root}/j/info")
        assert r.json()["Base"]["TypeURL"].endswith("imageblk/uint8.go")
