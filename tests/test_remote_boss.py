"""The BOSS remote backend against the fake BOSS server: metadata, byte-exact reads,
splitting under the cutout limit and on 413, retries and every failure class."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from backends.remote import (
    BossConfig,
    ProxyConfig,
    RemoteAuthFailed,
    RemoteLevel,
    RemoteNotFound,
    RemoteRejected,
    RemoteTimeout,
    RemoteUnavailable,
    open_remote,
)
from backends.remote.boss import BossVolume
from tests import live_http as live
from tests.fakes.boss import FakeBoss, FakeChannel

TOKEN = "s3cr3t-token-value"
#: Quick retries; the per-request timeout is the production default, since a loaded test
#: machine can take seconds to answer and a timed-out try would be retried (and counted).
FAST = {"timeout": 30.0, "attempts": 3, "backoff": 0.001}
CUTOUT = re.compile(r"/v1/cutout/[\w-]+/[\w-]+/[\w-]+/(\d)/(\d+):(\d+)/(\d+):(\d+)/(\d+):(\d+)/$")


def _random(shape: tuple[int, int, int], dtype: str, seed: int) -> np.ndarray:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    return rng.integers(1, info.max, size=shape, dtype=dtype, endpoint=True)


IMG8 = _random((20, 30, 50), "uint8", 1)  # Z, Y, X
IMG16 = _random((12, 17, 23), "uint16", 2)
LABELS = _random((16, 24, 40), "uint64", 3)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBoss]:
    channels = {
        # A frame that does not start at the origin, two isotropic levels, small cuboids.
        ("col", "exp8", "img"): FakeChannel(
            IMG8, start=(100, 40, 6), voxel_size=(4.0, 4.0, 4.0), levels=2, cuboid_size=(16, 8, 4)
        ),
        ("col", "exp8", "wide"): FakeChannel(
            _random((20, 30, 50), "uint32", 4),
            start=(100, 40, 6),
            voxel_size=(4.0, 4.0, 4.0),
            levels=2,
        ),
        ("col", "shift", "img"): FakeChannel(IMG8, start=(10, 6, 2), levels=2),
        ("col", "exp16", "em"): FakeChannel(
            IMG16,
            voxel_size=(8.0, 8.0, 30.0),
            voxel_unit="micrometers",
            levels=2,
            hierarchy_method="anisotropic",
        ),
        ("col", "seg", "labels"): FakeChannel(
            LABELS,
            voxel_size=(6.0, 6.0, 6.0),
            levels=2,
            channel_type="annotation",
            cuboid_size=(8, 8, 8),
        ),
        ("col", "based", "img"): FakeChannel(
            IMG16, voxel_size=(1.0, 1.0, 1.0), levels=3, base_resolution=1
        ),
        ("pub", "exp", "open"): FakeChannel(IMG16, public=True),
    }
    with FakeBoss(channels, token=TOKEN) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake: FakeBoss) -> Iterator[None]:
    fake.reset()
    fake.max_cutout_bytes = 520 * 1048576
    fake.delay = 0.0
    fake.auth_status = 401
    fake.token = TOKEN
    yield


def _open(fake: FakeBoss, url: str, token: str | None = TOKEN, **options: float) -> BossVolume:
    merged = {**FAST, **options}
    return BossVolume.from_url(
        url,
        BossConfig(endpoint=fake.url, token=token),
        timeout=float(merged["timeout"]),
        attempts=int(merged["attempts"]),
        backoff=float(merged["backoff"]),
        max_request_bytes=int(merged.get("max_request_bytes", 520 * 1048576)),
    )


def _cutouts(fake: FakeBoss) -> list[tuple[int, tuple[int, int, int], tuple[int, int, int]]]:
    """(resolution, lo, hi) of every cutout the fake answered 200."""
    found = []
    for request in fake.requests:
        match = CUTOUT.match(request.path)
        if request.kind == "cutout" and request.status == 200 and match:
            r, x0, x1, y0, y1, z0, z1 = (int(v) for v in match.groups())
            found.append((r, (x0, y0, z0), (x1, y1, z1)))
    return found


def _expected(
    fake: FakeBoss, key: tuple[str, str, str], resolution: int, offset: tuple, size: tuple
) -> np.ndarray:
    """What a read must return: the fake's level, clipped to the part BOSS lets be cut out
    (within the resolution-0 frame), zeros elsewhere."""
    channel = fake.channels[key]
    level = fake.level(key, resolution)
    out = np.zeros(size[::-1], level.dtype)
    lo = [max(o, s) for o, s in zip(offset, channel.start, strict=True)]
    hi = [
        min(o + n, e, t)
        for o, n, e, t in zip(offset, size, level.shape[::-1], channel.stop, strict=True)
    ]
    if all(a < b for a, b in zip(lo, hi, strict=True)):
        dst = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, offset, strict=True))[::-1]
        out[dst] = level[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))[::-1]]
    return out


# --- URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "boss://col/exp",
        "boss://col/exp/chan/extra",
        "boss://col//chan",
        "boss://col/exp/ch an",
        "boss://col/exp/chan/",
        "boss://col/e.x/chan",
        "bossdb://col/exp/chan",
        "boss://",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"boss://<collection>/<experiment>/<channel>"):
        BossVolume.from_url(url, BossConfig(endpoint="http://127.0.0.1:9", token=TOKEN))


def test_open_remote_parses_a_boss_url() -> None:
    config = ProxyConfig(boss=BossConfig(endpoint="http://127.0.0.1:9/", token=TOKEN))
    volume = open_remote("boss://my_col/exp-1/Chan2", config)
    try:
        assert isinstance(volume, BossVolume)
        assert (volume.collection, volume.experiment, volume.channel) == (
            "my_col",
            "exp-1",
            "Chan2",
        )
        assert volume.url == "boss://my_col/exp-1/Chan2"
        assert volume.endpoint == "http://127.0.0.1:9"
        assert TOKEN not in repr(volume)
    finally:
        volume.close()


# --- metadata -----------------------------------------------------------------------


def test_metadata_uint8_isotropic_with_frame_start(fake: FakeBoss) -> None:
    volume = _open(fake, "boss://col/exp8/img")
    meta = volume.metadata()
    volume.close()
    assert meta.url == "boss://col/exp8/img"
    assert meta.dtype == np.dtype("uint8")
    assert meta.voxel_unit == "nanometers"
    # Frame [100, 150) x [40, 70) x [6, 26); level 1 rounds the start down, the stop up.
    assert meta.levels == (
        RemoteLevel((100, 40, 6), (50, 30, 20), (4.0, 4.0, 4.0), (16, 8, 4)),
        RemoteLevel((50, 20, 3), (25, 15, 10), (8.0, 8.0, 8.0), (16, 8, 4)),
    )
    assert fake.count("metadata") == 4
    assert fake.count("cutout") == 0


def test_metadata_uint16_anisotropic_keeps_z(fake: FakeBoss) -> None:
    volume = _open(fake, "boss://col/exp16/em")
    meta = volume.metadata()
    volume.close()
    assert meta.dtype == np.dtype("uint16")
    assert meta.voxel_unit == "micrometers"
    assert meta.levels == (
        RemoteLevel((0, 0, 0), (23, 17, 12), (8.0, 8.0, 30.0), (512, 512, 16)),
        RemoteLevel((0, 0, 0), (12, 9, 12), (16.0, 16.0, 30.0), (512, 512, 16)),
    )


def test_metadata_uint64(fake: FakeBoss) -> None:
    volume = _open(fake, "boss://col/seg/labels")
    meta = volume.metadata()
    volume.close()
    assert meta.dtype == np.dtype("uint64")
    assert [level.size for level in meta.levels] == [(40, 24, 16), (20, 12, 8)]
    assert [level.voxel_size for level in meta.levels] == [(6.0, 6.0, 6.0), (12.0, 12.0, 12.0)]


def test_base_resolution_shifts_scales(fake: FakeBoss) -> None:
    """Scale s is resolution base + s; the downsample service describes resolutions
    0..2 only, so resolution 3 follows its arithmetic."""
    volume = _open(fake, "boss://col/based/img")
    meta = volume.metadata()
    assert [level.size for level in meta.levels] == [(12, 9, 6), (6, 5, 3), (3, 3, 2)]
    assert [level.voxel_size for level in meta.levels] == [
        (2.0, 2.0, 2.0),
        (4.0, 4.0, 4.0),
        (8.0, 8.0, 8.0),
    ]
    key = ("col", "based", "img")
    for scale in range(3):
        got = volume.read(scale, (0, 0, 0), meta.levels[scale].size)
        assert np.array_equal(got, _expected(fake, key, scale + 1, (0, 0, 0), got.shape[::-1]))
    volume.close()
    assert {r for r, _, _ in _cutouts(fake)} == {1, 2, 3}


def test_uint32_channel_is_refused(fake: FakeBoss) -> None:
    volume = _open(fake, "boss://col/exp8/wide")
    with pytest.raises(RemoteRejected, match=r"BOSS.*uint32.*cannot cut out"):
        volume.metadata()
    with pytest.raises(RemoteRejected):
        volume.read(0, (100, 40, 6), (4, 4, 4))
    volume.close()
    assert fake.count("cutout") == 0


@pytest.mark.parametrize(
    "url", ["boss://col/exp8/nope", "boss://col/nope/img", "boss://no/exp8/img"]
)
def test_unknown_resources_are_not_found(fake: FakeBoss, url: str) -> None:
    volume = _open(fake, url)
    with pytest.raises(RemoteNotFound, match=r"BOSS at http://127\.0\.0\.1:\d+ has no channel"):
        volume.metadata()
    volume.close()
    assert fake.count("metadata", 404) == 1  # not retried


# --- reads --------------------------------------------------------------------------


def test_unaligned_read_is_byte_exact(fake: FakeBoss) -> None:
    volume = _open(fake, "boss://col/exp8/img")
    offset, size = (103, 41, 7), (37, 25, 13)
    got = volume.read(0, offset, size)
    volume.close()
    assert got.dtype == np.uint8
    assert got.shape == (13, 25, 37)
    assert np.array_equal(got, IMG8[1:14, 1:26, 3:40])
    # read() fetched the metadata it needed, then one cutout: the box is under the limit.
    assert fake.count("metadata") == 4
    assert _cutouts(fake) == [(0, (103, 41, 7), (140, 66, 20))]


def test_read_crossing_the_edge_zero_fills(fake: FakeBoss) -> None:
    volume = _open(fake, "boss://col/exp8/img")
    offset, size = (90, 30, 0), (70, 50, 40)  # past every side of [100,150)x[40,70)x[6,26)
    got = volume.read(0, offset, size)
    outside = volume.read(0, (-10, 0, 0), (5, 5, 5))
    volume.close()
    expected = np.zeros((40, 50, 70), np.uint8)
    expected[6:26, 10:40, 10:60] = IMG8
    assert np.array_equal(got, expected)
    assert not outside.any() and outside.shape == (5, 5, 5)
    # Only the part inside the frame was asked for; the box outside sent nothing.
    assert _cutouts(fake) == [(0, (100, 40, 6), (150, 70, 26))]


def test_scale_one_of_a_shifted_frame(fake: FakeBoss) -> None:
    """Level 1 of the frame [10, 60) x [6, 36) x [2, 22) spans [5, 30) x [3, 18) x [1, 11);
    BOSS checks ranges against the resolution-0 frame, so only x >= 10, y >= 6, z >= 2 can
    be cut out there: the rest reads 0."""
    key = ("col", "shift", "img")
    volume = _open(fake, "boss://col/shift/img")
    level = volume.metadata().levels[1]
    assert (level.offset, level.end) == ((5, 3, 1), (30, 18, 11))
    got = volume.read(1, level.offset, level.size)
    volume.close()
    assert np.array_equal(got, _expected(fake, key, 1, level.offset, level.size))
    # Level-1 voxel (12, 7, 3) is resolution-0 voxel (24, 14, 6), i.e. data[4, 8, 14].
    assert got[3 - 1, 7 - 3, 12 - 5] == IMG8[4, 8, 14]
    assert got[1:, 3:, 5:].all() and not got[:1].any() and not got[:, :3].any()
    assert _cutouts(fake) == [(1, (10, 6, 2), (30, 18, 11))]


def test_a_level_entirely_below_the_frame_start_reads_zeros(fake: FakeBoss) -> None:
    """Level 1 of [100, 150) ends at x = 75, below the frame's start: nothing to cut out."""
    volume = _open(fake, "boss://col/exp8/img")
    level = volume.metadata().levels[1]
    got = volume.read(1, level.offset, level.size)
    volume.close()
    assert got.shape == level.size[::-1] and not got.any()
    assert fake.count("cutout") == 0


