"""Proxy instances of the ordinary volume types over a fake BOSS: creation reads the
remote's metadata, every read endpoint serves the remote's voxels byte for byte (at any
version node, at scale 1, across the remote's edge, beyond its request limit), writes are
refused, remote failures answer 502/504 naming the remote, and repeated reads come from
the cache. The token never shows."""

from __future__ import annotations

import gzip
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.datatypes.labelmap import codecs
from app.server import create_app
from app.settings import Settings
from backends.memory import MemoryStore
from tests.fakes.boss import FakeBoss, FakeChannel
from tests.fakes.brainmaps import FakeBrainMaps, pyramid

TOKEN = "s3cret-boss-token"
# Level-0 extents: x 0..100, y 0..80, z 0..40 (not multiples of any block size).
NX, NY, NZ = 100, 80, 40


def _gray() -> np.ndarray:
    z, y, x = np.indices((NZ, NY, NX))
    return ((x * 3 + y * 5 + z * 7) % 251).astype(np.uint8)


def _labels() -> np.ndarray:
    z, y, x = np.indices((NZ, NY, NX), dtype=np.uint64)
    return (x // 20) + 10 * (y // 16) + 100 * (z // 8) + np.uint64(2**40)


@pytest.fixture(scope="module")
def boss() -> Iterator[FakeBoss]:
    channels = {
        ("col", "em", "img"): FakeChannel(_gray(), voxel_size=(4, 4, 40), levels=2),
        ("col", "seg", "labels"): FakeChannel(_labels(), levels=2, channel_type="annotation"),
        ("col", "em16", "img"): FakeChannel(_gray().astype(np.uint16), levels=1),
    }
    with FakeBoss(channels, token=TOKEN) as fake:
        yield fake


@pytest.fixture
def make_server(boss: FakeBoss) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(token: str = TOKEN, timeout: float = 2.0, **settings: object) -> TestClient:
        proxy = {"boss": {"endpoint": boss.url, "token": token}, "timeout": timeout, "attempts": 3}
        app = create_app(Settings(proxy=proxy, **settings), {"default": MemoryStore()})
        client = TestClient(app)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    boss.always_fail(None)
    boss.delay = 0.0
    boss.reset()


@pytest.fixture
def server(make_server: Callable[..., TestClient]) -> TestClient:
    return make_server()


def _repo(client: TestClient) -> str:
    r = client.post("/api/repos", json={"alias": "proxies"})
    assert r.status_code == 200, r.text
    return str(r.json()["root"])


def _proxy(client: TestClient, uuid: str, typename: str, name: str, url: str) -> None:
    body = {"typename": typename, "dataname": name, "proxy": url}
    r = client.post(f"/api/repo/{uuid}/instance", json=body)
    assert r.status_code == 200, r.text


@pytest.fixture
def em(server: TestClient) -> tuple[TestClient, str]:
    uuid = _repo(server)
    _proxy(server, uuid, "uint8blk", "em", "boss://col/em/img")
    return server, uuid


@pytest.fixture
def seg(server: TestClient) -> tuple[TestClient, str]:
    uuid = _repo(server)
    _proxy(server, uuid, "labelmap", "seg", "boss://col/seg/labels")
    return server, uuid


def _raw(client: TestClient, path: str, shape: tuple[int, int, int], dtype: str) -> np.ndarray:
    r = client.get(path)
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, dtype=dtype).reshape(shape)


def _expected(
    source: np.ndarray, offset: tuple[int, int, int], size: tuple[int, int, int]
) -> np.ndarray:
    """``source`` (ZYX) cut at the box, zero beyond its edges."""
    (x, y, z), (sx, sy, sz) = offset, size
    out = np.zeros((sz, sy, sx), dtype=source.dtype)
    part = source[max(z, 0) : z + sz, max(y, 0) : y + sy, max(x, 0) : x + sx]
    out[
        max(-z, 0) : max(-z, 0) + part.shape[0],
        max(-y, 0) : max(-y, 0) + part.shape[1],
        max(-x, 0) : max(-x, 0) + part.shape[2],
    ] = part
    return out


# --- creation ------------------------------------------------------------------------------


