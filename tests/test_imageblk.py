"""Behaviour of the imageblk family (uint8blk ... rgba8blk) through HTTP.

The rules come from /work/shared/spec/imageblk.md, README.md §2.2 (copy-on-write visibility
of blocks, merges) and the dvid-cloud extensions of issue 4: raw 3-D POSTs at any offset
(partial blocks read-modify-written), pyramids (``POST /pyramid`` and ``?downres=true``),
413 for requests over ``Settings.max_voxels``.

Most tests run on the memory and local backends only (the module overrides ``backend``);
a few representative ones (any-offset round trip, versioning, restart, subvolblocks) are
parametrized over all four backends, including S3 (moto) and GCS (fake-gcs-server).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import Api

ALL_BACKENDS = ["memory", "local", "s3", "gcs"]
every_backend = pytest.mark.parametrize("backend", ALL_BACKENDS)

DATA = "grayscale"
DTYPES = {
    "uint8blk": np.dtype("<u1"),
    "uint16blk": np.dtype("<u2"),
    "uint32blk": np.dtype("<u4"),
    "uint64blk": np.dtype("<u8"),
    "float32blk": np.dtype("<f4"),
    "rgba8blk": np.dtype("<u4"),  # four bytes r, g, b, a per voxel
}
VALUES = {
    "uint8blk": [{"DataType": "uint8", "Label": "uint8"}],
    "uint16blk": [{"DataType": "uint16", "Label": "uint16"}],
    "uint32blk": [{"DataType": "uint32", "Label": "uint32"}],
    "uint64blk": [{"DataType": "uint64", "Label": "uint64"}],
    "float32blk": [{"DataType": "float32", "Label": "float32"}],
    "rgba8blk": [{"DataType": "uint8", "Label": c} for c in ("red", "green", "blue", "alpha")],
}


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest) -> str:
    """Overrides conftest's four-backend fixture: S3/GCS only where ``every_backend`` says."""
    return request.param


# --------------------------------------------------------------------------- helpers


def url(uuid: str, rest: str, data: str = DATA) -> str:
    return f"/api/node/{uuid}/{data}/{rest}"


def xyz(values) -> str:
    return "_".join(str(int(v)) for v in values)