def test_scale_one_from_the_origin(fake: FakeBoss) -> None:
    volume = _open(fake, "boss://col/seg/labels")
    got = volume.read(1, (3, 2, 1), (15, 10, 7))
    volume.close()
    assert got.dtype == np.uint64
    assert np.array_equal(got, LABELS[::2, ::2, ::2][1:8, 2:12, 3:18])
    assert int(got.max()) > 2**53  # no float round trip


def test_anisotropic_scale_one_keeps_z(fake: FakeBoss) -> None:
    volume = _open(fake, "boss://col/exp16/em")
    got = volume.read(1, (0, 0, 0), (12, 9, 12))
    volume.close()
    assert np.array_equal(got, IMG16[:, ::2, ::2])


def test_large_boxes_are_split_on_the_cuboid_grid(fake: FakeBoss) -> None:
    volume = _open(fake, "boss://col/exp8/img", max_request_bytes=1000)
    offset, size = (101, 43, 7), (45, 26, 18)
    got = volume.read(0, offset, size)
    volume.close()
    assert np.array_equal(got, _expected(fake, ("col", "exp8", "img"), 0, offset, size))
    pieces = _cutouts(fake)
    assert len(pieces) > 1
    assert fake.count("cutout", 413) == 0
    covered = 0
    for _, lo, hi in pieces:
        voxels = (hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2])
        assert voxels <= 1000
        covered += voxels
        # Pieces start on the cuboid grid (16, 8, 4) except where the box starts.
        for a, start, chunk in zip(lo, offset, (16, 8, 4), strict=True):
            assert a == start or a % chunk == 0
    assert covered == 45 * 26 * 18  # disjoint pieces covering the box exactly


