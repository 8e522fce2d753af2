"""The BrainMaps remote backend against the fake BrainMaps server (tests/fakes/brainmaps.py):
google-auth's real service-account flow against the fake's token endpoint, metadata as
proxy levels, byte-exact reads (unaligned, zero-filled past the edges, coarser scales,
split under a request limit), retries, timeouts and refused credentials."""

from __future__ import annotations

import io
import itertools
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backends.remote import (
    BrainMapsConfig,
    ProxyConfig,
    RemoteAuthFailed,
    RemoteNotFound,
    RemoteRejected,
    RemoteTimeout,
    RemoteUnavailable,
    open_remote,
)
from backends.remote.brainmaps import BrainMapsClient, BrainMapsVolume, pieces
from tests import live_http as live
from tests.fakes.brainmaps import FakeBrainMaps, FakeGeometry, pyramid

GRAY_ID = "fake-project:fly:grayscale"
LABELS_ID = "fake-project:fly:segmentation"
FLOAT_ID = "fake-project:fly:probabilities"
GRAY = np.random.default_rng(1).integers(0, 256, (40, 70, 100), dtype=np.uint8)
#: Labels beyond 2^53: a float anywhere on the way would change them.
LABELS = np.random.default_rng(2).integers(2**60, 2**63, (20, 30, 40), dtype=np.uint64)
PROBABILITIES = np.random.default_rng(3).random((10, 12, 14), dtype=np.float32)
#: The fake refuses subvolumes over this many bytes (level 0 of GRAY is 280,000).
FAKE_LIMIT = 256 << 10


@pytest.fixture
def fake() -> Iterator[FakeBrainMaps]:
    with FakeBrainMaps(max_request_bytes=FAKE_LIMIT) as server:
        server.add_volume(GRAY_ID, pyramid(GRAY, xy_tile=True))
        server.add_volume(LABELS_ID, pyramid(LABELS, levels=2))
        server.add_volume(FLOAT_ID, pyramid(PROBABILITIES, levels=1))
        yield server


@pytest.fixture
def key_file(fake: FakeBrainMaps, tmp_path: Path) -> Path:
    return fake.write_key_file(tmp_path / "service-account.json")


@pytest.fixture
def open_volume(fake: FakeBrainMaps, key_file: Path) -> Iterator:
    """Opens volumes on the fake with a fast retry budget; closes them after the test."""
    opened: list[BrainMapsVolume] = []

    def make(
        volume_id: str = GRAY_ID,
        *,
        credentials: Path | None = key_file,
        max_request_bytes: int = 64 << 10,
        timeout: float = 10.0,
        attempts: int = 3,
    ) -> BrainMapsVolume:
        config = BrainMapsConfig(fake.url, None if credentials is None else str(credentials))
        client = BrainMapsClient(config, timeout=timeout, attempts=attempts, backoff=0.01)
        volume = BrainMapsVolume(volume_id, client, max_request_bytes=max_request_bytes)
        opened.append(volume)
        return volume

    yield make
    for volume in opened:
        volume.close()


def box_of(
    array: np.ndarray, offset: tuple[int, int, int], size: tuple[int, int, int]
) -> np.ndarray:
    """What a read of ``offset``/``size`` (x, y, z) must return: zero outside ``array``."""
    out = np.zeros(size[::-1], dtype=array.dtype)
    nz, ny, nx = array.shape
    (x, y, z), (sx, sy, sz) = offset, size
    lo = [max(0, c) for c in (z, y, x)]
    hi = [min(n, c + s) for n, c, s in zip((nz, ny, nx), (z, y, x), (sz, sy, sx), strict=True)]
    if all(h > a for a, h in zip(lo, hi, strict=True)):
        src = tuple(slice(a, h) for a, h in zip(lo, hi, strict=True))
        dst = tuple(slice(a - c, h - c) for a, h, c in zip(lo, hi, (z, y, x), strict=True))
        out[dst] = array[src]
    return out


# --- authentication ----------------------------------------------------------------------


def test_service_account_token_is_fetched_once_and_sent(fake: FakeBrainMaps, open_volume) -> None:
    volume = open_volume()
    volume.geometries()
    volume.read(0, (0, 0, 0), (8, 8, 8))
    volume.read(1, (0, 0, 0), (8, 8, 8))
    assert fake.counts["token"] == 1
    assert fake.counts["volume"] == 1 and fake.counts["subvolume"] == 2
    # The fake checks the bearer token: without one it refuses.
    assert live.get(f"{fake.url}/v1/volumes/{GRAY_ID}").status_code == 401