def random_volume(typename: str, shape_zyx: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Random voxels of ``typename`` that avoid 0 (the default background)."""
    rng = np.random.default_rng(seed)
    dtype = DTYPES[typename]
    if dtype.kind == "f":
        return (rng.standard_normal(shape_zyx) * 1000 + 0.5).astype(dtype)
    top = np.iinfo(dtype).max
    return rng.integers(1, top, size=shape_zyx, dtype=dtype, endpoint=True)


def smooth_volume(shape_zyx: tuple[int, int, int], base: int = 40) -> np.ndarray:
    """A slowly varying uint8 volume that JPEG reproduces closely."""
    z, y, x = np.indices(shape_zyx)
    return (base + 2 * x + 3 * y + 4 * z).clip(0, 255).astype(np.uint8)


def post_raw(
    c: TestClient, uuid: str, offset, volume: np.ndarray, data: str = DATA, query: str = ""
) -> None:
    nz, ny, nx = volume.shape
    r = c.post(
        url(uuid, f"raw/0_1_2/{nx}_{ny}_{nz}/{xyz(offset)}{query}", data), content=volume.tobytes()
    )
    assert r.status_code == 200, r.text


def get_raw(
    c: TestClient, uuid: str, offset, size_xyz, typename: str, data: str = DATA
) -> np.ndarray:
    r = c.get(url(uuid, f"raw/0_1_2/{xyz(size_xyz)}/{xyz(offset)}", data))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    nx, ny, nz = size_xyz
    assert len(r.content) == nx * ny * nz * DTYPES[typename].itemsize
    return np.frombuffer(r.content, dtype=DTYPES[typename]).reshape(nz, ny, nx)


def info(c: TestClient, uuid: str, data: str = DATA) -> dict:
    r = c.get(url(uuid, "info", data))
    assert r.status_code == 200, r.text
    return r.json()


def extents(c: TestClient, uuid: str, data: str = DATA) -> tuple:
    e = info(c, uuid, data)["Extended"]
    return e["MinPoint"], e["MaxPoint"], e["MinIndex"], e["MaxIndex"]


class Model:
    """A numpy model of a volume over a fixed box, for comparison with reads."""

    def __init__(self, typename: str, lo, hi, background=0) -> None:
        self.lo = np.array(lo)
        self.hi = np.array(hi)
        size = self.hi - self.lo
        self.typename = typename
        self.a = np.full((size[2], size[1], size[0]), background, dtype=DTYPES[typename])

    def write(self, offset, volume: np.ndarray) -> None:
        x, y, z = np.array(offset) - self.lo
        nz, ny, nx = volume.shape
        self.a[z : z + nz, y : y + ny, x : x + nx] = volume

    def check(self, c: TestClient, uuid: str, data: str = DATA) -> None:
        got = get_raw(c, uuid, self.lo, self.hi - self.lo, self.typename, data)
        np.testing.assert_array_equal(got, self.a)


def png(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


def png_header(body: bytes) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR chunk."""
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    assert body[12:16] == b"IHDR"
    return body[24], body[25]


def parse_records(body: bytes) -> list[tuple[tuple[int, int, int], bytes]]:
    """DVID block stream: per block int32 LE bx, by, bz, n, then n bytes."""
    out = []
    pos = 0
    while pos < len(body):
        assert pos + 16 <= len(body), "truncated record header"
        bx, by, bz, n = struct.unpack_from("<iiii", body, pos)
        pos += 16
        assert n >= 0 and pos + n <= len(body), "truncated record payload"
        out.append(((bx, by, bz), body[pos : pos + n]))
        pos += n
    return out


def decode_jpeg(body: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(body))
    assert image.format == "JPEG"
    return np.asarray(image.convert("L")).astype(np.int32)


def roughly_equal(got: np.ndarray, want: np.ndarray, mean_tol: float = 3.0, max_tol: int = 24):
    diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
    assert diff.mean() <= mean_tol, f"mean abs diff {diff.mean():.2f}"
    assert diff.max() <= max_tol, f"max abs diff {diff.max()}"


def setup(api: Api, typename: str = "uint8blk", **settings: str) -> str:
    uuid = api.new_repo()
    api.new_instance(uuid, typename, DATA, **settings)
    return uuid


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("typename", list(DTYPES))
def test_every_dtype_round_trip_at_unaligned_negative_offset(api: Api, typename: str) -> None:
    c = api.c
    uuid = setup(api, typename, BlockSize="8,8,8")
    offset = (-13, -5, 3)
    vol = random_volume(typename, (11, 7, 19), seed=1)  # nz, ny, nx
    post_raw(c, uuid, offset, vol)
    # exact box
    np.testing.assert_array_equal(get_raw(c, uuid, offset, (19, 7, 11), typename), vol)
    # a larger unaligned box: the volume inside, background (0) around it
    model = Model(typename, (-20, -9, -2), (9, 5, 17))
    model.write(offset, vol)
    model.check(c, uuid)
    # a sub-box straddling block boundaries
    got = get_raw(c, uuid, (-9, -3, 5), (6, 4, 5), typename)
    np.testing.assert_array_equal(got, vol[2:7, 2:6, 4:10])


@every_backend
def test_write_read_any_offset_and_partial_overwrite(api: Api) -> None:
    c = api.c
    uuid = setup(api, "uint16blk", BlockSize="16,16,16")
    model = Model("uint16blk", (-40, -24, -20), (40, 40, 30))
    a = random_volume("uint16blk", (27, 33, 45), seed=2)
    post_raw(c, uuid, (-31, -17, -11), a)
    model.write((-31, -17, -11), a)
    model.check(c, uuid)
    # overwrite a small unaligned piece inside: neighbours in the same blocks survive
    b = random_volume("uint16blk", (3, 5, 7), seed=3)
    post_raw(c, uuid, (-3, 1, -2), b)
    model.write((-3, 1, -2), b)
    model.check(c, uuid)
    # a write that only partly overlaps the existing data
    d = random_volume("uint16blk", (9, 9, 9), seed=4)
    post_raw(c, uuid, (10, 12, 11), d)
    model.write((10, 12, 11), d)
    model.check(c, uuid)


def test_unwritten_voxels_are_background(api: Api) -> None:
    c = api.c
    uuid = setup(api, "uint8blk", BlockSize="8,8,8", Background="7")
    assert info(c, uuid)["Extended"]["Background"] == 7
    # nothing written: all background
    assert (get_raw(c, uuid, (-5, 3, 100), (10, 9, 4), "uint8blk") == 7).all()
    # partly written block: the rest of it is background, as are absent blocks
    vol = random_volume("uint8blk", (2, 3, 4), seed=5)
    post_raw(c, uuid, (2, 3, 1), vol)
    model = Model("uint8blk", (-8, -8, -8), (16, 16, 16), background=7)
    model.write((2, 3, 1), vol)
    model.check(c, uuid)


def test_default_background_is_zero(api: Api) -> None:
    c = api.c
    uuid = setup(api, "float32blk", BlockSize="8,8,8")
    assert info(c, uuid)["Extended"]["Background"] == 0
    post_raw(c, uuid, (1, 1, 1), np.full((1, 1, 1), 2.5, dtype="<f4"))
    got = get_raw(c, uuid, (0, 0, 0), (3, 3, 3), "float32blk")
    want = np.zeros((3, 3, 3), dtype="<f4")
    want[1, 1, 1] = 2.5
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- extents, info


def test_extents_grow_with_writes_and_post_extents(api: Api) -> None:
    c = api.c
    uuid = setup(api, "uint8blk", BlockSize="8,8,8")
    assert extents(c, uuid) == (None, None, None, None)
    post_raw(c, uuid, (3, 9, 17), np.ones((2, 3, 4), np.uint8))  # x 3..6, y 9..11, z 17..18
    assert extents(c, uuid) == ([3, 9, 17], [6, 11, 18], [0, 1, 2], [0, 1, 2])
    assert info(c, uuid)["Extents"] == {"MinPoint": [3, 9, 17], "MaxPoint": [6, 11, 18]}
    post_raw(c, uuid, (-10, 20, 0), np.ones((1, 1, 1), np.uint8))
    assert extents(c, uuid) == ([-10, 9, 0], [6, 20, 18], [-2, 1, 0], [0, 2, 2])
    # extents never shrink with writes inside them
    post_raw(c, uuid, (0, 10, 5), np.ones((1, 1, 1), np.uint8))
    assert extents(c, uuid)[:2] == ([-10, 9, 0], [6, 20, 18])

    r = c.post(url(uuid, "extents"), json={"MinPoint": [0, 0, 0], "MaxPoint": [99, 49, 9]})
    assert r.status_code == 200, r.text
    assert extents(c, uuid) == ([0, 0, 0], [99, 49, 9], [0, 0, 0], [12, 6, 1])
    # POST extents does not touch voxels
    assert get_raw(c, uuid, (-10, 20, 0), (1, 1, 1), "uint8blk")[0, 0, 0] == 1
    # and later writes grow from the posted extents
    post_raw(c, uuid, (100, -1, 3), np.ones((1, 1, 1), np.uint8))
    assert extents(c, uuid)[:2] == ([0, -1, 0], [100, 49, 9])


def test_initial_extents_from_settings(api: Api) -> None:
    c = api.c
    uuid = setup(api, "uint8blk", MinPoint="0,0,0", MaxPoint="63,127,31")
    assert extents(c, uuid) == ([0, 0, 0], [63, 127, 31], [0, 0, 0], [1, 3, 0])


def test_info_json_shape_for_every_type(api: Api) -> None:
    c = api.c
    uuid = api.new_repo()
    for typename in DTYPES:
        api.new_instance(uuid, typename, f"i_{typename}")
    api.new_instance(
        uuid,
        "uint8blk",
        "custom",
        BlockSize="16,32,64",
        VoxelSize="4,4.5,40",
        VoxelUnits="nm",
        Compression="jpeg",
    )
    for typename in DTYPES:
        r = c.get(url(uuid, "info", f"i_{typename}"))
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        base, ext = body["Base"], body["Extended"]
        assert base["TypeName"] == typename
        assert base["Name"] == f"i_{typename}"
        assert ext["Values"] == VALUES[typename]
        assert ext["Interpolable"] is True
        assert ext["BlockSize"] == [32, 32, 32]
        assert ext["VoxelSize"] == [8, 8, 8]
        assert ext["VoxelUnits"] == ["nanometers"] * 3
        assert ext["Background"] == 0
        assert ext["GridStore"] == "" and ext["ScaleLevel"] == 0
        for key in ("MinPoint", "MaxPoint", "MinIndex", "MaxIndex"):
            assert ext[key] is None
        assert body["Extents"] == {"MinPoint": None, "MaxPoint": None}
    custom = info(c, uuid, "custom")
    assert "jpeg" in custom["Base"]["Compression"].lower()
    assert custom["Extended"]["BlockSize"] == [16, 32, 64]
    assert custom["Extended"]["VoxelSize"] == [4, 4.5, 40]
    assert custom["Extended"]["VoxelUnits"] == ["nm"] * 3

    # /api/repos/info carries the same per-instance JSON, extents included
    post_raw(c, uuid, (5, 6, 7), np.ones((1, 2, 3), np.uint8), data="custom")
    repos = c.get("/api/repos/info").json()
    instances = repos[uuid]["DataInstances"]
    assert set(instances) == {f"i_{t}" for t in DTYPES} | {"custom"}
    assert instances["custom"]["Extended"] == info(c, uuid, "custom")["Extended"]
    assert instances["custom"]["Extended"]["MinPoint"] == [5, 6, 7]
    assert instances["custom"]["Extended"]["MaxPoint"] == [7, 7, 7]
    assert instances["i_rgba8blk"]["Extended"]["Values"] == VALUES["rgba8blk"]


def test_metadata(api: Api) -> None:
    c = api.c
    uuid = setup(api, "uint16blk", VoxelSize="4,5,40", VoxelUnits="nm,nm,um")
    r = c.get(url(uuid, "metadata"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/vnd.dvid-nd-data+json")
    body = r.json()
    assert [a["Size"] for a in body["Axes"]] == [0, 0, 0]
    post_raw(c, uuid, (-2, 10, 3), np.ones((4, 3, 5), "<u2"))
    body = c.get(url(uuid, "metadata")).json()
    assert body["Axes"] == [
        {"Label": "X", "Resolution": 4, "Units": "nm", "Size": 5, "Offset": -2},
        {"Label": "Y", "Resolution": 5, "Units": "nm", "Size": 3, "Offset": 10},
        {"Label": "Z", "Resolution": 40, "Units": "um", "Size": 4, "Offset": 3},
    ]
    assert body["Properties"] == info(c, uuid)["Extended"]


def test_post_resolution_sets_voxel_size(api: Api) -> None:
    c = api.c
    uuid = setup(api)
    r = c.post(url(uuid, "resolution"), json=[3.5, 4, 40])
    assert r.status_code == 200, r.text
    assert info(c, uuid)["Extended"]["VoxelSize"] == [3.5, 4, 40]
    for bad in ([1, 2], [1, 2, 0], ["a", 1, 1], {"x": 1}):
        assert c.post(url(uuid, "resolution"), json=bad).status_code == 400, bad
    assert info(c, uuid)["Extended"]["VoxelSize"] == [3.5, 4, 40]


def test_post_info_is_refused(api: Api) -> None:
    """imageblk.md: ``POST /info`` -> 400 for imageblk."""
    c = api.c
    uuid = setup(api)
    r = c.post(url(uuid, "info"), json={})
    assert r.status_code == 400, (r.status_code, r.text[:200])


# --------------------------------------------------------------------------- 2-D images


def _slices(vol: np.ndarray, x: int, y: int, z: int, w: int, h: int) -> dict:
    """Expected 2-D planes of a ZYX volume whose origin is voxel (0,0,0), for size w_h at
    offset x_y_z: xy rows = y, xz rows = z, yz columns = y, rows = z."""
    return {
        "xy": vol[z, y : y + h, x : x + w],
        "xz": vol[z : z + h, y, x : x + w],
        "yz": vol[z : z + h, y : y + w, x],
    }


@pytest.mark.parametrize(
    "typename", ["uint8blk", "uint16blk", "rgba8blk", "uint32blk", "float32blk"]
)
def test_png_slices_equal_volume_slices(api: Api, typename: str) -> None:
    c = api.c
    uuid = setup(api, typename, BlockSize="8,8,8")
    vol = random_volume(typename, (14, 13, 15), seed=6)
    post_raw(c, uuid, (-4, -4, -4), vol)
    # read back the 3-D volume, then compare each slice with the 2-D endpoints
    full = get_raw(c, uuid, (-4, -4, -4), (15, 13, 14), typename)
    x, y, z, w, h = 1, 2, 3, 9, 7  # relative to the volume origin
    offset = xyz((x - 4, y - 4, z - 4))
    for plane, want in _slices(full, x, y, z, w, h).items():
        r = c.get(url(uuid, f"raw/{plane}/{w}_{h}/{offset}/png"))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        image = png(r.content)
        assert image.size == (w, h)
        depth, colour = png_header(r.content)
        got = np.asarray(image)
        if typename == "uint8blk":
            assert (depth, colour) == (8, 0)
            np.testing.assert_array_equal(got, want)
        elif typename == "uint16blk":
            assert (depth, colour) == (16, 0), "uint16 slices must be 16-bit gray PNGs"
            np.testing.assert_array_equal(got.astype(np.uint16), want)
        else:  # rgba8, and the value's little-endian bytes for uint32/float32
            assert (depth, colour) == (8, 6)
            assert image.mode == "RGBA"
            want_bytes = np.ascontiguousarray(want).view(np.uint8).reshape(h, w, 4)
            np.testing.assert_array_equal(got, want_bytes)
    # png is the default format
    r = c.get(url(uuid, f"raw/xy/{w}_{h}/{offset}"))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def test_rgba8_channels(api: Api) -> None:
    c = api.c
    uuid = setup(api, "rgba8blk", BlockSize="8,8,8")
    rgba = np.zeros((1, 2, 3, 4), np.uint8)  # z, y, x, channel
    rgba[0, 0, 0] = (255, 0, 0, 255)
    rgba[0, 0, 1] = (0, 255, 0, 128)
    rgba[0, 0, 2] = (0, 0, 255, 1)
    rgba[0, 1, :] = (10, 20, 30, 40)
    post_raw(c, uuid, (0, 0, 0), rgba.view("<u4").reshape(1, 2, 3))
    r = c.get(url(uuid, "raw/xy/3_2/0_0_0/png"))
    assert r.status_code == 200
    image = png(r.content)
    assert image.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(image), rgba[0])


def _decode_png16_rgba(body: bytes) -> np.ndarray:
    """A 16-bit RGBA, non-interlaced PNG as (h, w, 4) uint16 (Pillow cannot keep 16-bit
    colour channels)."""
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(body):
        (n,) = struct.unpack_from(">I", body, pos)
        kind, chunk = body[pos + 4 : pos + 8], body[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert (depth, colour, interlace) == (16, 6, 0)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat)
    bpp, stride = 8, width * 8
    rows, prev = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, cc = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - cc
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return np.frombuffer(b"".join(rows), ">u2").reshape(height, width, 4)


def test_uint64_png_is_16bit_rgba_of_value_bytes(api: Api) -> None:
    """imageblk.md: uint64 -> 16-bit RGBA whose 8 bytes (R hi, R lo, G hi, ...) are the
    value's little-endian bytes [quirk]."""
    c = api.c
    uuid = setup(api, "uint64blk", BlockSize="8,8,8")
    vol = random_volume("uint64blk", (1, 3, 5), seed=17)
    post_raw(c, uuid, (0, 0, 0), vol)
    r = c.get(url(uuid, "raw/xy/5_3/0_0_0/png"))
    assert r.status_code == 200, (r.status_code, r.text[:200])
    assert r.headers["content-type"] == "image/png"
    assert png_header(r.content) == (16, 6)
    got = _decode_png16_rgba(r.content)
    want = vol[0].view(np.uint8).reshape(3, 5, 8)
    assert got.tobytes() == want.tobytes()  # PNG samples are big-endian: R hi, R lo, ...


@pytest.mark.parametrize(
    ("fmt", "media"), [("tif", "image/tiff"), ("tiff", "image/tiff"), ("bmp", "image/bmp")]
)
def test_other_image_formats(api: Api, fmt: str, media: str) -> None:
    c = api.c
    uuid = setup(api, "uint8blk", BlockSize="8,8,8")
    vol = random_volume("uint8blk", (3, 4, 5), seed=18)
    post_raw(c, uuid, (0, 0, 0), vol)
    r = c.get(url(uuid, f"raw/xz/5_3/0_1_0/{fmt}"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media
    np.testing.assert_array_equal(np.asarray(png(r.content).convert("L")), vol[:, 1, :])


def test_jpeg_slices_roughly_equal(api: Api) -> None:
    c = api.c
    uuid = setup(api, "uint8blk", BlockSize="16,16,16")
    vol = smooth_volume((24, 24, 24))
    post_raw(c, uuid, (0, 0, 0), vol)
    for fmt in ("jpg", "jpeg", "jpg:95"):
        for plane, want in _slices(vol, 2, 3, 4, 16, 16).items():
            r = c.get(url(uuid, f"raw/{plane}/16_16/2_3_4/{fmt}"))
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "image/jpeg"
            got = decode_jpeg(r.content)
            assert got.shape == (16, 16)
            roughly_equal(got, want)


def test_3d_jpeg_is_one_image(api: Api) -> None:
    c = api.c
    uuid = setup(api, "uint8blk", BlockSize="8,8,8")
    vol = smooth_volume((6, 10, 20))
    post_raw(c, uuid, (3, -2, 5), vol)
    r = c.get(url(uuid, "raw/0_1_2/20_10_6/3_-2_5/jpeg"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    got = decode_jpeg(r.content)
    assert got.shape == (10 * 6, 20)  # width nx, height ny*nz, row = z*ny + y
    roughly_equal(got, vol.reshape(60, 20))


def test_arb_axis_aligned_equals_raw_slice(api: Api) -> None:
    c = api.c
    uuid = setup(api, "uint8blk", BlockSize="8,8,8")
    vol = random_volume("uint8blk", (10, 12, 14), seed=7)
    post_raw(c, uuid, (-3, -3, -3), vol)
    # xy plane at z=2 (voxel coordinates), 9 wide, 6 tall, starting at x=-1, y=0
    r = c.get(url(uuid, "arb/-1_0_2/7_0_2/-1_5_2/1/png"))
    assert r.status_code == 200, r.text
    got = np.asarray(png(r.content))
    assert got.shape == (6, 9)
    np.testing.assert_array_equal(got, vol[5, 3:9, 2:11])
    # an xz plane: width along x, height along z
    r = c.get(url(uuid, "arb/0_1_-3/4_1_-3/0_1_6/1"))
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.asarray(png(r.content)), vol[0:10, 4, 3:8])


def test_isotropic_resizes_anisotropic_voxels(api: Api) -> None:
    c = api.c
    uuid = setup(api, "uint8blk", BlockSize="8,8,8", VoxelSize="4,4,40")
    # each z plane constant along x and y: value 10*(z+1)
    vol = np.repeat(np.arange(10, 110, 10, dtype=np.uint8), 16 * 16).reshape(10, 16, 16)
    post_raw(c, uuid, (0, 0, 0), vol)
    # xy: equal in-plane resolutions -> same as raw
    iso = c.get(url(uuid, "isotropic/xy/8_8/2_2_3/png"))
    raw = c.get(url(uuid, "raw/xy/8_8/2_2_3/png"))
    assert iso.status_code == 200, iso.text
    np.testing.assert_array_equal(np.asarray(png(iso.content)), np.asarray(png(raw.content)))
    # xz: resX=4 < resZ=40, so 20 output rows come from round(20*4/40) = 2 source z planes
    r = c.get(url(uuid, "isotropic/xz/12_20/1_1_3/png"))
    assert r.status_code == 200, r.text
    got = np.asarray(png(r.content)).astype(int)
    assert got.shape == (20, 12)
    assert (got == got[:, :1]).all(), "rows are constant along x"
    column = got[:, 0]
    assert column[0] == 40 and column[-1] == 50, column  # z=3 and z=4 only
    assert (np.diff(column) >= 0).all(), column
    # raw (not isotropic) xz reads one z plane per row
    r = c.get(url(uuid, "raw/xz/12_7/1_1_3/png"))
    np.testing.assert_array_equal(np.asarray(png(r.content))[:, 0], vol[3:10, 1, 1])


# --------------------------------------------------------------------------- block access


def _write_sparse_blocks(c: TestClient, uuid: str, bs: int, coords, typename="uint8blk"):
    """Writes a random full block at each block coordinate; returns {coord: ZYX block}."""
    blocks = {}
    for i, coord in enumerate(coords):
        block = random_volume(typename, (bs, bs, bs), seed=100 + i)
        post_raw(c, uuid, [v * bs for v in coord], block)
        blocks[tuple(coord)] = block
    return blocks


@every_backend
def test_subvolblocks_exact_format_and_order(api: Api) -> None:
    c = api.c
    bs = 8
    uuid = setup(api, "uint16blk", BlockSize="8,8,8")
    coords = [(1, 0, 0), (-1, 1, 0), (0, 0, -1), (1, 1, -1), (-1, 0, 1)]
    blocks = _write_sparse_blocks(c, uuid, bs, coords, "uint16blk")
    # a partial write fills one more block (the rest of it background)
    post_raw(c, uuid, (3, 12, 10), np.full((1, 1, 2), 9, "<u2"))  # block (0, 1, 1)
    partial = np.zeros((bs, bs, bs), "<u2")
    partial[2, 4, 3:5] = 9
    blocks[(0, 1, 1)] = partial
    blocks[(5, 5, 5)] = random_volume("uint16blk", (bs, bs, bs))  # outside the box below
    post_raw(c, uuid, (40, 40, 40), blocks[(5, 5, 5)])

    # box of blocks x -1..1, y 0..1, z -1..1
    r = c.get(url(uuid, "subvolblocks/24_16_24/-8_0_-8"))
    assert r.status_code == 200, r.text
    records = parse_records(r.content)
    got_coords = [coord for coord, _ in records]
    want = sorted(
        (k for k in blocks if k != (5, 5, 5)), key=lambda k: (k[2], k[1], k[0])
    )  # z, then y, then x ascending; absent blocks omitted
    assert got_coords == want
    for coord, payload in records:
        assert len(payload) == bs**3 * 2
        np.testing.assert_array_equal(
            np.frombuffer(payload, "<u2").reshape(bs, bs, bs), blocks[coord]
        )
    # explicit uncompressed gives the same stream
    r2 = c.get(url(uuid, "subvolblocks/24_16_24/-8_0_-8?compression=uncompressed"))
    assert r2.status_code == 200 and r2.content == r.content
    # a box with no blocks: empty
    r = c.get(url(uuid, "subvolblocks/8_8_8/800_800_800"))
    assert r.status_code == 200 and r.content == b""
    # unaligned -> 400; jpeg asked of a non-jpeg instance -> 400
    assert c.get(url(uuid, "subvolblocks/24_16_24/-7_0_-8")).status_code == 400
    assert c.get(url(uuid, "subvolblocks/20_16_24/-8_0_-8")).status_code == 400
    assert c.get(url(uuid, "subvolblocks/24_16_24/-8_0_-8?compression=jpeg")).status_code == 400


def test_subvolblocks_jpeg_instance(api: Api) -> None:
    c = api.c
    uuid = setup(api, "uint8blk", BlockSize="16,16,16", Compression="jpeg")
    vol = smooth_volume((16, 16, 32))  # blocks (0,0,0), (1,0,0)
    post_raw(c, uuid, (0, 0, 0), vol)
    roughly_equal(get_raw(c, uuid, (0, 0, 0), (32, 16, 16), "uint8blk"), vol)
    for query in ("", "?compression=jpeg"):
        r = c.get(url(uuid, f"subvolblocks/48_16_16/0_0_0{query}"))
        assert r.status_code == 200, r.text
        records = parse_records(r.content)
        assert [coord for coord, _ in records] == [(0, 0, 0), (1, 0, 0)]
        for (bx, _, _), payload in records:
            assert payload[:2] == b"\xff\xd8", "payload must be a JPEG"
            got = decode_jpeg(payload)
            assert got.shape == (16 * 16, 16)  # width Bx, height By*Bz
            roughly_equal(got, vol[:, :, bx * 16 : (bx + 1) * 16].reshape(256, 16))
    r = c.get(url(uuid, "subvolblocks/16_16_16/16_0_0?compression=uncompressed"))
    ((coord, payload),) = parse_records(r.content)
    assert coord == (1, 0, 0) and len(payload) == 16**3
    roughly_equal(np.frombuffer(payload, np.uint8).reshape(16, 16, 16), vol[:, :, 16:])


def test_specificblocks(api: Api) -> None:
    c = api.c
    bs = 8
    uuid = setup(api, "uint32blk", BlockSize="8,8,8")
    coords = [(0, 0, 0), (2, -1, 3), (-4, 5, 0)]
    blocks = _write_sparse_blocks(c, uuid, bs, coords, "uint32blk")
    asked = [(2, -1, 3), (9, 9, 9), (-4, 5, 0), (0, 0, 0)]
    flat = ",".join(str(v) for coord in asked for v in coord)
    r = c.get(url(uuid, f"specificblocks?blocks={flat}"))
    assert r.status_code == 200, r.text
    records = parse_records(r.content)
    assert sorted(coord for coord, _ in records) == sorted(coords)  # absent one omitted
    for coord, payload in records:
        np.testing.assert_array_equal(
            np.frombuffer(payload, "<u4").reshape(bs, bs, bs), blocks[coord]
        )
    r = c.get(url(uuid, "specificblocks?blocks="))
    assert r.status_code == 200 and r.content == b""
    r = c.get(url(uuid, f"specificblocks?blocks={flat}&prefetch=true"))
    assert r.status_code == 200 and r.content == b""
    assert c.get(url(uuid, "specificblocks?blocks=1,2")).status_code == 400
    assert c.get(url(uuid, "specificblocks?blocks=1,2,x")).status_code == 400


def test_blocks_span_get_and_post(api: Api) -> None:
    c = api.c
    bs = 4
    uuid = setup(api, "uint16blk", BlockSize="4,4,4")
    span = random_volume("uint16blk", (3, bs, bs, bs), seed=8)  # 3 blocks, each ZYX
    r = c.post(url(uuid, "blocks/-1_2_3/3"), content=span.tobytes())
    assert r.status_code == 200, r.text
    # raw read of the covered box equals the blocks laid side by side along x
    got = get_raw(c, uuid, (-4, 8, 12), (12, 4, 4), "uint16blk")
    np.testing.assert_array_equal(got, np.concatenate(list(span), axis=2))
    # docs/format.md deviation: POST blocks grows the extents (DVID's does not)
    assert extents(c, uuid)[:2] == ([-4, 8, 12], [7, 11, 15])
    # GET of 4 blocks: the last one absent -> background
    r = c.get(url(uuid, "blocks/-1_2_3/4"))
    assert r.status_code == 200
    assert len(r.content) == 4 * bs**3 * 2
    got = np.frombuffer(r.content, "<u2").reshape(4, bs, bs, bs)
    np.testing.assert_array_equal(got[:3], span)
    assert (got[3] == 0).all()
    # wrong body length -> 400, nothing written
    r = c.post(url(uuid, "blocks/5_5_5/2"), content=span[:2].tobytes()[:-2])
    assert r.status_code == 400
    assert (get_raw(c, uuid, (20, 20, 20), (8, 4, 4), "uint16blk") == 0).all()
    for bad in ("blocks/0_0_0/0", "blocks/0_0_0/x", "blocks/0_0/1"):
        assert c.get(url(uuid, bad)).status_code == 400, bad


# --------------------------------------------------------------------------- versioning


@every_backend
def test_child_overwrite_leaves_root_unchanged(api: Api) -> None:
    c = api.c
    root = setup(api, "uint8blk", BlockSize="8,8,8")
    base = random_volume("uint8blk", (16, 16, 16), seed=9)
    post_raw(c, root, (0, 0, 0), base)
    api.commit(root)
    child = api.newversion(root)
    patch = random_volume("uint8blk", (5, 6, 7), seed=10)
    post_raw(c, child, (5, 6, 7), patch)  # unaligned, spans several blocks
    root_model = Model("uint8blk", (0, 0, 0), (16, 16, 16))
    root_model.write((0, 0, 0), base)
    child_model = Model("uint8blk", (0, 0, 0), (16, 16, 16))
    child_model.write((0, 0, 0), base)
    child_model.write((5, 6, 7), patch)
    root_model.check(c, root)
    child_model.check(c, child)
    # extents are per version: the child grows, the root does not
    post_raw(c, child, (30, 30, 30), np.ones((1, 1, 1), np.uint8))
    assert extents(c, root)[:2] == ([0, 0, 0], [15, 15, 15])
    assert extents(c, child)[:2] == ([0, 0, 0], [30, 30, 30])


def test_sibling_branches_isolated(api: Api) -> None:
    c = api.c
    root = setup(api, "uint8blk", BlockSize="8,8,8")
    post_raw(c, root, (0, 0, 0), np.full((8, 8, 8), 1, np.uint8))
    api.commit(root)
    a = api.newversion(root)
    b = api.branch(root, "exp")
    post_raw(c, a, (2, 2, 2), np.full((3, 3, 3), 2, np.uint8))
    post_raw(c, b, (3, 3, 3), np.full((3, 3, 3), 3, np.uint8))
    post_raw(c, b, (8, 0, 0), np.full((1, 1, 1), 4, np.uint8))
    want = {root: Model("uint8blk", (0, 0, 0), (16, 8, 8))}
    want[root].write((0, 0, 0), np.full((8, 8, 8), 1, np.uint8))
    for node in (a, b):
        want[node] = Model("uint8blk", (0, 0, 0), (16, 8, 8))
        want[node].a[...] = want[root].a
    want[a].write((2, 2, 2), np.full((3, 3, 3), 2, np.uint8))
    want[b].write((3, 3, 3), np.full((3, 3, 3), 3, np.uint8))
    want[b].write((8, 0, 0), np.full((1, 1, 1), 4, np.uint8))
    for node, model in want.items():
        model.check(c, node)
    r = c.get(url(a, "subvolblocks/16_8_8/0_0_0"))
    assert [coord for coord, _ in parse_records(r.content)] == [(0, 0, 0)]


def test_locked_node_refuses_writes(api: Api) -> None:
    c = api.c
    root = setup(api, "uint8blk", BlockSize="8,8,8")
    vol = random_volume("uint8blk", (8, 8, 8), seed=11)
    post_raw(c, root, (0, 0, 0), vol)
    api.commit(root)
    before = info(c, root)["Extended"]
    attempts = [
        c.post(url(root, "raw/0_1_2/8_8_8/0_0_0"), content=bytes(512)),
        c.post(url(root, "raw/0_1_2/2_2_2/20_20_20"), content=bytes(8)),
        c.post(url(root, "blocks/0_0_0/1"), content=bytes(512)),
        c.post(url(root, "blocks/3_3_3/1"), content=bytes(512)),
        c.post(url(root, "extents"), json={"MinPoint": [0, 0, 0], "MaxPoint": [1000, 1, 1]}),
        c.post(url(root, "pyramid/8_8_8/0_0_0?levels=1")),
    ]
    for r in attempts:
        assert r.status_code == 400, (r.request.url, r.status_code, r.text)
    np.testing.assert_array_equal(get_raw(c, root, (0, 0, 0), (8, 8, 8), "uint8blk"), vol)
    assert (get_raw(c, root, (8, 8, 8), (24, 24, 24), "uint8blk") == 0).all()
    assert info(c, root)["Extended"] == before
    assert DATA + "_1" not in c.get(f"/api/repo/{root}/info").json()["DataInstances"]


def test_merge_sees_both_branches(api: Api) -> None:
    c = api.c
    root = setup(api, "uint8blk", BlockSize="8,8,8")
    post_raw(c, root, (0, 0, 0), np.full((8, 8, 24), 1, np.uint8))  # blocks x 0..2
    api.commit(root)
    a = api.newversion(root)
    b = api.branch(root, "other")
    post_raw(c, a, (0, 0, 0), np.full((8, 8, 8), 2, np.uint8))  # block 0
    post_raw(c, b, (16, 0, 0), np.full((8, 8, 8), 3, np.uint8))  # block 2
    post_raw(c, b, (30, 0, 0), np.full((1, 1, 1), 4, np.uint8))  # block 3 (new)
    api.commit(a)
    api.commit(b)
    merged = api.merge(root, [a, b])
    got = get_raw(c, merged, (0, 0, 0), (32, 8, 8), "uint8blk")
    want = np.zeros((8, 8, 32), np.uint8)
    want[:, :, 0:8] = 2
    want[:, :, 8:16] = 1
    want[:, :, 16:24] = 3
    want[0, 0, 30] = 4
    np.testing.assert_array_equal(got, want)


def test_merge_conflict_on_same_block(api: Api) -> None:
    """README §2.2: a block written on two merge paths is a conflict at read time, until
    the merged node writes it."""
    c = api.c
    root = setup(api, "uint8blk", BlockSize="8,8,8")
    api.commit(root)
    a = api.newversion(root)
    b = api.branch(root, "other")
    post_raw(c, a, (0, 0, 0), np.full((1, 1, 1), 2, np.uint8))
    post_raw(c, b, (1, 1, 1), np.full((1, 1, 1), 3, np.uint8))
    post_raw(c, b, (8, 0, 0), np.full((1, 1, 1), 5, np.uint8))
    api.commit(a)
    api.commit(b)
    merged = api.merge(root, [a, b])
    assert c.get(url(merged, "raw/0_1_2/8_8_8/0_0_0")).status_code == 400
    # the non-conflicting block reads fine
    assert get_raw(c, merged, (8, 0, 0), (1, 1, 1), "uint8blk")[0, 0, 0] == 5
    post_raw(c, merged, (0, 0, 0), np.full((8, 8, 8), 6, np.uint8))
    assert (get_raw(c, merged, (0, 0, 0), (8, 8, 8), "uint8blk") == 6).all()


def test_deep_chain(api: Api) -> None:
    c = api.c
    uuid = setup(api, "uint16blk", BlockSize="4,4,4")
    nodes = [uuid]
    model = Model("uint16blk", (0, 0, 0), (4 * 31, 4, 4))
    history = []
    for i in range(30):
        block = np.full((4, 4, 4), i + 1, "<u2")
        post_raw(c, nodes[-1], (4 * i, 0, 0), block)
        # every third version also rewrites block 0
        if i % 3 == 0:
            post_raw(c, nodes[-1], (0, 0, 0), np.full((4, 4, 4), 1000 + i, "<u2"))
        api.commit(nodes[-1])
        nodes.append(api.newversion(nodes[-1]))
        model.write((4 * i, 0, 0), block)
        if i % 3 == 0:
            model.write((0, 0, 0), np.full((4, 4, 4), 1000 + i, "<u2"))
        history.append(model.a.copy())
    model.check(c, nodes[-1])
    for i in (0, 7, 15, 29):
        got = get_raw(c, nodes[i], (0, 0, 0), (4 * 31, 4, 4), "uint16blk")
        np.testing.assert_array_equal(got, history[i], err_msg=f"version {i}")


@every_backend
def test_restart_reads_same_data(make_client) -> None:
    first = make_client()
    api = Api(first)
    uuid = setup(api, "rgba8blk", BlockSize="8,8,8")
    vol = random_volume("rgba8blk", (9, 10, 11), seed=12)
    post_raw(first, uuid, (-3, 4, -5), vol)
    api.commit(uuid)
    child = api.newversion(uuid)
    post_raw(first, child, (0, 4, 0), np.zeros((1, 1, 1), "<u4"))
    first.close()
    second = make_client()
    np.testing.assert_array_equal(get_raw(second, uuid, (-3, 4, -5), (11, 10, 9), "rgba8blk"), vol)
    want = vol.copy()
    want[5, 0, 3] = 0
    np.testing.assert_array_equal(
        get_raw(second, child, (-3, 4, -5), (11, 10, 9), "rgba8blk"), want
    )
    assert extents(second, child)[:2] == ([-3, 4, -5], [7, 13, 3])
    # the committed root is still locked for the restarted server
    r = second.post(url(uuid, "raw/0_1_2/1_1_1/0_4_0"), content=bytes(4))
    assert r.status_code == 400
    np.testing.assert_array_equal(get_raw(second, uuid, (-3, 4, -5), (11, 10, 9), "rgba8blk"), vol)


# --------------------------------------------------------------------------- pyramids


def _mean2(a: np.ndarray) -> np.ndarray:
    nz, ny, nx = a.shape
    return a.astype(np.float64).reshape(nz // 2, 2, ny // 2, 2, nx // 2, 2).mean(axis=(1, 3, 5))


def _assert_rounded_mean(got: np.ndarray, source: np.ndarray) -> None:
    mean = _mean2(source)
    assert got.shape == mean.shape
    assert (np.abs(got.astype(np.float64) - mean) <= 0.5).all(), "not the rounded 2x2x2 mean"


def test_pyramid_levels(api: Api) -> None:
    c = api.c
    uuid = setup(api, "uint8blk", BlockSize="8,8,8", VoxelSize="4,4,40")
    vol = random_volume("uint8blk", (16, 24, 32), seed=13)
    post_raw(c, uuid, (-16, 0, 8), vol)
    r = c.post(url(uuid, "pyramid/32_24_16/-16_0_8?levels=2"))
    assert r.status_code == 200, r.text
    level1 = get_raw(c, uuid, (-8, 0, 4), (16, 12, 8), "uint8blk", data=DATA + "_1")
    _assert_rounded_mean(level1, vol)
    level2 = get_raw(c, uuid, (-4, 0, 2), (8, 6, 4), "uint8blk", data=DATA + "_2")
    _assert_rounded_mean(level2, level1)
    instances = c.get("/api/repos/info").json()[uuid]["DataInstances"]
    assert {DATA, DATA + "_1", DATA + "_2"} <= set(instances)
    for level in (1, 2):
        ext = instances[f"{DATA}_{level}"]["Extended"]
        assert instances[f"{DATA}_{level}"]["Base"]["TypeName"] == "uint8blk"
        assert ext["BlockSize"] == [8, 8, 8]
        assert ext["VoxelSize"] == [4 * 2**level, 4 * 2**level, 40 * 2**level]
    assert instances[DATA + "_1"]["Extended"]["MinPoint"] == [-8, 0, 4]
    assert instances[DATA + "_1"]["Extended"]["MaxPoint"] == [7, 11, 11]
    assert instances[DATA + "_2"]["Extended"]["MinPoint"] == [-4, 0, 2]
    assert instances[DATA + "_2"]["Extended"]["MaxPoint"] == [3, 5, 5]
    # rebuilding after a change updates the level
    post_raw(c, uuid, (-16, 0, 8), np.zeros((2, 2, 2), np.uint8))
    assert c.post(url(uuid, "pyramid/2_2_2/-16_0_8?levels=1")).status_code == 200
    assert get_raw(c, uuid, (-8, 0, 4), (1, 1, 1), "uint8blk", data=DATA + "_1")[0, 0, 0] == 0


@pytest.mark.parametrize("typename", ["uint16blk", "float32blk", "rgba8blk"])
def test_downres_on_post(api: Api, typename: str) -> None:
    c = api.c
    uuid = setup(api, typename, BlockSize="8,8,8")
    vol = random_volume(typename, (8, 8, 16), seed=14)
    post_raw(c, uuid, (16, 8, 0), vol, query="?downres=true&levels=2")
    level1 = get_raw(c, uuid, (8, 4, 0), (8, 4, 4), typename, data=DATA + "_1")
    level2 = get_raw(c, uuid, (4, 2, 0), (4, 2, 2), typename, data=DATA + "_2")
    if typename == "rgba8blk":  # channel by channel
        for src, got in ((vol, level1), (level1, level2)):
            for ch in range(4):
                _assert_rounded_mean(
                    got.view(np.uint8).reshape(*got.shape, 4)[..., ch],
                    src.view(np.uint8).reshape(*src.shape, 4)[..., ch],
                )
    elif typename == "float32blk":
        np.testing.assert_allclose(level1, _mean2(vol), rtol=1e-5)
        np.testing.assert_allclose(level2, _mean2(level1), rtol=1e-5)
    else:
        _assert_rounded_mean(level1, vol)
        _assert_rounded_mean(level2, level1)
    # without downres nothing below is touched
    post_raw(c, uuid, (16, 8, 0), np.zeros((8, 8, 16), DTYPES[typename]))
    np.testing.assert_array_equal(
        get_raw(c, uuid, (8, 4, 0), (8, 4, 4), typename, data=DATA + "_1"), level1
    )


# --------------------------------------------------------------------------- bad input

SEED_OFFSET = (0, 0, 0)
SEED_SIZE = (16, 16, 16)

BAD_REQUESTS = [
    # (method, path after the instance, body length or None)
    ("POST", "raw/0_1_2/8_8/0_0_0", 64),
    ("POST", "raw/0_1_2/8_8_8_8/0_0_0", 512),
    ("POST", "raw/0_1_2/0_8_8/0_0_0", 0),
    ("POST", "raw/0_1_2/-8_8_8/0_0_0", 512),
    ("POST", "raw/0_1_2/a_b_c/0_0_0", 512),
    ("POST", "raw/0_1_2/8_8_8/x_y_z", 512),
    ("POST", "raw/0_1_2/8_8_8/0_0", 512),
    ("POST", "raw/0_1_2/8_8_8/1.5_0_0", 512),
    ("POST", "raw/0_1_2/8_8_8/0_0_0", 511),
    ("POST", "raw/0_1_2/8_8_8/0_0_0", 513),
    ("POST", "raw/0_1_2/8_8_8/0_0_0", 0),
    ("POST", "raw/xy/8_8/0_0_0", 64),
    ("POST", "raw/xz/8_8/0_0_0", 64),
    ("POST", "raw/0_1_2/8_8_8/0_0_0/png", 512),
    ("POST", "raw/2_1_0/8_8_8/0_0_0", 512),
    ("POST", "isotropic/0_1_2/8_8_8/0_0_0", 512),
    ("POST", "raw/0_1_2/8_8_8/0_0_0?downres=true&levels=0", 512),
    ("POST", "raw/0_1_2/8_8_8/0_0_0?downres=true&levels=x", 512),
    ("POST", "pyramid/8_8_8/0_0_0?levels=0", None),
    ("POST", "pyramid/8_8/0_0_0", None),
    ("POST", "blocks/0_0_0/1", 511),
    ("POST", "blocks/0_0_0/0", 0),
    ("POST", "resolution", None),
    ("GET", "raw/0_1_2/8_8/0_0_0", None),
    ("GET", "raw/0_1_2/0_8_8/0_0_0", None),
    ("GET", "raw/0_1_2/8_8_8/q_0_0", None),
    ("GET", "raw/xy/8_8_8/0_0_0", None),
    ("GET", "raw/xy/8_8/0_0", None),
    ("GET", "raw/xy/8_8/0_0_0/gif", None),
    ("GET", "raw/xy/8_8/0_0_0/jpg:0", None),
    ("GET", "raw/0_1_2/8_8_8/0_0_0/png", None),
    ("GET", "raw/3d/8_8_8/0_0_0", None),
    ("GET", "subvolblocks/8_8/0_0_0", None),
    ("GET", "subvolblocks/8_8_8/1_0_0", None),
    ("GET", "subvolblocks/8_8_8/0_0_0?compression=jpeg", None),
    ("GET", "subvolblocks/8_8_8/0_0_0?compression=zip", None),
    ("GET", "arb/0_0_0/7_0_0/0_7/1", None),
    ("GET", "arb/0_0_0/7_0_0/0_7_0/0", None),
]


def _bad_post_extents(c: TestClient, uuid: str) -> list[str]:
    failures = []
    bodies = [
        {"MinPoint": [0, 0], "MaxPoint": [1, 1, 1]},
        {"MinPoint": [0, 0, 0], "MaxPoint": "1,1,1"},
        {"MinPoint": [5, 5, 5], "MaxPoint": [1, 1, 1]},
        {"MaxPoint": [1, 1, 1]},
        [1, 2, 3],
    ]
    for body in bodies:
        r = c.post(url(uuid, "extents"), json=body)
        if r.status_code != 400:
            failures.append(f"POST extents {body}: expected 400, got {r.status_code}")
    r = c.post(url(uuid, "extents"), content=b"{not json")
    if r.status_code != 400:
        failures.append(f"POST extents with malformed JSON: expected 400, got {r.status_code}")
    return failures


def test_bad_input_is_400_and_writes_nothing(api: Api) -> None:
    """Every malformed request is a 400 and changes neither voxels nor extents."""
    c = api.c
    uuid = setup(api, "uint8blk", BlockSize="8,8,8")
    seed = random_volume("uint8blk", SEED_SIZE[::-1], seed=15)
    post_raw(c, uuid, SEED_OFFSET, seed)
    model = Model("uint8blk", (-8, -8, -8), (24, 24, 24))
    model.write(SEED_OFFSET, seed)
    before = info(c, uuid)["Extended"]
    failures = _bad_post_extents(c, uuid)
    for method, path, length in BAD_REQUESTS:
        content = bytes([0xAB]) * length if length is not None else None
        r = c.request(method, url(uuid, path), content=content)
        if r.status_code != 400:
            failures.append(f"{method} {path}: expected 400, got {r.status_code} {r.text[:80]!r}")
        if method == "POST":
            got = get_raw(c, uuid, model.lo, model.hi - model.lo, "uint8blk")
            if not np.array_equal(got, model.a):
                failures.append(f"{method} {path}: changed voxels")
    assert not failures, "\n".join(failures)
    model.check(c, uuid)
    assert info(c, uuid)["Extended"] == before


def test_too_many_voxels_is_413(api: Api, make_client) -> None:
    c = api.c
    uuid = setup(api, "uint8blk", BlockSize="8,8,8")
    seed = random_volume("uint8blk", (8, 8, 8), seed=16)
    post_raw(c, uuid, (0, 0, 0), seed)
    small = make_client(max_voxels=1000)
    # under the limit works on the small server
    assert small.get(url(uuid, "raw/0_1_2/10_10_10/0_0_0")).status_code == 200
    big = url(uuid, "raw/0_1_2/20_20_20/0_0_0")
    assert small.get(big).status_code == 413
    assert small.post(big, content=bytes([9]) * 8000).status_code == 413
    assert small.get(url(uuid, "raw/xy/40_40/0_0_0")).status_code == 413
    assert small.get(url(uuid, "subvolblocks/16_16_16/0_0_0")).status_code == 413
    assert small.get(url(uuid, "blocks/0_0_0/2")).status_code == 413
    assert small.get(url(uuid, "arb/0_0_0/99_0_0/0_99_0/1")).status_code == 413
    assert small.post(url(uuid, "pyramid/16_16_16/0_0_0")).status_code == 413
    # nothing was written
    np.testing.assert_array_equal(get_raw(c, uuid, (0, 0, 0), (8, 8, 8), "uint8blk"), seed)
    assert (get_raw(c, uuid, (8, 0, 0), (12, 20, 20), "uint8blk") == 0).all()
    assert extents(c, uuid)[:2] == ([0, 0, 0], [7, 7, 7])
    assert DATA + "_1" not in c.get(f"/api/repo/{uuid}/info").json()["DataInstances"]


BAD_SETTINGS = [
    ("uint8blk", {"BlockSize": "32,32"}),
    ("uint8blk", {"BlockSize": "0,32,32"}),
    ("uint8blk", {"BlockSize": "-8,8,8"}),
    ("uint8blk", {"BlockSize": "a,b,c"}),
    ("uint8blk", {"VoxelSize": "8,8"}),
    ("uint8blk", {"VoxelSize": "x"}),
    ("uint8blk", {"Background": "256"}),
    ("uint8blk", {"Background": "-1"}),
    ("uint8blk", {"Background": "1.5"}),
    ("uint8blk", {"Background": "gray"}),
    ("uint16blk", {"Background": "65536"}),
    ("uint16blk", {"Compression": "jpeg"}),
    ("rgba8blk", {"Compression": "jpeg"}),
    ("uint8blk", {"Compression": "bogus"}),
    ("uint8blk", {"MinPoint": "0,0"}),
]


def test_bad_settings_rejected(api: Api) -> None:
    """Bad creation settings are a 400 and create nothing."""
    c = api.c
    uuid = api.new_repo()
    failures = []
    for i, (typename, settings) in enumerate(BAD_SETTINGS):
        body = {"typename": typename, "dataname": f"bad{i}", **settings}
        r = c.post(f"/api/repo/{uuid}/instance", json=body)
        if r.status_code != 400:
            failures.append(f"{typename} {settings}: expected 400, got {r.status_code}")
    assert not failures, "\n".join(failures)
    assert c.get(f"/api/repo/{uuid}/info").json()["DataInstances"] in ({}, None)


def test_settings_keys_case_insensitive(api: Api) -> None:
    c = api.c
    uuid = setup(api, "uint8blk", blocksize="16,16,16", VOXELSIZE="2,2,2", background="3")
    ext = info(c, uuid)["Extended"]
    assert ext["BlockSize"] == [16, 16, 16]
    assert ext["VoxelSize"] == [2, 2, 2]
    assert ext["Background"] == 3