def test_creation_reads_the_remote_metadata(em: tuple[TestClient, str]) -> None:
    client, uuid = em
    r = client.get(f"/api/node/{uuid}/em/info")
    assert r.status_code == 200
    extended = r.json()["Extended"]
    assert extended["MinPoint"] == [0, 0, 0]
    assert extended["MaxPoint"] == [NX - 1, NY - 1, NZ - 1]
    assert extended["VoxelSize"] == [4.0, 4.0, 40.0]
    assert extended["VoxelUnits"] == ["nanometers"] * 3
    assert extended["MaxDownresLevel"] == 1
    assert TOKEN not in r.text
    assert TOKEN not in client.get(f"/api/repo/{uuid}/info").text


@pytest.mark.parametrize(
    ("typename", "url", "status", "words"),
    [
        ("uint8blk", "boss://col/em16/img", 400, "uint16"),
        ("labelmap", "boss://col/em/img", 400, "uint8"),
        ("uint8blk", "boss://col/em/nothere", 400, "BOSS"),
        ("uint8blk", "boss://col/em", 400, "boss://"),
        ("uint8blk", "ftp://col/exp/em", 400, "proxy"),
    ],
)
def test_creation_refuses_what_cannot_be_proxied(
    server: TestClient, typename: str, url: str, status: int, words: str
) -> None:
    uuid = _repo(server)
    r = server.post(
        f"/api/repo/{uuid}/instance", json={"typename": typename, "dataname": "x", "proxy": url}
    )
    assert r.status_code == status, r.text
    assert words in r.text
    assert "x" not in server.get(f"/api/repo/{uuid}/info").json()["DataInstances"]


def test_refused_credentials_are_named_at_creation(make_server: Callable[..., TestClient]) -> None:
    client = make_server(token="wrong-token")
    uuid = _repo(client)
    r = client.post(
        f"/api/repo/{uuid}/instance",
        json={"typename": "uint8blk", "dataname": "em", "proxy": "boss://col/em/img"},
    )
    assert r.status_code == 400
    assert "authentication" in r.text
    assert "wrong-token" not in r.text and TOKEN not in r.text


def test_token_from_env_setting(make_server: Callable[..., TestClient], boss: FakeBoss) -> None:
    """``DVID_CLOUD_BOSS_TOKEN`` (the ``boss_token`` setting) stands in for the file's."""
    app = create_app(
        Settings(proxy={"boss": {"endpoint": boss.url}}, boss_token=TOKEN),
        {"default": MemoryStore()},
    )
    with TestClient(app) as client:
        uuid = _repo(client)
        _proxy(client, uuid, "uint8blk", "em", "boss://col/em/img")
        got = _raw(client, f"/api/node/{uuid}/em/raw/0_1_2/8_8_8/0_0_0", (8, 8, 8), "u1")
        assert np.array_equal(got, _gray()[:8, :8, :8])


# --- reads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "size"),
    [
        ((0, 0, 0), (NX, NY, NZ)),  # everything
        ((13, 7, 5), (31, 17, 9)),  # unaligned inside
        ((90, 70, 35), (20, 20, 10)),  # across the far edge: zeros beyond
        ((-6, -3, -2), (10, 10, 10)),  # across the near edge
        ((200, 200, 200), (4, 4, 4)),  # wholly outside
    ],
)
def test_raw_3d_is_the_remote_byte_for_byte(
    em: tuple[TestClient, str], offset: tuple[int, int, int], size: tuple[int, int, int]
) -> None:
    client, uuid = em
    path = f"/api/node/{uuid}/em/raw/0_1_2/{'_'.join(map(str, size))}/{'_'.join(map(str, offset))}"
    got = _raw(client, path, (size[2], size[1], size[0]), "u1")
    assert np.array_equal(got, _expected(_gray(), offset, size))


def test_versions_all_see_the_remote(em: tuple[TestClient, str]) -> None:
    client, uuid = em
    assert client.post(f"/api/node/{uuid}/commit", json={"note": "c"}).status_code == 200
    child = client.post(f"/api/node/{uuid}/newversion", json={}).json()["child"]
    for node in (uuid, child):
        got = _raw(client, f"/api/node/{node}/em/raw/0_1_2/16_16_16/40_30_20", (16, 16, 16), "u1")
        assert np.array_equal(got, _gray()[20:36, 30:46, 40:56])