def test_concurrent_first_requests_refresh_the_token_once(fake: FakeBrainMaps, open_volume) -> None:
    geometries = open_volume().geometries()  # through another client, with its own token
    fake.counts.clear()
    volume = open_volume(max_request_bytes=4 << 10)
    got = volume.read_geometry(0, geometries[0], (0, 0, 0), (64, 64, 16))
    assert np.array_equal(got, GRAY[:16, :64, :64])
    assert fake.counts["subvolume"] == 16
    assert fake.counts["token"] == 1


def test_application_default_credentials(
    fake: FakeBrainMaps, open_volume, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    volume = open_volume(credentials=None)
    assert np.array_equal(volume.read(0, (1, 2, 3), (4, 5, 6)), GRAY[3:9, 2:7, 1:5])
    assert fake.counts["token"] == 1


def test_a_key_the_token_endpoint_does_not_know_is_an_authentication_failure(
    fake: FakeBrainMaps, open_volume, tmp_path: Path
) -> None:
    stranger = fake.write_key_file(tmp_path / "stranger.json", known=False)
    key = json.loads(stranger.read_text())
    volume = open_volume(credentials=stranger)
    with pytest.raises(RemoteAuthFailed) as failure:
        volume.metadata()
    message = str(failure.value)
    assert "BrainMaps authentication" in message
    pem_lines = key["private_key"].splitlines()[1:-1]
    assert not any(line in message for line in pem_lines)
    assert key["private_key_id"] not in message
    assert fake.counts["token"] == 1 and fake.counts["volume"] == 0


def test_an_unreadable_key_file_is_an_authentication_failure(
    fake: FakeBrainMaps, open_volume, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "service_account", "private_key": "-----BEGIN secret"}')
    for path in (broken, tmp_path / "missing.json"):
        with pytest.raises(RemoteAuthFailed, match="BrainMaps authentication") as failure:
            open_volume(credentials=path).geometries()
        assert "secret" not in str(failure.value)
    assert fake.counts["volume"] == 0


def test_an_unreachable_token_endpoint_is_unavailable(
    fake: FakeBrainMaps, open_volume, key_file: Path
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        key = json.loads(key_file.read_text())
        key["token_uri"] = f"http://127.0.0.1:{closed.getsockname()[1]}/token"
        key_file.write_text(json.dumps(key))
        with pytest.raises(RemoteUnavailable, match="BrainMaps authentication"):
            open_volume().geometries()
    assert fake.counts["token"] == fake.counts["volume"] == 0


def test_a_failing_token_endpoint_is_unavailable(fake: FakeBrainMaps, open_volume) -> None:
    fake.fail_tokens(503)
    with pytest.raises(RemoteUnavailable, match="BrainMaps authentication") as failure:
        open_volume().geometries()
    assert not isinstance(failure.value, RemoteAuthFailed)
    assert fake.counts["token"] > 1  # google-auth retried it
    assert fake.counts["volume"] == 0


def test_tokens_the_server_no_longer_accepts_are_refused(fake: FakeBrainMaps, open_volume) -> None:
    volume = open_volume()
    volume.geometries()
    fake.revoke_tokens()
    with pytest.raises(RemoteAuthFailed, match="refused authentication"):
        volume.read(0, (0, 0, 0), (4, 4, 4))


# --- metadata ----------------------------------------------------------------------------


def test_isotropic_geometries_are_the_levels(open_volume) -> None:
    volume = open_volume()
    meta = volume.metadata()
    assert meta.url == f"brainmaps://{GRAY_ID}"
    assert meta.dtype == np.uint8
    assert meta.voxel_unit == "nanometers"
    assert [lv.size for lv in meta.levels] == [(100, 70, 40), (50, 35, 20), (25, 18, 10)]
    assert [lv.voxel_size for lv in meta.levels] == [(8, 8, 8), (16, 16, 16), (32, 32, 32)]
    assert all(lv.offset == (0, 0, 0) and lv.chunk == (64, 64, 64) for lv in meta.levels)
    # The XY tile geometry (16, 16, 8 nm) is listed but is no level.
    assert len(volume.geometries()) == 4
    assert volume.levels() == (0, 1, 2)


def test_levels_follow_pixel_sizes_not_listing_order(fake: FakeBrainMaps, open_volume) -> None:
    listed = pyramid(GRAY, levels=3)
    fake.add_volume("p:d:shuffled", [listed[2], listed[0], listed[1]])
    volume = open_volume("p:d:shuffled")
    assert volume.levels() == (1, 2, 0)
    assert np.array_equal(volume.read(2, (0, 0, 0), (25, 18, 10)), GRAY[::4, ::4, ::4])


def test_voxel_types(open_volume) -> None:
    labels = open_volume(LABELS_ID)
    assert labels.metadata().dtype == np.uint64
    assert np.array_equal(labels.read(0, (3, 4, 5), (30, 20, 10)), LABELS[5:15, 4:24, 3:33])
    floats = open_volume(FLOAT_ID)
    assert floats.metadata().dtype == np.float32
    assert np.array_equal(floats.read(0, (0, 0, 0), (14, 12, 10)), PROBABILITIES)


def test_an_unknown_volume_is_not_found(open_volume) -> None:
    with pytest.raises(RemoteNotFound, match="BrainMaps"):
        open_volume("fake-project:fly:nothing").metadata()


def test_a_level_beyond_the_pyramid_is_not_found(open_volume) -> None:
    with pytest.raises(RemoteNotFound, match="no level 3"):
        open_volume().read(3, (0, 0, 0), (1, 1, 1))


def test_open_remote_parses_the_url(fake: FakeBrainMaps, key_file: Path) -> None:
    config = ProxyConfig(brainmaps=BrainMapsConfig(fake.url, str(key_file)))
    volume = open_remote(f"brainmaps://{GRAY_ID}", config)
    try:
        assert isinstance(volume, BrainMapsVolume)
        assert volume.volume_id == GRAY_ID and volume.url == f"brainmaps://{GRAY_ID}"
        assert volume.client.endpoint == fake.url
    finally:
        volume.close()
    for bad in ("brainmaps://", "brainmaps://a/b:c", "brainmaps://nocolon", "brainmaps://a:b c"):
        with pytest.raises(ValueError, match="volume id"):
            open_remote(bad, config)
    tuned = BrainMapsVolume.from_url(
        f"brainmaps://{GRAY_ID}", config.brainmaps, attempts=2, max_request_bytes=4096
    )
    try:
        assert tuned.client.http.attempts == 2 and tuned.max_request_bytes == 4096
    finally:
        tuned.close()


# --- reads -------------------------------------------------------------------------------


def test_an_unaligned_read_is_byte_exact(fake: FakeBrainMaps, open_volume) -> None:
    got = open_volume().read(0, (3, 5, 7), (61, 33, 17))
    assert got.dtype == np.uint8 and got.shape == (17, 33, 61)
    assert np.array_equal(got, GRAY[7:24, 5:38, 3:64])
    assert fake.bodies["subvolume"] == [
        {
            "geometry": {"corner": "3,5,7", "size": "61,33,17", "scale": 0},
            "subvolumeFormat": "RAW_SNAPPY",
        }
    ]


def test_a_read_across_the_edges_is_zero_filled(fake: FakeBrainMaps, open_volume) -> None:
    volume = open_volume()
    offset, size = (90, -5, 35), (20, 20, 10)
    assert np.array_equal(volume.read(0, offset, size), box_of(GRAY, offset, size))
    # Only the inside part was asked for.
    assert fake.bodies["subvolume"][-1]["geometry"] == {
        "corner": "90,0,35",
        "size": "10,15,5",
        "scale": 0,
    }
    asked = fake.counts["subvolume"]
    assert not volume.read(0, (100, 0, 0), (5, 5, 5)).any()
    assert not volume.read(0, (-10, 0, 0), (10, 5, 5)).any()
    assert fake.counts["subvolume"] == asked


def test_a_coarser_scale_reads_its_geometry(fake: FakeBrainMaps, open_volume) -> None:
    level1 = GRAY[::2, ::2, ::2]
    offset, size = (30, 20, 12), (30, 20, 10)
    assert np.array_equal(open_volume().read(1, offset, size), box_of(level1, offset, size))
    assert fake.bodies["subvolume"][-1]["geometry"]["scale"] == 1


def test_reads_over_the_request_limit_are_split(fake: FakeBrainMaps, open_volume) -> None:
    limit = 32 << 10
    volume = open_volume(max_request_bytes=limit)
    assert np.array_equal(volume.read(0, (0, 0, 0), (100, 70, 40)), GRAY)
    sizes = [
        [int(v) for v in body["geometry"]["size"].split(",")] for body in fake.bodies["subvolume"]
    ]
    assert len(sizes) > 1
    assert all(np.prod(s) <= limit for s in sizes)
    assert sum(np.prod(s) for s in sizes) == GRAY.size


def test_unsplit_reads_over_the_remote_limit_are_rejected(open_volume) -> None:
    volume = open_volume(max_request_bytes=1 << 20)
    with pytest.raises(RemoteRejected, match="BrainMaps"):
        volume.read(0, (0, 0, 0), (100, 70, 40))


def test_raw_and_raw_snappy_subvolumes_decode_alike(open_volume) -> None:
    client = open_volume(LABELS_ID).client
    dtype = np.dtype(np.uint64)
    raw = client.subvolume(LABELS_ID, 1, dtype, (1, 2, 3), (9, 8, 7), "RAW")
    packed = client.subvolume(LABELS_ID, 1, dtype, (1, 2, 3), (9, 8, 7), "RAW_SNAPPY")
    assert np.array_equal(raw, LABELS[::2, ::2, ::2][3:10, 2:10, 1:10])
    assert np.array_equal(packed, raw)


def test_image_tiles_are_the_remote_encoding(fake: FakeBrainMaps, open_volume) -> None:
    client = open_volume().client
    png = client.image_tile(GRAY_ID, 0, (10, 20, 5), (32, 16, 1), "PNG", 3)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), GRAY[5, 20:36, 10:42])
    xz = client.image_tile(GRAY_ID, 3, (4, 9, 0), (20, 1, 30))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(xz))), GRAY[0:30, ::2, ::2][:, 9, 4:24])
    jpeg = client.image_tile(GRAY_ID, 0, (0, 0, 0), (16, 16, 1), "JPEG", 90)
    assert jpeg.startswith(b"\xff\xd8\xff")
    assert [body["imageSpec"]["imageOptions"] for body in fake.bodies["imagetile"]] == [
        {"imageFormat": "PNG", "pngCompressionLevel": 3},
        {"imageFormat": "PNG"},
        {"imageFormat": "JPEG", "jpegQuality": 90},
    ]
    assert fake.bodies["imagetile"][0]["imageSpec"]["geometry"] == {
        "corner": "10,20,5",
        "size": "32,16,1",
        "scale": 0,
    }