def test_uint64_limit_counts_a_quarter(fake: FakeBoss) -> None:
    """BOSS counts 64-bit voxels as 2 bytes: a 4096-byte limit allows 2048 voxels."""
    volume = _open(fake, "boss://col/seg/labels", max_request_bytes=4096)
    got = volume.read(0, (0, 0, 0), (40, 24, 16))
    volume.close()
    assert np.array_equal(got, LABELS)
    pieces = _cutouts(fake)
    sizes = [(hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2]) for _, lo, hi in pieces]
    assert max(sizes) == 2048
    assert sum(sizes) == 40 * 24 * 16


def test_413_splits_further_and_is_remembered(fake: FakeBoss) -> None:
    fake.max_cutout_bytes = 3000
    volume = _open(fake, "boss://col/exp8/img")
    offset, size = (100, 40, 6), (50, 30, 20)
    got = volume.read(0, offset, size)
    assert np.array_equal(got, IMG8)
    refused = fake.count("cutout", 413)
    assert refused >= 1
    assert all(
        (hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2]) <= 3000 for _, lo, hi in _cutouts(fake)
    )
    fake.reset()
    again = volume.read(0, offset, size)
    volume.close()
    assert np.array_equal(again, IMG8)
    assert fake.count("cutout", 413) == 0


