"""Behaviour of the ``imagetile`` datatype through HTTP, and ``dvid-cloud tiles generate``.

The rules come from DVID's ``datatype/imagetile`` (help text and handlers: metadata JSON,
tile keys and formats, blank tiles, ``raw`` stitching from scale-0 tiles). The tests on
``client``/``api`` run on every backend; tables of bad input run on memory only (they
are refused before the store is touched).
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.datatypes.imagetile.generate import downsample
from app.server import create_app
from app.settings import Settings
from tests.cli_support import refused
from tests.conftest import Api
from tests.test_cli import CLI

MEMORY_ONLY = pytest.mark.parametrize("backend", ["memory"], indirect=True)
TILE = 16

#: DVID's test metadata (imagetile_test.go), and what its GET prints (Go's json.Marshal).
METADATA = {
    "MinTileCoord": [0, 0, 0],
    "MaxTileCoord": [5, 5, 4],
    "Levels": {
        "0": {"Resolution": [10.0, 10.0, 10.0], "TileSize": [TILE, TILE, TILE]},
        "1": {"Resolution": [20.0, 20.0, 20.0], "TileSize": [TILE, TILE, TILE]},
    },
}
METADATA_JSON = (
    '{"MinTileCoord":[0,0,0],"MaxTileCoord":[5,5,4],"Levels":{'
    '"0":{"Resolution":[10,10,10],"TileSize":[16,16,16]},'
    '"1":{"Resolution":[20,20,20],"TileSize":[16,16,16]}}}'
)


def url(uuid: str, rest: str, data: str = "tiles") -> str:
    return f"/api/node/{uuid}/{data}/{rest}"


def png(plane: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(plane).save(out, format="PNG")
    return out.getvalue()


def jpeg(plane: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(plane).save(out, format="JPEG", quality=95)
    return out.getvalue()


def pixels(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("L"))


def tiles_repo(api: Api, **settings: str) -> str:
    root = api.new_repo()
    api.new_instance(root, "imagetile", "tiles", **settings)
    r = api.c.post(url(root, "metadata"), json=METADATA)
    assert r.status_code == 200, r.text
    return root


def tile_plane(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (TILE, TILE), dtype=np.uint8)


# --------------------------------------------------------------------------- all backends


def test_metadata_and_tiles_round_trip(api: Api) -> None:
    root = tiles_repo(api)
    r = api.c.get(url(root, "metadata"))
    assert (r.status_code, r.text) == (200, METADATA_JSON)
    assert r.headers["content-type"] == "application/json"
    a, b = tile_plane(1), tile_plane(2)
    for coord, plane in (("0_0_3", a), ("1_0_3", b)):
        r = api.c.post(url(root, f"tile/xy/0/{coord}"), content=png(plane))
        assert r.status_code == 200, r.text
    r = api.c.get(url(root, "tile/xy/0/0_0_3"))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == png(a)  # served as stored
    assert (pixels(api.c.get(url(root, "tile/0_1/0/1_0_3")).content) == b).all()
    # Missing: black tile of the level's size, or 404 with noblanks.
    blank = api.c.get(url(root, "tile/xz/1/7_3_9"))
    assert blank.status_code == 200 and blank.headers["content-type"] == "image/png"
    assert pixels(blank.content).shape == (TILE, TILE) and not pixels(blank.content).any()
    assert api.c.get(url(root, "tile/xy/0/9_9_3?noblanks=true")).status_code == 404
    assert api.c.get(url(root, "tile/xy/0/0_0_3?noblanks=true")).status_code == 200
    # raw/xy is stitched from scale-0 tiles; missing tiles are black.
    r = api.c.get(url(root, "raw/xy/20_10/6_4_3"))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    expected = np.zeros((10, 20), np.uint8)
    expected[:, :10] = a[4:14, 6:16]
    expected[:, 10:] = b[4:14, 0:10]
    assert (pixels(r.content) == expected).all()
    assert not pixels(api.c.get(url(root, "raw/xy/20_10/6_4_4")).content).any()
    info = api.c.get(f"/api/node/{root}/tiles/info").json()
    assert info["Base"]["TypeName"] == "imagetile"
    assert info["Extended"]["Levels"]["1"]["TileSize"] == [TILE, TILE, TILE]


def test_jpeg_tiles_and_versions(api: Api) -> None:
    root = tiles_repo(api, Format="jpg")
    plane = tile_plane(3)
    assert api.c.post(url(root, "tile/xy/1/0_0_0"), content=jpeg(plane)).status_code == 200
    r = api.c.get(url(root, "tile/xy/1/0_0_0"))
    assert r.headers["content-type"] == "image/jpeg" and r.content == jpeg(plane)
    # A missing tile comes in the requested format (png unless the path says jpg).
    assert api.c.get(url(root, "tile/xy/1/1_0_0")).headers["content-type"] == "image/png"
    assert api.c.get(url(root, "tile/xy/1/1_0_0/jpg")).headers["content-type"] == "image/jpeg"
    api.commit(root)
    locked = api.c.post(url(root, "tile/xy/1/1_0_0"), content=jpeg(plane))
    assert locked.status_code == 400 and "locked" in locked.text
    child = api.newversion(root)
    other = tile_plane(4)
    assert api.c.post(url(child, "tile/xy/1/1_0_0"), content=jpeg(other)).status_code == 200
    assert api.c.get(url(child, "tile/xy/1/1_0_0")).content == jpeg(other)
    assert api.c.get(url(child, "tile/xy/1/0_0_0")).content == jpeg(plane)  # inherited
    assert api.c.get(url(root, "tile/xy/1/1_0_0?noblanks=true")).status_code == 404


# --------------------------------------------------------------------------- bad input


@MEMORY_ONLY
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[1]",
        b"{",
        json.dumps({"Levels": {}}).encode(),
        json.dumps({"Levels": {"1": METADATA["Levels"]["0"]}}).encode(),
        json.dumps({"Levels": {"0": {"Resolution": [1, 1], "TileSize": [4, 4, 4]}}}).encode(),
        json.dumps({"Levels": {"0": {"Resolution": [1, 1, 1], "TileSize": [0, 4, 4]}}}).encode(),
        json.dumps({"Levels": {"0": {"Resolution": [1, 1, 1], "TileSize": [4.5, 4, 4]}}}).encode(),
        json.dumps(
            {
                "Levels": {
                    "0": {"Resolution": [2, 2, 2], "TileSize": [4, 4, 4]},
                    "1": {"Resolution": [3, 4, 4], "TileSize": [4, 4, 4]},
                }
            }
        ).encode(),
        json.dumps(
            {
                "Levels": {
                    "0": {"Resolution": [2, 2, 2], "TileSize": [4, 4, 4]},
                    "1": {"Resolution": [1, 2, 2], "TileSize": [4, 4, 4]},
                }
            }
        ).encode(),
        json.dumps({**METADATA, "MinTileCoord": [0, 0]}).encode(),
        json.dumps({**METADATA, "MaxTileCoord": [0, 0, 2**31]}).encode(),
    ],
)
def test_bad_metadata_is_refused_and_changes_nothing(api: Api, body: bytes) -> None:
    root = tiles_repo(api)
    r = api.c.post(url(root, "metadata"), content=body)
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/plain"), r.text
    assert api.c.get(url(root, "metadata")).text == METADATA_JSON


@MEMORY_ONLY
@pytest.mark.parametrize(
    ("method", "path", "why"),
    [
        ("GET", "tile/xy/0/0_0_0", "metadata"),
        ("POST", "tile/xy/0/0_0_0", "metadata"),
        ("GET", "raw/xy/4_4/0_0_0", "metadata"),
        ("GET", "metadata", "not set"),
    ],
)
def test_tiles_before_metadata_are_refused(api: Api, method: str, path: str, why: str) -> None:
    root = api.new_repo()
    api.new_instance(root, "imagetile", "tiles")
    r = api.c.request(method, url(root, path), content=png(tile_plane(0)))
    assert r.status_code == 400 and why in r.text, r.text
    api.c.post(url(root, "metadata"), json=METADATA)
    assert api.c.get(url(root, "tile/xy/0/0_0_0?noblanks=true")).status_code == 404


@MEMORY_ONLY
@pytest.mark.parametrize(
    "path",
    [
        "tile/xyz/0/0_0_0",
        "tile/0_1_2/0/0_0_0",
        "tile/xy/2/0_0_0",
        "tile/xy/-1/0_0_0",
        "tile/xy/a/0_0_0",
        "tile/xy/0/0_0",
        "tile/xy/0/0_0_x",
        "tile/xy/0/0_0_2147483648",
        "tile/xy/0/-1_0_0",
    ],
)
def test_bad_tile_posts_are_refused_and_change_nothing(api: Api, path: str) -> None:
    root = tiles_repo(api)
    r = api.c.post(url(root, path), content=png(tile_plane(0)))
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/plain"), r.text
    assert api.c.get(url(root, "tile/xy/0/0_0_0?noblanks=true")).status_code == 404


@MEMORY_ONLY
@pytest.mark.parametrize(
    "path",
    [
        "tile/yx/0/0_0_0",
        "tile/xy/5/0_0_0",
        "tile/xy/0/0_0_0/gif",
        "raw/xy/4/0_0_0",
        "raw/xy/4_4/0_0",
        "raw/0_1_2/4_4/0_0_0",
        "raw/xy/4_4/0_0_0/raw",
        "raw/xy/4_4/0_0_0?scale=9",
        "raw/xy/0_4/0_0_0",
        "isotropic/xz/4_4/0_0_0/jpg:0",
        "tilekey/xy/x/0_0_0",
    ],
)
def test_bad_reads_are_400(api: Api, path: str) -> None:
    root = tiles_repo(api)
    r = api.c.get(url(root, path))
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/plain"), r.text


@MEMORY_ONLY
def test_tile_bodies_and_settings_are_checked(api: Api) -> None:
    root = tiles_repo(api)
    r = api.c.post(url(root, "tile/xy/0/0_0_0"), content=jpeg(tile_plane(0)))
    assert r.status_code == 400 and "PNG" in r.text
    assert api.c.post(url(root, "tile/xy/0/0_0_0"), content=b"").status_code == 400
    for setting in ({"Format": "lz4"}, {"Format": "gif"}, {"Quality": "0"}):
        r = api.c.post(
            f"/api/repo/{root}/instance",
            json={"typename": "imagetile", "dataname": "t2", **setting},
        )
        assert r.status_code == 400, r.text
    key = api.c.get(url(root, "tilekey/0_1/0/1_2_3")).json()["key"]
    assert bytes.fromhex(key) == b"tile/xy/0/1_2_3"


# --------------------------------------------------------------------------- generate


def test_generate_builds_the_pyramid_from_a_uint8_volume(tmp_path: Path) -> None:
    """A uint8blk volume at a version, tiled by the CLI (a real process on the same data
    folder): every scale-0 tile is the volume's slice, every scale-1 tile the 2x2 mean
    (rounded down) of it, and metadata is DVID's default spec for the extents."""
    data_dir = tmp_path / "data"
    shape = (3, 40, 50)  # z, y, x: extents 50 x 40 x 3 at offset (5, 2, 1)
    volume = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
    with TestClient(create_app(Settings(data_dir=str(data_dir)))) as c:
        api = Api(c)
        root = api.new_repo()
        api.new_instance(root, "uint8blk", "gray", BlockSize="16,16,16", VoxelSize="4,4,40")
        r = c.post(f"/api/node/{root}/gray/raw/0_1_2/50_40_3/5_2_1", content=volume.tobytes())
        assert r.status_code == 200, r.text
        api.new_instance(root, "imagetile", "tiles", Source="gray")
    args = ["tiles", "--tile-size", "32", "--planes", "xy,xz", "--data-dir", str(data_dir)]
    result = subprocess.run(
        [CLI, "tiles", "generate", root, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # the progress bar and logs stay on stderr
    assert summary["levels"] == 2
    assert "tiling slices" in result.stderr

    full = np.zeros((3, 64, 64), np.uint8)  # the tile-aligned region (0..64 in x and y)
    full[:, 2:42, 5:55] = volume
    with TestClient(create_app(Settings(data_dir=str(data_dir)))) as c:
        r = c.get(url(root, "metadata"))
        assert r.text == (
            '{"MinTileCoord":[0,0,0],"MaxTileCoord":[0,0,0],"Levels":{'
            '"0":{"Resolution":[4,4,40],"TileSize":[32,32,32]},'
            '"1":{"Resolution":[8,8,80],"TileSize":[32,32,32]}}}'
        )
        for z in range(1, 4):
            plane = full[z - 1]
            for ty in range(2):
                for tx in range(2):
                    tile = c.get(url(root, f"tile/xy/0/{tx}_{ty}_{z}?noblanks=true"))
                    assert tile.status_code == 200, tile.text
                    want = plane[ty * 32 : (ty + 1) * 32, tx * 32 : (tx + 1) * 32]
                    assert (pixels(tile.content) == want).all()
            half = c.get(url(root, f"tile/xy/1/0_0_{z}?noblanks=true"))
            assert (pixels(half.content) == downsample(plane)).all()
            raw = c.get(url(root, f"raw/xy/50_40/5_2_{z}"))
            assert (pixels(raw.content) == volume[z - 1]).all()
        # xz: one tile row per y of the extents, z padded to the tile grid.
        xz = c.get(url(root, "tile/xz/0/0_10_0?noblanks=true"))
        want = np.zeros((32, 32), np.uint8)
        want[1:4, :] = full[:, 10, :32]
        assert (pixels(xz.content) == want).all()
        assert c.get(url(root, "tile/xy/2/0_0_1?noblanks=true")).status_code == 400
        assert c.get(url(root, "tile/xy/0/0_0_4?noblanks=true")).status_code == 404


def test_generate_refuses_bad_requests_and_writes_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with TestClient(create_app(Settings(data_dir=str(data_dir)))) as c:
        api = Api(c)
        root = api.new_repo()
        api.new_instance(root, "uint16blk", "deep")
        api.new_instance(root, "uint8blk", "empty")
        api.new_instance(root, "keyvalue", "kv")
        api.new_instance(root, "imagetile", "tiles")
        r = c.post(f"/api/node/{root}/deep/raw/0_1_2/4_4_4/0_0_0", content=bytes(128))
        assert r.status_code == 200, r.text
    for args, why in [
        (["tiles"], "Source"),
        (["tiles", "--source", "kv"], "image volume"),
        (["tiles", "--source", "deep"], "uint8"),
        (["tiles", "--source", "empty"], "no voxels"),
        (["tiles", "--source", "empty", "--planes", "xq"], "xq"),
        (["kv", "--source", "empty"], "not an imagetile"),
        (["nope", "--source", "empty"], "nope"),
    ]:
        code, stderr = refused("tiles", "generate", root, *args, "--data-dir", str(data_dir))
        assert code == 1 and why in stderr, (args, stderr)
    with TestClient(create_app(Settings(data_dir=str(data_dir)))) as c:
        assert c.get(url(root, "metadata")).status_code == 400