# --- failures ----------------------------------------------------------------------------


def test_one_unavailable_answer_is_retried(fake: FakeBrainMaps, open_volume) -> None:
    volume = open_volume()
    volume.geometries()
    fake.fail_next(1, 503)
    assert np.array_equal(volume.read(0, (0, 0, 0), (10, 10, 10)), GRAY[:10, :10, :10])
    assert fake.counts["subvolume"] == 2


def test_a_remote_that_keeps_failing_is_unavailable(fake: FakeBrainMaps, open_volume) -> None:
    volume = open_volume(attempts=3)
    fake.always_fail(503)
    with pytest.raises(RemoteUnavailable, match="BrainMaps") as failure:
        volume.geometries()
    assert "503" in str(failure.value)
    assert fake.counts["volume"] == 3
    fake.heal()
    assert len(volume.geometries()) == 4


def test_a_remote_that_keeps_timing_out_is_a_timeout(fake: FakeBrainMaps, open_volume) -> None:
    volume = open_volume(timeout=0.2, attempts=2)
    fake.delay = 5.0
    with pytest.raises(RemoteTimeout, match="BrainMaps"):
        volume.geometries()
    assert fake.counts["volume"] == 2


def test_pieces_tile_the_box_within_the_limit() -> None:
    for offset, size, itemsize, limit in [
        ((0, 0, 0), (100, 70, 40), 1, 32 << 10),
        ((-3, 5, 7), (33, 1, 129), 8, 1000),
        ((0, 0, 0), (5, 5, 5), 8, 8),
        ((2, 2, 2), (4, 4, 4), 1, 1 << 20),
    ]:
        parts = list(pieces(offset, size, itemsize, limit))
        covered: set[tuple[int, int, int]] = set()
        for corner, piece in parts:
            assert np.prod(piece) * itemsize <= limit
            points = itertools.product(
                *(range(c, c + p) for c, p in zip(corner, piece, strict=True))
            )
            block = set(points)
            assert not covered & block
            covered |= block
        expected = itertools.product(*(range(o, o + s) for o, s in zip(offset, size, strict=True)))
        assert covered == set(expected)


def test_fake_geometries_list_64_bit_sizes_as_strings() -> None:
    listed = FakeGeometry(np.zeros((3, 4, 5), np.uint64), (4.0, 4.0, 40.0)).api_json()
    assert listed == {
        "volumeSize": {"x": "5", "y": "4", "z": "3"},
        "channelCount": "1",
        "channelType": "UINT64",
        "pixelSize": {"x": 4.0, "y": 4.0, "z": 40.0},
    }