def test_slices_and_jpeg(em: tuple[TestClient, str]) -> None:
    client, uuid = em
    r = client.get(f"/api/node/{uuid}/em/raw/xy/50_40/10_20_7/png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), _gray()[7, 20:60, 10:60])
    r = client.get(f"/api/node/{uuid}/em/raw/xz/30_20/5_9_3")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), _gray()[3:23, 9, 5:35])
    r = client.get(f"/api/node/{uuid}/em/raw/0_1_2/32_32_8/0_0_0/jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    decoded = np.asarray(Image.open(io.BytesIO(r.content))).reshape(8, 32, 32)
    assert np.abs(decoded.astype(int) - _gray()[:8, :32, :32]).mean() < 8


def test_subvolblocks(em: tuple[TestClient, str]) -> None:
    """DVID's block stream: per block its coordinate, then its voxels (uncompressed)."""
    client, uuid = em
    r = client.get(
        f"/api/node/{uuid}/em/subvolblocks/64_64_32/64_64_32",
        params={"compression": "uncompressed"},
    )
    assert r.status_code == 200, r.text
    gray = _gray()
    blocks = {}
    view, at = memoryview(r.content), 0
    while at < len(view):
        x, y, z, n = np.frombuffer(view[at : at + 16], "<i4")
        at += 16
        blocks[(x, y, z)] = np.frombuffer(view[at : at + n], np.uint8).reshape(32, 32, 32)
        at += n
    # Blocks (2, 2, 1) and (3, 2, 1): y and z cross the edge, and x too in the second.
    assert sorted(blocks) == [(2, 2, 1), (3, 2, 1)]
    for x, y, z in blocks:
        want = _expected(gray, (32 * x, 32 * y, 32 * z), (32, 32, 32))
        assert np.array_equal(blocks[(x, y, z)], want)


def test_precomputed_scales(em: tuple[TestClient, str], boss: FakeBoss) -> None:
    """neuroglancer's precomputed view lists both remote levels; a chunk of scale 1 is the
    remote's resolution 1."""
    client, uuid = em
    info = client.get(f"/api/node/{uuid}/em/precomputed/info").json()
    assert [s["size"] for s in info["scales"]] == [[NX, NY, NZ], [NX // 2, NY // 2, NZ // 2]]
    key = info["scales"][1]["key"]
    r = client.get(f"/api/node/{uuid}/em/precomputed/{key}/0-32_0-32_0-20")
    assert r.status_code == 200, r.text
    level1 = boss.level(("col", "em", "img"), 1)
    got = np.frombuffer(r.content, np.uint8).reshape(20, 32, 32)
    assert np.array_equal(got, level1[:20, :32, :32])


def test_labelmap_proxy_reads(seg: tuple[TestClient, str], boss: FakeBoss) -> None:
    client, uuid = seg
    labels = _labels()
    node = f"/api/node/{uuid}/seg"
    got = _raw(client, f"{node}/raw/0_1_2/33_21_11/5_6_7", (11, 21, 33), "<u8")
    assert np.array_equal(got, labels[7:18, 6:27, 5:38])
    r = client.get(f"{node}/label/41_17_9")
    assert r.json() == {"Label": int(labels[9, 17, 41])}
    r = client.post(f"{node}/labels", content=json.dumps([[0, 0, 0], [99, 79, 39]]))
    assert r.json() == [int(labels[0, 0, 0]), int(labels[39, 79, 99])]
    # neuroglancer's chunks: googlegzip, here at scale 1.
    level1 = boss.level(("col", "seg", "labels"), 1)
    r = client.get(
        f"{node}/raw/0_1_2/32_32_16/0_0_0", params={"compression": "googlegzip", "scale": 1}
    )
    assert r.status_code == 200, r.text
    body = r.content if r.content[:2] != b"\x1f\x8b" else gzip.decompress(r.content)
    assert np.array_equal(codecs.decode_google(body, (16, 32, 32)), level1[:16, :32, :32])


def test_box_larger_than_the_remote_limit(em: tuple[TestClient, str], boss: FakeBoss) -> None:
    """The fake refuses cutouts over 4 KiB (413): the proxy splits until they fit."""
    client, uuid = em
    boss.max_cutout_bytes = 4096
    try:
        got = _raw(
            client, f"/api/node/{uuid}/em/raw/0_1_2/{NX}_{NY}_{NZ}/0_0_0", (NZ, NY, NX), "u1"
        )
    finally:
        boss.max_cutout_bytes = 520 << 20
    assert np.array_equal(got, _gray())
    assert boss.count("cutout", status=413) >= 1


# --- writes, faults, cache --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "method", "path", "body"),
    [
        ("em", "POST", "raw/0_1_2/8_8_8/0_0_0", bytes(512)),
        ("em", "POST", "extents", b'{"MinPoint":[0,0,0],"MaxPoint":[1,1,1]}'),
        ("seg", "POST", "merge", b"[1, 2]"),
        ("seg", "POST", "raw/0_1_2/64_64_64/0_0_0", bytes(8 * 64**3)),
    ],
)
def test_writes_are_refused(
    server: TestClient, name: str, method: str, path: str, body: bytes
) -> None:
    uuid = _repo(server)
    _proxy(server, uuid, "uint8blk", "em", "boss://col/em/img")
    _proxy(server, uuid, "labelmap", "seg", "boss://col/seg/labels")
    r = server.request(method, f"/api/node/{uuid}/{name}/{path}", content=body)
    assert r.status_code == 400
    assert "proxy" in r.text


def test_one_failure_is_retried(em: tuple[TestClient, str], boss: FakeBoss) -> None:
    client, uuid = em
    boss.fail_next(1, 503)
    got = _raw(client, f"/api/node/{uuid}/em/raw/0_1_2/8_8_8/1_1_1", (8, 8, 8), "u1")
    assert np.array_equal(got, _gray()[1:9, 1:9, 1:9])
    assert boss.count("cutout", status=503) == 1


def test_a_failing_remote_answers_502(em: tuple[TestClient, str], boss: FakeBoss) -> None:
    client, uuid = em
    boss.always_fail(503)
    r = client.get(f"/api/node/{uuid}/em/raw/0_1_2/8_8_8/9_9_9")
    assert r.status_code == 502
    assert "BOSS" in r.text


def test_a_silent_remote_answers_504(
    make_server: Callable[..., TestClient], boss: FakeBoss
) -> None:
    client = make_server(timeout=0.3)  # the server's [proxy] timeout, per request
    uuid = _repo(client)
    _proxy(client, uuid, "uint8blk", "em", "boss://col/em/img")
    boss.delay = 0.6
    r = client.get(f"/api/node/{uuid}/em/raw/0_1_2/8_8_8/17_17_17")
    assert r.status_code == 504
    assert "BOSS" in r.text
    boss.delay = 0.0
    time.sleep(0.7)  # the fake finishes the abandoned requests before the next test


def test_revoked_token_answers_502_naming_authentication(
    em: tuple[TestClient, str], boss: FakeBoss
) -> None:
    client, uuid = em
    boss.token = "rotated"
    try:
        r = client.get(f"/api/node/{uuid}/em/raw/0_1_2/8_8_8/25_25_25")
    finally:
        boss.token = TOKEN
    assert r.status_code == 502
    assert "authentication" in r.text and TOKEN not in r.text


def test_repeated_reads_hit_the_cache(em: tuple[TestClient, str], boss: FakeBoss) -> None:
    client, uuid = em
    path = f"/api/node/{uuid}/em/raw/0_1_2/40_40_20/30_30_10"
    first = client.get(path).content
    sent = boss.count("cutout")
    assert sent >= 1
    for _ in range(3):
        assert client.get(path).content == first
    # A smaller box inside what was read is served from the cached blocks too.
    client.get(f"/api/node/{uuid}/em/raw/xy/20_20/35_35_15")
    assert boss.count("cutout") == sent


def test_answers_are_immutable_at_open_versions(em: tuple[TestClient, str]) -> None:
    """The remote does not change with the version: even an open node's answers carry an
    ETag and may be kept by browsers and CDNs."""
    client, uuid = em
    r = client.get(f"/api/node/{uuid}/em/raw/0_1_2/8_8_8/3_3_3")
    assert r.status_code == 200 and "etag" in r.headers
    assert "immutable" in r.headers["cache-control"]
    again = client.get(
        f"/api/node/{uuid}/em/raw/0_1_2/8_8_8/3_3_3", headers={"If-None-Match": r.headers["etag"]}
    )
    assert again.status_code == 304


def test_cache_bound_is_honoured(make_server: Callable[..., TestClient], boss: FakeBoss) -> None:
    """With no caches, every read goes to the remote again."""
    client = make_server(proxy_cache_bytes=0, response_cache_bytes=0)
    uuid = _repo(client)
    _proxy(client, uuid, "uint8blk", "em", "boss://col/em/img")
    path = f"/api/node/{uuid}/em/raw/0_1_2/8_8_8/0_0_0"
    client.get(path)
    sent = boss.count("cutout")
    client.get(path)
    assert boss.count("cutout") == 2 * sent


# --- the other voxel types, and BrainMaps ---------------------------------------------------


@pytest.mark.parametrize(
    ("typename", "url", "dtype", "source"),
    [
        ("uint16blk", "boss://col/em16/img", "<u2", lambda: _gray().astype(np.uint16)),
        ("uint64blk", "boss://col/seg/labels", "<u8", _labels),
    ],
)
def test_uint16_and_uint64_proxies(
    server: TestClient,
    typename: str,
    url: str,
    dtype: str,
    source: Callable[[], np.ndarray],
) -> None:
    uuid = _repo(server)
    _proxy(server, uuid, typename, "v", url)
    got = _raw(server, f"/api/node/{uuid}/v/raw/0_1_2/30_20_10/60_50_25", (10, 20, 30), dtype)
    assert np.array_equal(got, _expected(source(), (60, 50, 25), (30, 20, 10)))


@pytest.fixture(scope="module")
def brainmaps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeBrainMaps, Path]]:
    with FakeBrainMaps() as fake:
        fake.add_volume("p:d:em", pyramid(_gray(), (8.0, 8.0, 8.0), levels=2))
        fake.add_volume("p:d:seg", pyramid(_labels(), (8.0, 8.0, 8.0), levels=2))
        key = fake.write_key_file(tmp_path_factory.mktemp("keys") / "sa.json")
        yield fake, key