def test_retry_after_one_503(fake: FakeBoss) -> None:
    volume = _open(fake, "boss://col/exp16/em")
    volume.metadata()
    fake.fail_next(1, 503, kind="cutout")
    got = volume.read(0, (2, 3, 4), (10, 10, 5))
    sent = volume.http.sent
    volume.close()
    assert np.array_equal(got, IMG16[4:9, 3:13, 2:12])
    assert fake.count("cutout", 503) == 1
    assert fake.count("cutout", 200) == 1
    assert sent == 4 + 2


def test_a_remote_that_always_fails_is_unavailable(fake: FakeBoss) -> None:
    volume = _open(fake, "boss://col/exp16/em")
    volume.metadata()
    fake.always_fail(502, kind="cutout")
    with pytest.raises(RemoteUnavailable, match=r"^BOSS at http://127\.0\.0\.1:\d+ failed cutout"):
        volume.read(0, (0, 0, 0), (4, 4, 4))
    volume.close()
    assert fake.count("cutout", 502) == 3  # every attempt


def test_timeouts(fake: FakeBoss) -> None:
    volume = _open(fake, "boss://col/exp16/em", timeout=0.2, attempts=2)
    fake.delay = 1.0
    with pytest.raises(RemoteTimeout, match=r"BOSS at .* timed out after 2 attempts"):
        volume.metadata()
    volume.close()


