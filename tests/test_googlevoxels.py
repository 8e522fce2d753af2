"""The ``googlevoxels`` datatype through HTTP, against the fake BrainMaps server.

The rules come from DVID's ``datatype/googlevoxels`` (GeomMap from pixel-size ratios,
imagetile-style Levels, tiles addressed as imagetile's, ``raw`` 2-D images and 3-D
subvolumes, GET only) with the deviations its help states: edge tiles decoded, padded
and re-encoded; planes without a geometry of their own served by the isotropic one;
credentials only from ``[proxy.brainmaps]``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import lz4.block
import numpy as np
import pytest
import snappy
from fastapi.testclient import TestClient
from PIL import Image

from app.server import create_app
from app.settings import load_settings
from backends.memory import MemoryStore
from tests.conftest import Api
from tests.fakes.brainmaps import FakeBrainMaps, pyramid

VOLUME_ID = "fake-project:fly:grayscale"
#: Z, Y, X: 100 x 70 x 40 voxels at 8 nm.
GRAY = np.random.default_rng(7).integers(0, 256, (40, 70, 100), dtype=np.uint8)
#: Geometry 1: isotropic 16 nm; geometry 2: an XY tile geometry, 16 x 16 x 8 nm.
LEVEL1 = GRAY[::2, ::2, ::2]
XY_TILES = GRAY[:, ::2, ::2]
TILE = 32


@pytest.fixture
def fake() -> Iterator[FakeBrainMaps]:
    with FakeBrainMaps() as server:
        server.add_volume(VOLUME_ID, pyramid(GRAY, levels=2, xy_tile=True))
        yield server


@pytest.fixture
def make_client(fake: FakeBrainMaps, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """A server whose ``[proxy.brainmaps]`` names the fake and a key file (known to the
    fake unless ``known=False``)."""
    clients: list[TestClient] = []

    def make(known: bool = True) -> TestClient:
        key = fake.write_key_file(tmp_path / f"key-{len(clients)}.json", known=known)
        config = tmp_path / f"dvid-{len(clients)}.toml"
        config.write_text(f'[proxy.brainmaps]\nendpoint = "{fake.url}"\ncredentials = "{key}"\n')
        settings = load_settings(config_file=config, data_dir=str(tmp_path / "data"))
        client = TestClient(create_app(settings, {"default": MemoryStore()}))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def uuid(client: TestClient) -> str:
    api = Api(client)
    root = api.new_repo()
    api.new_instance(
        root, "googlevoxels", "gray", volumeid=VOLUME_ID, tilesize=str(TILE), jwtfile="/no.json"
    )
    return root


def url(uuid: str, rest: str) -> str:
    return f"/api/node/{uuid}/gray/{rest}"


def pixels(body: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(body)).convert("L"))


def get_ok(client: TestClient, path: str, media_type: str = "image/png") -> bytes:
    r = client.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media_type
    return r.content


# --- creation and info --------------------------------------------------------------------


def test_info_maps_the_geometries_as_dvid(
    client: TestClient, uuid: str, fake: FakeBrainMaps
) -> None:
    assert fake.counts["volume"] == 1  # read at creation
    r = client.get(url(uuid, "info"))
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["Base"]["TypeName"] == "googlevoxels"
    assert info["Extended"] == {
        "VolumeID": VOLUME_ID,
        "MinTileCoord": [0, 0, 0],
        "MaxTileCoord": [4, 3, 2],
        "TileSize": TILE,
        "GeomMap": {"XY:0": 0, "XZ:0": 0, "YZ:0": 0, "XYZ:0": 0, "XY:1": 2, "XYZ:1": 1},
        "Scales": [
            {
                "volumeSize": [100, 70, 40],
                "channelCount": 1,
                "channelType": "UINT8",
                "pixelSize": [8.0, 8.0, 8.0],
            },
            {
                "volumeSize": [50, 35, 20],
                "channelCount": 1,
                "channelType": "UINT8",
                "pixelSize": [16.0, 16.0, 16.0],
            },
            {
                "volumeSize": [50, 35, 40],
                "channelCount": 1,
                "channelType": "UINT8",
                "pixelSize": [16.0, 16.0, 8.0],
            },
        ],
        "HighResIndex": 0,
        "Levels": {
            "0": {"Resolution": [8.0, 8.0, 8.0], "TileSize": [TILE, TILE, TILE]},
            "1": {"Resolution": [16.0, 16.0, 16.0], "TileSize": [TILE, TILE, TILE]},
        },
    }
    assert fake.counts["volume"] == 1  # info is answered from the instance's settings


def test_credentials_never_show(client: TestClient, uuid: str, tmp_path: Path) -> None:
    key = json.loads((tmp_path / "key-0.json").read_text())
    texts = [
        client.get(url(uuid, "info")).text,
        client.get(f"/api/repo/{uuid}/info").text,
        client.get(url(uuid, "help")).text,
    ]
    secrets = [*key["private_key"].splitlines()[1:-1], key["private_key_id"], key["client_email"]]
    for text in texts:
        assert not [s for s in secrets if s in text]
        assert "key-0.json" not in text and "/no.json" not in text


def test_the_highest_resolution_geometry_need_not_be_listed_first(
    client: TestClient, fake: FakeBrainMaps
) -> None:
    fine, coarse = pyramid(GRAY, levels=2)
    fake.add_volume("p:d:reversed", [coarse, fine])
    api = Api(client)
    root = api.new_repo()
    api.new_instance(root, "googlevoxels", "rev", volumeid="p:d:reversed")
    extended = client.get(f"/api/node/{root}/rev/info").json()["Extended"]
    assert extended["HighResIndex"] == 1
    assert extended["GeomMap"] == {"XY:0": 1, "XZ:0": 1, "YZ:0": 1, "XYZ:0": 1, "XYZ:1": 0}
    assert extended["MaxTileCoord"] == [1, 1, 1]  # 512-pixel tiles over the finest geometry
    body = get_ok(
        client, f"/api/node/{root}/rev/raw/0_1_2/4_4_4/0_0_0/raw", "application/octet-stream"
    )
    assert body == GRAY[:4, :4, :4].tobytes()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "volumeid"),
        ({"volumeid": "no/slashes:allowed"}, "volume id"),
        ({"volumeid": VOLUME_ID, "tilesize": "0"}, "tile size"),
        ({"volumeid": VOLUME_ID, "tilesize": "big"}, "tile size"),
        ({"volumeid": "fake-project:fly:missing"}, "no volume fake-project:fly:missing"),
    ],
)
def test_bad_creations_are_refused(client: TestClient, settings: dict, message: str) -> None:
    root = Api(client).new_repo()
    body = {"typename": "googlevoxels", "dataname": "gray", **settings}
    r = client.post(f"/api/repo/{root}/instance", json=body)
    assert r.status_code == 400, r.text
    assert message in r.text
    assert "gray" not in client.get(f"/api/repo/{root}/info").json()["DataInstances"]


def test_refused_credentials_fail_the_creation(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(known=False)
    root = Api(client).new_repo()
    body = {"typename": "googlevoxels", "dataname": "gray", "volumeid": VOLUME_ID}
    r = client.post(f"/api/repo/{root}/instance", json=body)
    assert r.status_code == 400, r.text
    assert "BrainMaps authentication" in r.text
    key = json.loads((tmp_path / "key-0.json").read_text())
    assert key["private_key_id"] not in r.text
    assert not any(line in r.text for line in key["private_key"].splitlines()[1:-1])


# --- tiles --------------------------------------------------------------------------------


def test_tiles_in_each_plane(client: TestClient, uuid: str, fake: FakeBrainMaps) -> None:
    xy = pixels(get_ok(client, url(uuid, "tile/xy/0/1_0_5")))
    assert np.array_equal(xy, GRAY[5, 0:32, 32:64])
    xz = pixels(get_ok(client, url(uuid, "tile/xz/0/1_3_0")))
    assert np.array_equal(xz, GRAY[0:32, 3, 32:64])
    yz = pixels(get_ok(client, url(uuid, "tile/1_2/0/7_1_0/png")))
    assert np.array_equal(yz, GRAY[0:32, 32:64, 7])
    assert [body["imageSpec"]["geometry"] for body in fake.bodies["imagetile"]] == [
        {"corner": "32,0,5", "size": "32,32,1", "scale": 0},
        {"corner": "32,3,0", "size": "32,1,32", "scale": 0},
        {"corner": "7,32,0", "size": "1,32,32", "scale": 0},
    ]


def test_coarser_tiles_use_the_geometry_mapped_to_their_plane(
    client: TestClient, uuid: str, fake: FakeBrainMaps
) -> None:
    xy = pixels(get_ok(client, url(uuid, "tile/xy/1/0_0_7")))
    assert np.array_equal(xy, XY_TILES[7, 0:32, 0:32])
    # No XZ geometry at scale 1: the isotropic one serves it (20 slices deep, padded).
    xz = pixels(get_ok(client, url(uuid, "tile/xz/1/0_2_0")))
    assert xz.shape == (TILE, TILE)
    assert np.array_equal(xz[:20], LEVEL1[0:20, 2, 0:32])
    assert not xz[20:].any()
    assert [body["imageSpec"]["geometry"]["scale"] for body in fake.bodies["imagetile"]] == [2, 1]


def test_edge_tiles_are_padded_to_the_tile_size(
    client: TestClient, uuid: str, fake: FakeBrainMaps
) -> None:
    tile = pixels(get_ok(client, url(uuid, "tile/xy/0/3_2_5")))
    assert tile.shape == (TILE, TILE)
    assert np.array_equal(tile[:6, :4], GRAY[5, 64:70, 96:100])
    tile[:6, :4] = 0
    assert not tile.any()
    assert fake.bodies["imagetile"][-1]["imageSpec"]["geometry"]["size"] == "4,6,1"
    jpeg = get_ok(client, url(uuid, "tile/xy/0/3_2_5/jpg:95"), "image/jpeg")
    assert pixels(jpeg).shape == (TILE, TILE)


def test_tiles_outside_are_blank_or_missing(
    client: TestClient, uuid: str, fake: FakeBrainMaps
) -> None:
    for coord in ("10_0_5", "0_0_40", "-1_0_5"):
        blank = pixels(get_ok(client, url(uuid, f"tile/xy/0/{coord}")))
        assert blank.shape == (TILE, TILE) and not blank.any()
        r = client.get(url(uuid, f"tile/xy/0/{coord}?noblanks=true"))
        assert r.status_code == 404, r.text
    assert fake.counts["imagetile"] == 0


def test_tile_size_and_formats(client: TestClient, uuid: str, fake: FakeBrainMaps) -> None:
    small = pixels(get_ok(client, url(uuid, "tile/xy/0/1_1_5?tilesize=16")))
    assert np.array_equal(small, GRAY[5, 16:32, 16:32])
    jpeg = get_ok(client, url(uuid, "tile/xy/0/0_0_5/jpeg:90"), "image/jpeg")
    assert np.abs(pixels(jpeg).astype(int) - GRAY[5, :32, :32]).mean() < 20
    png = pixels(get_ok(client, url(uuid, "tile/xy/0/0_0_5/png:0")))
    assert np.array_equal(png, GRAY[5, :32, :32])
    assert [body["imageSpec"]["imageOptions"] for body in fake.bodies["imagetile"]] == [
        {"imageFormat": "PNG"},
        {"imageFormat": "JPEG", "jpegQuality": 90},
        {"imageFormat": "PNG", "pngCompressionLevel": 0},
    ]


@pytest.mark.parametrize(
    "path",
    [
        "tile/xw/0/0_0_0",
        "tile/0_1_2/0/0_0_0",
        "tile/xy/2/0_0_0",
        "tile/xy/abc/0_0_0",
        "tile/xy/0/0_0",
        "tile/xy/0/0_0_0/gif",
        "tile/xy/0/0_0_0/png:10",
        "tile/xy/0/0_0_0?tilesize=0",
        "raw/xy/10_10/0_0_0?scale=5",
        "raw/xy/10_10/0_0_0/tif",
        "raw/0_1_2/10_10_10/0_0_0?compression=gzip",
        "raw/0_1_2/10_10_10/0_0_0/png",
        "raw/0_1_2/10_10/0_0_0",
    ],
)
def test_bad_requests_are_400(
    client: TestClient, uuid: str, fake: FakeBrainMaps, path: str
) -> None:
    r = client.get(url(uuid, path))
    assert r.status_code == 400, r.text
    assert fake.counts["imagetile"] == fake.counts["subvolume"] == 0


# --- raw ----------------------------------------------------------------------------------


def test_raw_subvolumes_are_byte_exact(client: TestClient, uuid: str, fake: FakeBrainMaps) -> None:
    octet = "application/octet-stream"
    expected = GRAY[7:17, 6:26, 5:35].tobytes()
    assert get_ok(client, url(uuid, "raw/0_1_2/30_20_10/5_6_7"), octet) == expected
    packed = get_ok(client, url(uuid, "raw/0_1_2/30_20_10/5_6_7?compression=lz4"), octet)
    assert lz4.block.decompress(packed, uncompressed_size=len(expected)) == expected
    packed = get_ok(client, url(uuid, "raw/0_1_2/30_20_10/5_6_7/raw?compression=snappy"), octet)
    assert snappy.decompress(packed) == expected
    coarse = get_ok(client, url(uuid, "raw/0_1_2/50_35_20/0_0_0?scale=1"), octet)
    assert coarse == LEVEL1.tobytes()
    assert fake.bodies["subvolume"][-1] == {
        "geometry": {"corner": "0,0,0", "size": "50,35,20", "scale": 1},
        "subvolumeFormat": "RAW_SNAPPY",
    }


def test_raw_subvolume_as_jpeg(client: TestClient, uuid: str) -> None:
    jpeg = get_ok(client, url(uuid, "raw/0_1_2/16_8_4/0_0_0/jpg:95"), "image/jpeg")
    stacked = pixels(jpeg)
    assert stacked.shape == (8 * 4, 16)
    assert np.abs(stacked.astype(int) - GRAY[:4, :8, :16].reshape(32, 16)).mean() < 20


def test_raw_subvolumes_at_the_edges(client: TestClient, uuid: str, fake: FakeBrainMaps) -> None:
    r = client.get(url(uuid, "raw/0_1_2/10_10_10/95_0_0"))
    assert r.status_code == 400, r.text
    assert "edge" in r.text
    r = client.get(url(uuid, "raw/0_1_2/10_10_10/100_0_0"))
    assert r.status_code == 200, r.text
    assert r.content == b""
    assert fake.counts["subvolume"] == 0


def test_raw_planes_are_images(client: TestClient, uuid: str) -> None:
    xy = pixels(get_ok(client, url(uuid, "raw/xy/40_30/10_20_5")))
    assert np.array_equal(xy, GRAY[5, 20:50, 10:50])
    xz = pixels(get_ok(client, url(uuid, "raw/0_2/20_30/90_3_25/png")))
    assert xz.shape == (30, 20)
    assert np.array_equal(xz[:15, :10], GRAY[25:40, 3, 90:100])
    assert not xz[15:].any() and not xz[:, 10:].any()
    coarse = pixels(get_ok(client, url(uuid, "raw/xy/20_10/3_4_9?scale=1")))
    assert np.array_equal(coarse, XY_TILES[9, 4:14, 3:23])


def test_every_version_serves_the_same_remote(client: TestClient, uuid: str) -> None:
    api = Api(client)
    api.commit(uuid)
    child = api.newversion(uuid)
    for node in (uuid, child):
        body = get_ok(client, url(node, "raw/0_1_2/8_8_8/1_2_3"), "application/octet-stream")
        assert body == GRAY[3:11, 2:10, 1:9].tobytes()


# --- what is not served -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "tile/xy/0/0_0_0"),
        ("POST", "raw/0_1_2/10_10_10/0_0_0"),
        ("PUT", "raw/0_1_2/10_10_10/0_0_0"),
        ("DELETE", "tile/xy/0/0_0_0"),
        ("POST", "info"),
    ],
)
def test_only_gets_are_served(client: TestClient, uuid: str, method: str, path: str) -> None:
    r = client.request(method, url(uuid, path), content=b"\0" * 8)
    assert r.status_code == 400, r.text


def test_a_failing_remote_is_a_bad_gateway(
    client: TestClient, uuid: str, fake: FakeBrainMaps
) -> None:
    fake.always_fail(403)
    r = client.get(url(uuid, "tile/xy/0/0_0_5"))
    assert r.status_code == 502, r.text
    assert "BrainMaps" in r.text and "authentication" in r.text


def test_help_names_the_credentials_setting(client: TestClient, uuid: str) -> None:
    text = client.get(url(uuid, "help")).text
    assert "[proxy.brainmaps]" in text and "jwtfile" in text