@pytest.fixture
def brainmaps_server(brainmaps: tuple[FakeBrainMaps, Path]) -> Iterator[TestClient]:
    fake, key = brainmaps
    proxy = {"brainmaps": {"endpoint": fake.url, "credentials": str(key)}}
    with TestClient(create_app(Settings(proxy=proxy), {"default": MemoryStore()})) as client:
        yield client


def test_brainmaps_proxies(
    brainmaps_server: TestClient, brainmaps: tuple[FakeBrainMaps, Path]
) -> None:
    """uint8blk and labelmap over BrainMaps: extents and voxel size from its geometries,
    voxels byte for byte at scale 0 and 1 (google-auth's service-account flow against the
    fake's token endpoint), and the key file's contents nowhere in the answers."""
    fake, key = brainmaps
    client = brainmaps_server
    uuid = _repo(client)
    _proxy(client, uuid, "uint8blk", "em", "brainmaps://p:d:em")
    _proxy(client, uuid, "labelmap", "seg", "brainmaps://p:d:seg")
    info = client.get(f"/api/node/{uuid}/em/info")
    assert info.json()["Extended"]["MaxPoint"] == [NX - 1, NY - 1, NZ - 1]
    assert info.json()["Extended"]["VoxelSize"] == [8.0, 8.0, 8.0]
    private_key = json.loads(key.read_text())["private_key"]
    assert private_key[40:80] not in info.text and str(key) not in info.text
    got = _raw(client, f"/api/node/{uuid}/em/raw/0_1_2/50_30_20/70_60_30", (20, 30, 50), "u1")
    assert np.array_equal(got, _expected(_gray(), (70, 60, 30), (50, 30, 20)))
    level1 = fake.volumes["p:d:seg"][1].data
    r = client.get(f"/api/node/{uuid}/seg/raw/0_1_2/40_30_16/3_4_2", params={"scale": 1})
    assert r.status_code == 200, r.text
    got = np.frombuffer(r.content, "<u8").reshape(16, 30, 40)
    assert np.array_equal(got, _expected(level1, (3, 4, 2), (40, 30, 16)))
    assert fake.counts["token"] >= 1 and fake.counts["subvolume"] >= 2