@pytest.mark.parametrize("status", [401, 403])
def test_a_wrong_token_fails_authentication(fake: FakeBoss, status: int) -> None:
    fake.auth_status = status
    volume = _open(fake, "boss://col/exp8/img", token="wrong-token")
    with pytest.raises(RemoteAuthFailed, match="authentication") as failure:
        volume.metadata()
    volume.close()
    assert f"({status}" in str(failure.value)
    assert "wrong-token" not in str(failure.value)
    assert TOKEN not in str(failure.value)
    assert fake.count("metadata") == 1  # not retried


def test_token_errors_on_cutouts_are_authentication_failures(fake: FakeBoss) -> None:
    volume = _open(fake, "boss://col/exp16/em")
    volume.metadata()
    fake.token = "rotated"
    fake.auth_status = 403
    with pytest.raises(RemoteAuthFailed, match="authentication") as failure:
        volume.read(0, (0, 0, 0), (4, 4, 4))
    volume.close()
    assert TOKEN not in str(failure.value)


def test_anonymous_reads_public_channels_only(fake: FakeBoss) -> None:
    public = _open(fake, "boss://pub/exp/open", token=None)
    got = public.read(0, (0, 0, 0), (23, 17, 12))
    public.close()
    assert np.array_equal(got, IMG16)
    private = _open(fake, "boss://col/exp16/em", token=None)
    with pytest.raises(RemoteAuthFailed, match=r"403.*3001"):
        private.metadata()
    private.close()


def test_unknown_scale_is_not_found(fake: FakeBoss) -> None:
    volume = _open(fake, "boss://col/exp16/em")
    with pytest.raises(RemoteNotFound, match="no scale 2"):
        volume.read(2, (0, 0, 0), (1, 1, 1))
    volume.close()


# --- the fake itself (other suites rely on its wire behaviour) -----------------------


def test_fake_answers_boss_errors(fake: FakeBoss) -> None:
    auth = {"Authorization": f"token {TOKEN}", "Accept": "application/blosc"}
    base = f"{fake.url}/v1/cutout/col/exp16/em"
    with httpx.Client(headers=auth) as client:
        bad_resolution = client.get(f"{base}/2/0:4/0:4/0:4/")
        outside = client.get(f"{base}/0/0:24/0:4/0:4/")
        empty = client.get(f"{base}/0/4:4/0:4/0:4/")
        unknown = client.get(f"{fake.url}/v1/cutout/col/exp16/nope/0/0:4/0:4/0:4/")
        fake.max_cutout_bytes = 10
        too_large = client.get(f"{base}/0/0:4/0:4/0:4")
        unrouted = client.get(f"{fake.url}/v1/cutout/col/exp16/em/10/0:4/0:4/0:4/")
        wrong = client.get(f"{base}/0/0:4/0:4/0:4/", headers={"Authorization": "Token x"})
    assert (bad_resolution.status_code, bad_resolution.json()["code"]) == (400, 1002)
    assert (outside.status_code, outside.json()["code"]) == (400, 1001)
    assert (empty.status_code, empty.json()["code"]) == (400, 1001)
    assert unknown.status_code == 404
    assert unknown.json() == {"status": 404, "code": 4000, "message": "Channel nope not found"}
    assert (too_large.status_code, too_large.json()["code"]) == (413, 2000)
    assert unrouted.status_code == 404 and unrouted.text.startswith("<html>")
    assert (wrong.status_code, wrong.json()) == (401, {"detail": "Invalid token."})
    assert fake.count("cutout") == 6 and fake.count("other") == 1


def test_fake_cutouts_use_the_bit_depth_as_blosc_typesize(fake: FakeBoss) -> None:
    import blosc

    response = live.get(
        f"{fake.url}/v1/cutout/col/seg/labels/0/1:3/0:2/0:1/",
        headers={"Authorization": f"Token {TOKEN}"},
    )
    assert response.headers["content-type"] == "application/blosc"
    assert response.content[3] == 64  # the blosc1 header's typesize byte
    voxels = np.frombuffer(blosc.decompress(response.content), "<u8").reshape(1, 2, 2)
    assert np.array_equal(voxels, LABELS[0:1, 0:2, 1:3])
