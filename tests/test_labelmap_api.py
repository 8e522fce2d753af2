"""labelmap HTTP API beyond tests/test_labelmap.py, against /work/shared/spec/labelmap.md §2-§6.

Binary responses (RLEs, binary blocks, coarse streams, block streams, block keys) are decoded
with small reference decoders written here from the spec text, not with the app's codecs, so
a codec bug cannot hide itself. Block payloads in §3.1 form are still decoded with
``codecs.decode_block`` (tested on its own in tests/test_labelmap_codecs.py).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from collections.abc import Callable

import lz4.block
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.datatypes.labelmap import codecs
from app.proto import labelmap_pb2 as pb
from tests.conftest import Api

BLOCK = 32
A = 5  # fills block (0,0,0), plus a slab and a ball in blocks (1,0,0) and (1,1,0)
C = 8  # a small cube in block (0,1,1)
D = 9  # a slab in block (0,0,1)
BIG = 2**40 + 3  # a wedge over blocks (0,1,1), (1,0,1), (1,1,1)
NEW = 2**41


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def volume() -> np.ndarray:
    """64³ ZYX supervoxels with solid, mixed and empty blocks and sub-blocks."""
    z, y, x = np.mgrid[0:64, 0:64, 0:64]
    vol = np.zeros((64, 64, 64), np.uint64)
    vol[:32, :32, :32] = A
    vol[:16, :, 32:40] = A
    vol[(x - 48) ** 2 + (y - 20) ** 2 + (z - 24) ** 2 < 49] = A
    vol[(z >= 40) & (x + y > 70)] = BIG
    vol[40:45, 40:45, 10:15] = C
    vol[50:64, 0:10, 0:20] = D
    return vol


@pytest.fixture
def seg(api: Api) -> tuple[Api, str, np.ndarray]:
    root = api.new_repo()
    api.new_instance(
        root, "labelmap", "seg", BlockSize=f"{BLOCK},{BLOCK},{BLOCK}", MaxDownresLevel="1"
    )
    vol = volume()
    r = api.c.post(url(root, "raw/0_1_2/64_64_64/0_0_0"), content=vol.tobytes())
    assert r.status_code == 200, r.text
    return api, root, vol


def url(uuid: str, path: str) -> str:
    return f"/api/node/{uuid}/seg/{path}"


def new_seg(api: Api, **settings: str) -> str:
    root = api.new_repo()
    api.new_instance(root, "labelmap", "seg", BlockSize="32,32,32", **settings)
    return root


def read_raw(c: TestClient, uuid: str, size=(64, 64, 64), offset=(0, 0, 0), **q) -> np.ndarray:
    s = "_".join(map(str, size))
    o = "_".join(map(str, offset))
    r = c.get(url(uuid, f"raw/0_1_2/{s}/{o}"), params=q)
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, dtype="<u8").reshape(size[2], size[1], size[0])


def version_id(c: TestClient, uuid: str) -> int:
    return c.get(f"/api/repo/{uuid}/info").json()["DAG"]["Nodes"][uuid]["VersionID"]


def listlabels(c: TestClient, uuid: str, **q) -> list[int]:
    r = c.get(url(uuid, "listlabels"), params=q)
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, "<u8").tolist()


# --- reference encoders / decoders written from the spec ----------------------------------


def block_key(x: int, y: int, z: int) -> int:
    """§3.5: three 21-bit sign-magnitude fields, x lowest."""

    def field(v: int) -> int:
        return abs(v) | ((1 << 20) if v < 0 else 0)

    return field(x) | field(y) << 21 | field(z) << 42


def parse_rles(data: bytes) -> np.ndarray:
    """§3.4 legacy RLEs: 12-byte header then (x, y, z, length) int32 runs."""
    assert data[:4] == bytes([0, 3, 0, 0]), data[:4]
    voxels, count = struct.unpack_from("<II", data, 4)
    assert voxels == 0
    assert len(data) == 12 + 16 * count
    return np.frombuffer(data, "<i4", offset=12).reshape(-1, 4).astype(np.int64)


def parse_srles(data: bytes) -> np.ndarray:
    assert len(data) % 16 == 0
    return np.frombuffer(data, "<i4").reshape(-1, 4).astype(np.int64)


def rasterize(runs: np.ndarray, shape=(64, 64, 64), origin=(0, 0, 0)) -> np.ndarray:
    """ZYX mask of runs inside the box at origin (x, y, z); runs must fit and not overlap."""
    mask = np.zeros(shape, bool)
    ox, oy, oz = origin
    for x, y, z, n in runs.tolist():
        assert n > 0, (x, y, z, n)
        lx, ly, lz = x - ox, y - oy, z - oz
        assert 0 <= lz < shape[0] and 0 <= ly < shape[1] and lx >= 0 and lx + n <= shape[2]
        assert not mask[lz, ly, lx : lx + n].any(), f"overlapping run {(x, y, z, n)}"
        mask[lz, ly, lx : lx + n] = True
    return mask


def decode_binary_blocks(data: bytes, block=(32, 32, 32)) -> tuple[tuple, list]:
    """§3.4 format=blocks -> ((gx, gy, gz, label), [(origin, flag, sflags, mask zyx)])."""
    gx, gy, gz, label = struct.unpack_from("<3IQ", data, 0)
    assert (gx * 8, gy * 8, gz * 8) == block
    pos = 20
    out = []
    while pos < len(data):
        x0, y0, z0, flag = struct.unpack_from("<3iB", data, pos)
        pos += 13
        mask = np.zeros((gz * 8, gy * 8, gx * 8), bool)
        sflags = []
        if flag == 1:
            mask[:] = True
        elif flag == 2:
            for sb in range(gx * gy * gz):
                sz, sy, sx = sb // (gx * gy), (sb // gx) % gy, sb % gx
                sflag = data[pos]
                pos += 1
                sflags.append(sflag)
                cube = mask[sz * 8 : sz * 8 + 8, sy * 8 : sy * 8 + 8, sx * 8 : sx * 8 + 8]
                if sflag == 1:
                    cube[:] = True
                elif sflag == 2:
                    bits = np.frombuffer(data, np.uint8, 64, pos)
                    pos += 64
                    cube[:] = np.unpackbits(bits, bitorder="little").reshape(8, 8, 8) == 1
                else:
                    assert sflag == 0, sflag
        else:
            assert flag == 0, flag
        out.append(((x0, y0, z0), flag, sflags, mask))
    assert pos == len(data)
    return (gx, gy, gz, label), out


def assemble(blocks: list, shape=(64, 64, 64), origin=(0, 0, 0)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    ox, oy, oz = origin
    for (x0, y0, z0), _, _, m in blocks:
        lx, ly, lz = x0 - ox, y0 - oy, z0 - oz
        nz, ny, nx = m.shape
        mask[lz : lz + nz, ly : ly + ny, lx : lx + nx] |= m
    return mask


def expand_coarse(runs: np.ndarray) -> list[tuple[int, int, int]]:
    return [(x + i, y, z) for x, y, z, n in runs.tolist() for i in range(n)]


def parse_coarse_multi(data: bytes) -> list[tuple[int, np.ndarray]]:
    """§3.4 sparsevols-coarse: {uint64 label, int32 S, S x 4 int32}..."""
    out, pos = [], 0
    while pos < len(data):
        label, count = struct.unpack_from("<Qi", data, pos)
        pos += 12
        runs = np.frombuffer(data, "<i4", count * 4, pos).reshape(-1, 4).astype(np.int64)
        pos += 16 * count
        out.append((label, runs))
    assert pos == len(data)
    return out


def parse_stream(data: bytes) -> list[tuple[tuple[int, int, int], bytes]]:
    """§3.2 block stream records."""
    out, pos = [], 0
    while pos < len(data):
        bx, by, bz, n = struct.unpack_from("<iiiI", data, pos)
        pos += 16
        assert n > 0 and pos + n <= len(data)
        out.append(((bx, by, bz), data[pos : pos + n]))
        pos += n
    return out


def stream(*records: tuple[tuple[int, int, int], np.ndarray]) -> bytes:
    """A POST /blocks body: gzip'd §3.1 blocks."""
    parts = []
    for (bx, by, bz), voxels in records:
        payload = gzip.compress(codecs.encode_block(np.ascontiguousarray(voxels, np.uint64)))
        parts.append(struct.pack("<iiiI", bx, by, bz, len(payload)) + payload)
    return b"".join(parts)


def decode_payload(payload: bytes, mode: str, shape=(32, 32, 32)) -> np.ndarray:
    n = int(np.prod(shape)) * 8
    if mode == "blocks":
        return codecs.decode_block(gzip.decompress(payload), shape)
    if mode == "lz4":
        raw = lz4.block.decompress(payload, uncompressed_size=n)
    elif mode == "gzip":
        raw = gzip.decompress(payload)
    else:
        raw = payload
    assert len(raw) == n
    return np.frombuffer(raw, "<u8").reshape(shape)


def blocks_of(mask: np.ndarray, origin=(0, 0, 0), size: int = BLOCK) -> set[tuple[int, int, int]]:
    zs, ys, xs = np.nonzero(mask)
    ox, oy, oz = origin
    return {
        ((x + ox) // size, (y + oy) // size, (z + oz) // size)
        for x, y, z in zip(xs.tolist(), ys.tolist(), zs.tolist(), strict=True)
    }


def mode2(vol: np.ndarray) -> np.ndarray:
    """§6: 2x2x2 mode ignoring 0, ties to the smallest label."""
    nz, ny, nx = vol.shape
    cells = vol.reshape(nz // 2, 2, ny // 2, 2, nx // 2, 2).transpose(0, 2, 4, 1, 3, 5)
    cells = cells.reshape(-1, 8)
    counts = (cells[:, :, None] == cells[:, None, :]).sum(axis=2)
    counts[cells == 0] = 0
    best = counts.max(axis=1, keepdims=True)
    top = np.where(counts == best, cells, np.uint64(2**64 - 1)).min(axis=1)
    top[best[:, 0] == 0] = 0
    return top.reshape(nz // 2, ny // 2, nx // 2)


# --- POST raw ----------------------------------------------------------------------------


def test_post_raw_lz4_and_gzip_bodies(api: Api) -> None:
    root = new_seg(api, MaxDownresLevel="1")
    a = (np.arange(32**3, dtype=np.uint64) % 7 + 1).reshape(32, 32, 32)
    b = np.full((32, 32, 32), 12, np.uint64)
    body = lz4.block.compress(a.tobytes(), store_size=False)
    r = api.c.post(
        url(root, "raw/0_1_2/32_32_32/0_0_0"), params={"compression": "lz4"}, content=body
    )
    assert r.status_code == 200, r.text
    r = api.c.post(
        url(root, "raw/0_1_2/32_32_32/32_0_0"),
        params={"compression": "gzip"},
        content=gzip.compress(b.tobytes()),
    )
    assert r.status_code == 200, r.text
    got = read_raw(api.c, root, (64, 32, 32))
    np.testing.assert_array_equal(got, np.concatenate([a, b], axis=2))
    assert api.c.get(url(root, "size/12")).json() == {"voxels": 32**3}
    assert api.c.get(url(root, "size/3")).json() == {"voxels": int((a == 3).sum())}
    np.testing.assert_array_equal(
        read_raw(api.c, root, (32, 16, 16), scale=1), mode2(np.concatenate([a, b], axis=2))
    )


def test_post_raw_compressed_wrong_size_is_400_and_writes_nothing(seg) -> None:
    api, root, vol = seg
    short = np.full(16 * 32 * 32, 4, "<u8").tobytes()
    long = np.full(2 * 32**3, 4, "<u8").tobytes()
    cases = {
        "lz4-short": ("lz4", lz4.block.compress(short, store_size=False)),
        "lz4-long": ("lz4", lz4.block.compress(long, store_size=False)),
        "gzip-short": ("gzip", gzip.compress(short)),
        "gzip-long": ("gzip", gzip.compress(long)),
        "gzip-corrupt": ("gzip", b"\x1f\x8b not really gzip"),
    }
    info = api.c.get(url(root, "info")).json()
    statuses = {}
    for name, (compression, body) in cases.items():
        r = api.c.post(
            url(root, "raw/0_1_2/32_32_32/64_0_0"),
            params={"compression": compression},
            content=body,
        )
        statuses[name] = r.status_code
    assert statuses == dict.fromkeys(cases, 400)
    assert not read_raw(api.c, root, (32, 32, 32), (64, 0, 0)).any()
    np.testing.assert_array_equal(read_raw(api.c, root), vol)
    assert api.c.get(url(root, "size/4")).status_code == 404
    assert listlabels(api.c, root) == [A, C, D, BIG]
    assert api.c.get(url(root, "info")).json() == info


# --- sparse volumes ----------------------------------------------------------------------


def test_sparsevol_rles_and_srles_give_the_voxels(seg) -> None:
    api, root, vol = seg
    for label in (A, C, BIG):
        rles = api.c.get(url(root, f"sparsevol/{label}"))
        assert rles.status_code == 200
        np.testing.assert_array_equal(rasterize(parse_rles(rles.content)), vol == label)
        srles = api.c.get(url(root, f"sparsevol/{label}"), params={"format": "srles"})
        assert srles.status_code == 200
        np.testing.assert_array_equal(rasterize(parse_srles(srles.content)), vol == label)


def test_sparsevol_binary_blocks(seg) -> None:
    api, root, vol = seg
    for label in (A, BIG):
        r = api.c.get(url(root, f"sparsevol/{label}"), params={"format": "blocks"})
        assert r.status_code == 200
        (gx, gy, gz, got_label), blocks = decode_binary_blocks(r.content)
        assert (gx, gy, gz, got_label) == (4, 4, 4, label)
        origins = [o for o, *_ in blocks]
        assert origins == sorted(origins, key=lambda o: (o[2], o[1], o[0])), "not ZYX-sorted"
        assert {(x // 32, y // 32, z // 32) for x, y, z in origins} == blocks_of(vol == label)
        assert all(x % 32 == 0 and y % 32 == 0 and z % 32 == 0 for x, y, z in origins)
        np.testing.assert_array_equal(assemble(blocks), vol == label)
        if label == A:
            flags = {o: (f, s) for o, f, s, _ in blocks}
            assert flags[(0, 0, 0)][0] == 1  # the solid block
            mixed = flags[(32, 0, 0)]
            assert mixed[0] == 2 and {0, 1, 2} <= set(mixed[1])


def test_sparsevol_bounds_exact_and_not(seg) -> None:
    api, root, vol = seg
    z, y, x = np.mgrid[0:64, 0:64, 0:64]
    bounds = {"minx": 10, "maxx": 40, "miny": 5, "maxy": 20, "minz": 8, "maxz": 12}
    inside = (x >= 10) & (x <= 40) & (y >= 5) & (y <= 20) & (z >= 8) & (z <= 12)
    for params in (bounds, {**bounds, "exact": "true"}):
        r = api.c.get(url(root, f"sparsevol/{A}"), params=params)
        assert r.status_code == 200
        np.testing.assert_array_equal(rasterize(parse_rles(r.content)), (vol == A) & inside)
    # exact=false: the runs of every whole block meeting the bounds: (0,0,0) and (1,0,0)
    r = api.c.get(url(root, f"sparsevol/{A}"), params={**bounds, "exact": "false"})
    assert r.status_code == 200
    np.testing.assert_array_equal(
        rasterize(parse_rles(r.content)), (vol == A) & (y < 32) & (z < 32)
    )
    # format=blocks: bounds at block granularity only
    r = api.c.get(url(root, f"sparsevol/{A}"), params={**bounds, "format": "blocks"})
    _, blocks = decode_binary_blocks(r.content)
    assert [o for o, *_ in blocks] == [(0, 0, 0), (32, 0, 0)]
    np.testing.assert_array_equal(assemble(blocks), (vol == A) & (y < 32) & (z < 32))
    # one-sided bounds
    r = api.c.get(url(root, f"sparsevol/{BIG}"), params={"minz": 50})
    np.testing.assert_array_equal(rasterize(parse_rles(r.content)), (vol == BIG) & (z >= 50))


def test_sparsevol_bounds_status_rules(seg) -> None:
    api, root, _ = seg
    # A has no block with z >= 32: 404 for GET, 204 for HEAD
    assert api.c.get(url(root, f"sparsevol/{A}"), params={"minz": 40}).status_code == 404
    assert api.c.head(url(root, f"sparsevol/{A}"), params={"minz": 40}).status_code == 204
    assert api.c.head(url(root, f"sparsevol/{A}"), params={"maxz": 40}).status_code == 200
    # block (1,1,0) meets the bounds but its A voxels (x 32..39) are all clipped: 200
    params = {"minx": 50, "miny": 40, "maxz": 10}
    r = api.c.get(url(root, f"sparsevol/{A}"), params=params)
    assert r.status_code == 200
    assert r.content == b"" or len(parse_rles(r.content)) == 0


def test_sparsevol_at_scale_1(seg) -> None:
    api, root, vol = seg
    half = mode2(vol)
    np.testing.assert_array_equal(
        read_raw(api.c, root, (32, 32, 32), supervoxels="true", scale=1), half
    )
    for label in (A, BIG):
        r = api.c.get(url(root, f"sparsevol/{label}"), params={"scale": 1})
        assert r.status_code == 200
        np.testing.assert_array_equal(rasterize(parse_rles(r.content), (32, 32, 32)), half == label)
    z = np.mgrid[0:32, 0:32, 0:32][0]
    r = api.c.get(url(root, f"sparsevol/{BIG}"), params={"scale": 1, "minz": 25})
    np.testing.assert_array_equal(
        rasterize(parse_rles(r.content), (32, 32, 32)), (half == BIG) & (z >= 25)
    )
    r = api.c.get(url(root, f"sparsevol/{A}"), params={"scale": 1, "format": "blocks"})
    _, blocks = decode_binary_blocks(r.content)
    assert [o for o, *_ in blocks] == [(0, 0, 0)]
    np.testing.assert_array_equal(assemble(blocks, (32, 32, 32)), half == A)
    assert api.c.get(url(root, f"sparsevol/{A}"), params={"scale": 2}).status_code == 400


def test_sparsevol_compressed_bodies(seg) -> None:
    api, root, vol = seg
    plain = api.c.get(url(root, f"sparsevol/{BIG}")).content
    r = api.c.get(url(root, f"sparsevol/{BIG}"), params={"compression": "lz4"})
    assert r.status_code == 200
    body = lz4.block.decompress(r.content, uncompressed_size=len(plain))
    assert len(body) == len(plain)
    np.testing.assert_array_equal(rasterize(parse_rles(body)), vol == BIG)
    r = api.c.get(url(root, f"sparsevol/{BIG}"), params={"compression": "gzip"})
    np.testing.assert_array_equal(rasterize(parse_rles(gzip.decompress(r.content))), vol == BIG)


def test_agglomeration_ingest_and_supervoxel_queries(seg) -> None:
    """The offline flow: POST /indices for the body, delete the supervoxels' own indices,
    POST /mappings; then body and supervoxel queries."""
    api, root, vol = seg
    body = 100
    r = api.c.request("GET", url(root, "indices"), json=[C, D])
    got = pb.LabelIndices()
    got.ParseFromString(r.content)
    merged = pb.LabelIndex(label=body)
    for index in got.indices:
        for key, entry in index.blocks.items():
            merged.blocks[key].counts.update(entry.counts)
    msg = pb.LabelIndices(indices=[merged, pb.LabelIndex(label=C), pb.LabelIndex(label=D)])
    assert api.c.post(url(root, "indices"), content=msg.SerializeToString()).status_code == 200
    ops = pb.MappingOps(mappings=[pb.MappingOp(mapped=body, original=[C, D])])
    assert api.c.post(url(root, "mappings"), content=ops.SerializeToString()).status_code == 200

    both = np.isin(vol, [C, D])
    r = api.c.get(url(root, f"sparsevol/{body}"))
    np.testing.assert_array_equal(rasterize(parse_rles(r.content)), both)
    assert api.c.get(url(root, f"size/{body}")).json() == {"voxels": int(both.sum())}
    assert sorted(api.c.get(url(root, f"supervoxels/{body}")).json()) == [C, D]
    sv = api.c.get(url(root, f"sparsevol/{C}"), params={"supervoxels": "true"})
    assert sv.status_code == 200
    np.testing.assert_array_equal(rasterize(parse_rles(sv.content)), vol == C)
    sv = api.c.get(url(root, f"sparsevol/{D}"), params={"supervoxels": "true", "format": "srles"})
    np.testing.assert_array_equal(rasterize(parse_srles(sv.content)), vol == D)
    size = api.c.get(url(root, f"size/{D}"), params={"supervoxels": "true"}).json()
    assert size == {"voxels": int((vol == D).sum())}
    coarse = api.c.get(url(root, f"sparsevol-coarse/{C}"), params={"supervoxels": "true"})
    assert expand_coarse(parse_rles(coarse.content)) == [(0, 1, 1)]
    assert api.c.get(url(root, f"sparsevol/{C}")).status_code == 404  # no body index for 8
    assert listlabels(api.c, root) == [A, body, BIG]
    np.testing.assert_array_equal(read_raw(api.c, root), np.where(both, body, vol))
    np.testing.assert_array_equal(read_raw(api.c, root, supervoxels="true"), vol)
    assert api.c.get(url(root, "label/12_42_42")).json() == {"Label": body}
    r = api.c.get(url(root, "label/12_42_42"), params={"supervoxels": "true"})
    assert r.json() == {"Label": C}
    r = api.c.get(url(root, "sparsevol-by-point/12_42_42"), params={"supervoxels": "true"})
    np.testing.assert_array_equal(rasterize(parse_rles(r.content)), vol == C)
    # later voxel writes index supervoxels under their mapped body
    more = np.full((32, 32, 32), C, np.uint64)
    r = api.c.post(url(root, "raw/0_1_2/32_32_32/64_0_0"), content=more.tobytes())
    assert r.status_code == 200, r.text
    assert api.c.get(url(root, f"size/{body}")).json() == {"voxels": int(both.sum()) + 32**3}
    assert api.c.get(url(root, f"size/{C}")).status_code == 404
    assert sorted(api.c.get(url(root, f"supervoxels/{body}")).json()) == [C, D]
    coarse = api.c.get(url(root, f"sparsevol-coarse/{C}"), params={"supervoxels": "true"})
    assert expand_coarse(parse_rles(coarse.content)) == [(2, 0, 0), (0, 1, 1)]  # z, y, x


def test_sparsevol_coarse_content(seg) -> None:
    api, root, vol = seg
    r = api.c.get(url(root, f"sparsevol-coarse/{A}"))
    assert r.status_code == 200
    runs = parse_rles(r.content)
    assert runs.tolist() == [[0, 0, 0, 2], [1, 1, 0, 1]]
    for label in (BIG, C, D):
        runs = parse_rles(api.c.get(url(root, f"sparsevol-coarse/{label}")).content)
        coords = expand_coarse(runs)
        assert coords == sorted(coords, key=lambda c: (c[2], c[1], c[0]))
        assert set(coords) == blocks_of(vol == label) and len(coords) == len(set(coords))
    assert api.c.get(url(root, "sparsevol-coarse/4242")).status_code == 404


def test_sparsevols_coarse_over_a_range(seg) -> None:
    api, root, vol = seg
    r = api.c.get(url(root, f"sparsevols-coarse/6/{2**41}"))
    assert r.status_code == 200
    got = parse_coarse_multi(r.content)
    assert [label for label, _ in got] == [C, D, BIG]
    for label, runs in got:
        coords = expand_coarse(runs)
        assert coords == sorted(coords, key=lambda c: (c[2], c[1], c[0]))
        assert set(coords) == blocks_of(vol == label)
    one = parse_coarse_multi(api.c.get(url(root, f"sparsevols-coarse/{C}/{C}")).content)
    assert [label for label, _ in one] == [C]
    whole = parse_coarse_multi(api.c.get(url(root, f"sparsevols-coarse/1/{2**63}")).content)
    assert [label for label, _ in whole] == [A, C, D, BIG]
    assert api.c.get(url(root, "sparsevols-coarse/10/1000")).content == b""


# --- block streams -----------------------------------------------------------------------


def test_get_blocks_every_compression_at_both_scales(seg) -> None:
    api, root, vol = seg
    half = read_raw(api.c, root, (32, 32, 32), scale=1)
    for mode in (None, "lz4", "gzip", "uncompressed", "blocks"):
        params = {"compression": mode} if mode else {}
        r = api.c.get(url(root, "blocks/64_64_64/0_0_0"), params=params)
        assert r.status_code == 200
        records = parse_stream(r.content)
        assert sorted(c for c, _ in records) == sorted(
            (x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)
        )
        for (bx, by, bz), payload in records:
            np.testing.assert_array_equal(
                decode_payload(payload, mode or "lz4"),  # lz4 is the default
                vol[bz * 32 : bz * 32 + 32, by * 32 : by * 32 + 32, bx * 32 : bx * 32 + 32],
                err_msg=f"compression={mode} block {(bx, by, bz)}",
            )
        r = api.c.get(url(root, "blocks/32_32_32/0_0_0"), params={**params, "scale": 1})
        ((coord, payload),) = parse_stream(r.content)
        assert coord == (0, 0, 0)
        np.testing.assert_array_equal(decode_payload(payload, mode or "lz4"), half)
        # absent blocks are omitted
        assert api.c.get(url(root, "blocks/32_32_32/64_0_0"), params=params).content == b""


def test_specificblocks_default_blocks_and_scale(seg) -> None:
    api, root, vol = seg
    r = api.c.get(url(root, "specificblocks"), params={"blocks": "1,0,0,0,1,1,7,7,7"})
    assert r.status_code == 200
    records = dict(parse_stream(r.content))
    assert sorted(records) == [(0, 1, 1), (1, 0, 0)]
    np.testing.assert_array_equal(decode_payload(records[(1, 0, 0)], "blocks"), vol[:32, :32, 32:])
    np.testing.assert_array_equal(decode_payload(records[(0, 1, 1)], "blocks"), vol[32:, 32:, :32])
    r = api.c.get(url(root, "specificblocks"), params={"blocks": "0,0,0", "scale": 1})
    ((coord, payload),) = parse_stream(r.content)
    assert coord == (0, 0, 0)
    np.testing.assert_array_equal(decode_payload(payload, "blocks"), mode2(vol))


def test_blocks_mapped_unless_supervoxels(seg) -> None:
    api, root, vol = seg
    ops = pb.MappingOps(mappings=[pb.MappingOp(mapped=A, original=[C, D])])
    assert api.c.post(url(root, "mappings"), content=ops.SerializeToString()).status_code == 200
    mapped = np.where(np.isin(vol, [C, D]), A, vol)
    for mode in ("blocks", "lz4", "uncompressed"):
        for sv, want in (("false", mapped), ("true", vol)):
            r = api.c.get(
                url(root, "blocks/64_64_64/0_0_0"),
                params={"compression": mode, "supervoxels": sv},
            )
            for (bx, by, bz), payload in parse_stream(r.content):
                np.testing.assert_array_equal(
                    decode_payload(payload, mode),
                    want[bz * 32 : bz * 32 + 32, by * 32 : by * 32 + 32, bx * 32 : bx * 32 + 32],
                    err_msg=f"{mode} supervoxels={sv} block {(bx, by, bz)}",
                )
    r = api.c.get(url(root, "specificblocks"), params={"blocks": "0,1,1"})
    ((_, payload),) = parse_stream(r.content)
    raw = gzip.decompress(payload)
    (n,) = struct.unpack_from("<I", raw, 12)
    table = np.frombuffer(raw, "<u8", n, 16).tolist()
    assert C not in table and A in table  # table entries replaced by bodies
    r = api.c.get(url(root, "specificblocks"), params={"blocks": "0,1,1", "supervoxels": "true"})
    ((_, payload),) = parse_stream(r.content)
    np.testing.assert_array_equal(decode_payload(payload, "blocks"), vol[32:, 32:, :32])


# --- POST blocks / ingest-supervoxels ---------------------------------------------------


def test_post_blocks_rejections_write_nothing(api: Api) -> None:
    root = new_seg(api, MaxDownresLevel="1")
    good = stream(((0, 0, 0), np.full((32, 32, 32), 4, np.uint64)))
    small = stream(((1, 0, 0), np.full((16, 16, 16), 6, np.uint64)))
    raw_payload = codecs.encode_block(np.full((32, 32, 32), 6, np.uint64))
    not_gzip = struct.pack("<iiiI", 1, 0, 0, len(raw_payload)) + raw_payload
    cases = {
        "16³ block in a 32³ instance": (good + small, {}),
        "truncated stream": (good + small[:-3], {}),
        "truncated header": (good + small[:10], {}),
        "payload not gzip": (good + not_gzip, {}),
        "downres at scale 1": (good, {"scale": 1, "downres": "true"}),
        "scale beyond MaxDownresLevel": (good, {"scale": 2}),
    }
    bad = {}
    for name, (body, params) in cases.items():
        for endpoint in ("blocks", "ingest-supervoxels"):
            if "downres" in params and endpoint != "blocks":
                continue
            r = api.c.post(url(root, endpoint), params=params, content=body)
            if r.status_code != 400:
                bad[f"{endpoint}: {name}"] = r.status_code
    assert not bad, bad
    for scale in (0, 1):
        assert not read_raw(api.c, root, (64, 32, 32), scale=scale, supervoxels="true").any()
    assert api.c.get(url(root, "size/4")).status_code == 404
    assert listlabels(api.c, root) == []


def test_post_blocks_scale0_indexes_and_downres_only_when_asked(api: Api) -> None:
    root = new_seg(api, MaxDownresLevel="1")
    blk = volume()[:32, :32, 32:]  # block (1,0,0) of the sample: A slab + ball, background
    r = api.c.post(url(root, "blocks"), content=stream(((0, 0, 0), blk)))
    assert r.status_code == 200 and r.content == b""
    np.testing.assert_array_equal(read_raw(api.c, root, (32, 32, 32)), blk)
    assert api.c.get(url(root, f"size/{A}")).json() == {"voxels": int((blk == A).sum())}
    assert not read_raw(api.c, root, (16, 16, 16), scale=1).any()  # no downres asked
    r = api.c.post(
        url(root, "blocks"), params={"downres": "true"}, content=stream(((1, 0, 0), blk))
    )
    assert r.status_code == 200
    np.testing.assert_array_equal(
        read_raw(api.c, root, (16, 16, 16), (16, 0, 0), scale=1), mode2(blk)
    )
    assert api.c.get(url(root, f"size/{A}")).json() == {"voxels": 2 * int((blk == A).sum())}
    r = api.c.post(
        url(root, "blocks"),
        params={"noindexing": "true"},
        content=stream(((2, 0, 0), np.full((32, 32, 32), 33, np.uint64))),
    )
    assert r.status_code == 200
    assert read_raw(api.c, root, (1, 1, 1), (64, 0, 0))[0, 0, 0] == 33
    assert api.c.get(url(root, "size/33")).status_code == 404
    assert api.c.get(url(root, "maxlabel")).json() == {"maxlabel": 33}
    assert api.c.get(url(root, "info")).json()["Extents"]["MaxPoint"] == [95, 31, 31]


def test_downres_recomputes_only_the_changed_octants(api: Api) -> None:
    """§6: for a scale-1 block only the octants whose scale-0 child changed are recomputed;
    the others keep their current content."""
    root = new_seg(api, MaxDownresLevel="1")
    blk = volume()[:32, :32, 32:]
    assert api.c.post(url(root, "blocks"), content=stream(((0, 0, 0), blk))).status_code == 200
    r = api.c.post(
        url(root, "blocks"), params={"downres": "true"}, content=stream(((1, 0, 0), blk))
    )
    assert r.status_code == 200
    np.testing.assert_array_equal(
        read_raw(api.c, root, (16, 16, 16), (16, 0, 0), scale=1), mode2(blk)
    )
    # block (0,0,0) was written without downres: its octant stays as it was (all 0)
    assert not read_raw(api.c, root, (16, 16, 16), scale=1).any()


def test_post_blocks_at_scale1_stored_as_is_without_index(api: Api) -> None:
    root = new_seg(api, MaxDownresLevel="1")
    blk = (np.arange(32**3, dtype=np.uint64) % 5 + 50).reshape(32, 32, 32)
    r = api.c.post(url(root, "blocks"), params={"scale": 1}, content=stream(((0, 0, 0), blk)))
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(read_raw(api.c, root, (32, 32, 32), scale=1), blk)
    assert not read_raw(api.c, root).any()
    assert api.c.get(url(root, "size/50")).status_code == 404
    assert listlabels(api.c, root) == []
    assert api.c.get(url(root, "maxlabel")).status_code == 400  # nothing recorded at scale 0


def test_ingest_supervoxels_writes_voxels_only(api: Api) -> None:
    root = new_seg(api, MaxDownresLevel="1")
    vol = volume()
    records = [
        ((bx, by, bz), vol[bz * 32 : bz * 32 + 32, by * 32 : by * 32 + 32, bx * 32 : bx * 32 + 32])
        for bx in (0, 1)
        for by in (0, 1)
        for bz in (0, 1)
    ]
    r = api.c.post(url(root, "ingest-supervoxels"), content=stream(*records))
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(read_raw(api.c, root), vol)
    assert api.c.get(url(root, f"size/{A}")).status_code == 404
    assert api.c.get(url(root, f"sparsevol/{A}")).status_code == 404
    assert listlabels(api.c, root) == []
    assert api.c.get(url(root, "maxlabel")).status_code == 400
    info = api.c.get(url(root, "info")).json()
    assert info["Extended"]["MaxRepoLabel"] == 0
    assert info["Extents"]["MaxPoint"] is None  # extents are the client's job here
    assert not read_raw(api.c, root, (32, 32, 32), scale=1).any()  # no downres
    r = api.c.post(
        url(root, "ingest-supervoxels"),
        params={"scale": 1},
        content=stream(((0, 0, 0), mode2(vol))),
    )
    assert r.status_code == 200
    np.testing.assert_array_equal(read_raw(api.c, root, (32, 32, 32), scale=1), mode2(vol))
    # the client completes the bookkeeping: indices and max label
    index = pb.LabelIndex(label=A)
    for key in blocks_of(vol == A):
        sub = vol[
            key[2] * 32 : key[2] * 32 + 32,
            key[1] * 32 : key[1] * 32 + 32,
            key[0] * 32 : key[0] * 32 + 32,
        ]
        index.blocks[block_key(*key)].counts[A] = int((sub == A).sum())
    msg = pb.LabelIndices(indices=[index])
    assert api.c.post(url(root, "indices"), content=msg.SerializeToString()).status_code == 200
    assert api.c.get(url(root, f"size/{A}")).json() == {"voxels": int((vol == A).sum())}
    r = api.c.get(url(root, f"sparsevol/{A}"))
    np.testing.assert_array_equal(rasterize(parse_rles(r.content)), vol == A)
    assert api.c.post(url(root, f"maxlabel/{BIG}")).status_code == 200
    assert api.c.get(url(root, "maxlabel")).json() == {"maxlabel": BIG}


def test_block_keys_and_negative_coordinates(api: Api) -> None:
    root = new_seg(api, MaxDownresLevel="1")
    blk = np.full((32, 32, 32), 3, np.uint64)
    r = api.c.post(url(root, "raw/0_1_2/32_32_32/-32_64_-96"), content=blk.tobytes())
    assert r.status_code == 200, r.text
    index = pb.LabelIndex()
    index.ParseFromString(api.c.get(url(root, "index/3")).content)
    assert list(index.blocks) == [block_key(-1, 2, -3)]
    assert dict(index.blocks[block_key(-1, 2, -3)].counts) == {3: 32**3}
    assert api.c.get(url(root, "label/-1_64_-96")).json() == {"Label": 3}
    assert api.c.get(url(root, "label/0_64_-96")).json() == {"Label": 0}
    runs = parse_rles(api.c.get(url(root, "sparsevol/3")).content)
    assert rasterize(runs, (32, 32, 32), (-32, 64, -96)).all()
    coarse = parse_rles(api.c.get(url(root, "sparsevol-coarse/3")).content)
    assert expand_coarse(coarse) == [(-1, 2, -3)]
    # scale 1: block coords floor-divide to (-1, 1, -2); the 16³ cube sits at -16, 32, -48
    half = api.c.get(url(root, "sparsevol/3"), params={"scale": 1})
    assert half.status_code == 200
    assert rasterize(parse_rles(half.content), (16, 16, 16), (-16, 32, -48)).all()
    size = api.c.get(url(root, "sparsevol-size/3")).json()
    assert size == {
        "voxels": 32**3,
        "numblocks": 1,
        "minvoxel": [-32, 64, -96],
        "maxvoxel": [-1, 95, -65],
    }
    ext = api.c.get(url(root, "info")).json()["Extents"]
    assert ext == {"MinPoint": [-32, 64, -96], "MaxPoint": [-1, 95, -65]}


# --- index access ------------------------------------------------------------------------


def test_index_post_get_and_delete(seg) -> None:
    api, root, vol = seg
    index = pb.LabelIndex(
        label=777,
        last_mutid=12,
        last_mod_time="2024-01-02T03:04:05Z",
        last_mod_user="alice",
        last_mod_app="neu3",
    )
    index.blocks[block_key(1, 0, 0)].counts[777] = 10
    index.blocks[block_key(-1, 2, 3)].counts.update({777: 3, 778: 2})
    assert api.c.post(url(root, "index/777"), content=index.SerializeToString()).status_code == 200
    got = pb.LabelIndex()
    r = api.c.get(url(root, "index/777"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    got.ParseFromString(r.content)
    assert got == index
    meta = api.c.get(url(root, "index/777"), params={"metadata-only": "true"}).json()
    assert meta == {
        "num_voxels": 15,
        "last_mutid": 12,
        "last_mod_time": "2024-01-02T03:04:05Z",
        "last_mod_user": "alice",
        "last_mod_app": "neu3",
    }
    assert api.c.get(url(root, "size/777")).json() == {"voxels": 15}
    assert sorted(api.c.get(url(root, "supervoxels/777")).json()) == [777, 778]
    coarse = expand_coarse(parse_rles(api.c.get(url(root, "sparsevol-coarse/777")).content))
    assert coarse == [(1, 0, 0), (-1, 2, 3)]
    assert listlabels(api.c, root) == [A, C, D, 777, BIG]
    np.testing.assert_array_equal(
        read_raw(api.c, root, supervoxels="true"), vol
    )  # voxels untouched
    # label in the body must match the path
    r = api.c.post(url(root, "index/778"), content=index.SerializeToString())
    assert r.status_code == 400
    assert api.c.get(url(root, "index/778")).status_code == 404
    assert api.c.post(url(root, "index/777"), content=b"\xff\xff\xff").status_code == 400
    # empty blocks: delete
    empty = pb.LabelIndex(label=777)
    assert api.c.post(url(root, "index/777"), content=empty.SerializeToString()).status_code == 200
    assert api.c.get(url(root, "index/777")).status_code == 404
    assert api.c.get(url(root, "size/777")).status_code == 404
    assert listlabels(api.c, root) == [A, C, D, BIG]


def test_indices_get_and_post(seg) -> None:
    api, root, vol = seg
    r = api.c.request("GET", url(root, "indices"), json=[A, 12345, C])
    assert r.status_code == 200
    got = pb.LabelIndices()
    got.ParseFromString(r.content)
    assert [i.label for i in got.indices] == [A, 12345, C]
    assert len(got.indices[1].blocks) == 0
    for index, label in ((got.indices[0], A), (got.indices[2], C)):
        assert sum(sum(e.counts.values()) for e in index.blocks.values()) == (vol == label).sum()
        assert {codecs.decode_block_key(k) for k in index.blocks} == blocks_of(vol == label)
        assert set(index.blocks) == {block_key(*b) for b in blocks_of(vol == label)}
    # POST: store, delete (empty blocks), raise max label
    high = 2**45
    new = pb.LabelIndex(label=high)
    new.blocks[block_key(5, 5, 5)].counts[high] = 9
    msg = pb.LabelIndices(indices=[new, pb.LabelIndex(label=D)])
    assert api.c.post(url(root, "indices"), content=msg.SerializeToString()).status_code == 200
    assert api.c.get(url(root, f"size/{high}")).json() == {"voxels": 9}
    assert api.c.get(url(root, f"size/{D}")).status_code == 404
    assert listlabels(api.c, root) == [A, C, BIG, high]
    assert api.c.get(url(root, "maxlabel")).json() == {"maxlabel": high}
    assert api.c.get(url(root, "nextlabel")).json() == {"nextlabel": high + 1}
    ext = api.c.get(url(root, "info")).json()["Extended"]
    # DVID reports NextLabel 0 until an admin sets a start
    assert ext["MaxRepoLabel"] == high and ext["NextLabel"] == 0
    # label 0 anywhere in the message: 400, nothing stored
    other = pb.LabelIndex(label=31)
    other.blocks[block_key(0, 0, 0)].counts[31] = 1
    zero = pb.LabelIndex(label=0)
    zero.blocks[block_key(0, 0, 0)].counts[1] = 1
    msg = pb.LabelIndices(indices=[other, zero])
    assert api.c.post(url(root, "indices"), content=msg.SerializeToString()).status_code == 400
    assert api.c.get(url(root, "size/31")).status_code == 404


# --- listing and points ------------------------------------------------------------------


def test_listlabels_start_number_sizes(seg) -> None:
    api, root, vol = seg
    assert listlabels(api.c, root) == [A, C, D, BIG]
    assert listlabels(api.c, root, start=6) == [C, D, BIG]
    assert listlabels(api.c, root, start=C) == [C, D, BIG]
    assert listlabels(api.c, root, number=2) == [A, C]
    assert listlabels(api.c, root, start=9, number=1) == [D]
    assert listlabels(api.c, root, start=BIG + 1) == []
    pairs = listlabels(api.c, root, sizes="true")
    assert pairs == [v for label in (A, C, D, BIG) for v in (label, int((vol == label).sum()))]
    pairs = listlabels(api.c, root, start=6, number=2, sizes="true")
    assert pairs == [C, int((vol == C).sum()), D, int((vol == D).sum())]
    r = api.c.get(url(root, "listlabels"))
    assert r.headers["content-type"] == "application/octet-stream"


def test_points_at_scale_1_outside_and_hash(seg) -> None:
    api, root, vol = seg
    half = mode2(vol)
    for x, y, z in ((0, 0, 0), (24, 10, 12), (31, 31, 31), (6, 21, 20)):
        r = api.c.get(url(root, f"label/{x}_{y}_{z}"), params={"scale": 1})
        assert r.json() == {"Label": int(half[z, y, x])}, (x, y, z)
    points = [[24, 10, 12], [31, 31, 31], [6, 21, 20], [40, 0, 0], [-1, 0, 0]]
    r = api.c.request("GET", url(root, "labels"), params={"scale": 1}, json=points)
    assert r.json() == [int(half[z, y, x]) for x, y, z in points[:3]] + [0, 0]
    outside = [[100, 100, 100], [-5, 0, 0], [0, 0, 64], [0, -1, 0], [10**6, 3, 3]]
    r = api.c.request("GET", url(root, "labels"), json=outside)
    assert r.json() == [0] * len(outside)
    assert api.c.get(url(root, "label/-3_-3_-3")).json() == {"Label": 0}
    body = json.dumps([[1, 1, 1], [50, 60, 60]]).encode()
    good = hashlib.md5(body).hexdigest()
    r = api.c.request("GET", url(root, "labels"), params={"hash": good}, content=body)
    assert r.status_code == 200 and r.json() == [A, BIG]
    bad = hashlib.md5(body + b" ").hexdigest()
    r = api.c.request("GET", url(root, "labels"), params={"hash": bad}, content=body)
    assert r.status_code == 400
    labels = json.dumps([A, C]).encode()
    for path in ("sizes", "mapping"):
        r = api.c.request("GET", url(root, path), params={"hash": bad}, content=labels)
        assert r.status_code == 400, path
        good = hashlib.md5(labels).hexdigest()
        r = api.c.request("GET", url(root, path), params={"hash": good}, content=labels)
        assert r.status_code == 200, path


# --- mapping -----------------------------------------------------------------------------


def test_mapping_lookup_of_unmapped_absent_and_retired_ids(seg) -> None:
    """§5.6: an sv without an entry maps to itself if it exists, else 0 (unless
    nolookup=true); an `x -> 0` entry maps to 0."""
    api, root, _ = seg
    ops = pb.MappingOps(mappings=[pb.MappingOp(mapped=0, original=[D])])
    assert api.c.post(url(root, "mappings"), content=ops.SerializeToString()).status_code == 200
    r = api.c.request("GET", url(root, "mapping"), json=[A, C, BIG, D])
    assert r.json() == [A, C, BIG, 0]
    r = api.c.request("GET", url(root, "mapping"), json=[424242, A])
    assert r.json() == [0, A], "non-existent unmapped supervoxel must map to 0"
    r = api.c.request("GET", url(root, "mapping"), params={"nolookup": "true"}, json=[424242, A])
    assert r.json() == [424242, A]


def test_mappings_per_version_binary_and_cold_start(
    seg, make_client: Callable[..., TestClient]
) -> None:
    api, root, vol = seg
    ops = pb.MappingOps(mappings=[pb.MappingOp(mapped=A, original=[C])])
    assert api.c.post(url(root, "mappings"), content=ops.SerializeToString()).status_code == 200
    api.commit(root)
    child = api.newversion(root)
    side = api.branch(root, "side")
    ops = pb.MappingOps(mappings=[pb.MappingOp(mapped=D, original=[C, BIG])])
    assert api.c.post(url(child, "mappings"), content=ops.SerializeToString()).status_code == 200

    def check(c: TestClient) -> None:
        for uuid, want in ((root, [A, A, BIG, D]), (child, [A, D, D, D]), (side, [A, A, BIG, D])):
            r = c.request("GET", url(uuid, "mapping"), json=[A, C, BIG, D])
            assert r.json() == want, uuid
        assert c.get(url(root, "mappings")).text == f"{C} {A}\n"
        lines = c.get(url(child, "mappings")).text.split("\n")
        assert lines[-1] == "" and sorted(lines[:-1]) == sorted([f"{C} {D}", f"{BIG} {D}"])
        r = c.get(url(child, "mappings"), params={"format": "binary"})
        pairs = np.frombuffer(r.content, "<u8").reshape(-1, 2).tolist()
        assert sorted(pairs) == [[C, D], [BIG, D]]
        r = c.get(url(root, "mappings"), params={"format": "binary"})
        assert np.frombuffer(r.content, "<u8").tolist() == [C, A]
        np.testing.assert_array_equal(read_raw(c, child), np.where(np.isin(vol, [C, BIG]), D, vol))
        np.testing.assert_array_equal(read_raw(c, root), np.where(vol == C, A, vol))
        assert c.get(url(child, "label/12_42_42")).json() == {"Label": D}
        assert c.get(url(side, "label/12_42_42")).json() == {"Label": A}
        assert c.get(url(child, f"size/{BIG}")).json() == {"voxels": int((vol == BIG).sum())}
        assert listlabels(c, child) == [A, C, D, BIG]
        assert c.get(url(child, "maxlabel")).json() == {"maxlabel": BIG}

    check(api.c)
    check(make_client())  # a fresh server process on the same store


# --- versions ----------------------------------------------------------------------------


def test_versions_sizes_sparsevol_listlabels_and_scales(seg) -> None:
    api, root, vol = seg
    api.commit(root)
    child = api.newversion(root)
    side = api.branch(root, "side")
    new_block = np.full((32, 32, 32), NEW, np.uint64)
    r = api.c.post(url(child, "raw/0_1_2/32_32_32/32_32_32"), content=new_block.tobytes())
    assert r.status_code == 200, r.text
    r = api.c.post(
        url(side, "raw/0_1_2/32_32_32/0_0_0"), content=np.full(32**3, 77, "<u8").tobytes()
    )
    assert r.status_code == 200, r.text
    vol_child = vol.copy()
    vol_child[32:, 32:, 32:] = NEW
    vol_side = vol.copy()
    vol_side[:32, :32, :32] = 77
    for uuid, v in ((root, vol), (child, vol_child), (side, vol_side)):
        np.testing.assert_array_equal(read_raw(api.c, uuid), v)
        np.testing.assert_array_equal(read_raw(api.c, uuid, (32, 32, 32), scale=1), mode2(v))
        labels = [A, 77, BIG, NEW]
        r = api.c.request("GET", url(uuid, "sizes"), json=labels)
        assert r.json() == [int((v == label).sum()) for label in labels], uuid
        assert listlabels(api.c, uuid) == sorted(int(u) for u in np.unique(v) if u), uuid
        for label in (A, BIG):
            r = api.c.get(url(uuid, f"sparsevol/{label}"))
            np.testing.assert_array_equal(rasterize(parse_rles(r.content)), v == label)
            coarse = parse_rles(api.c.get(url(uuid, f"sparsevol-coarse/{label}")).content)
            assert set(expand_coarse(coarse)) == blocks_of(v == label), (uuid, label)
    assert api.c.get(url(root, f"size/{NEW}")).status_code == 404
    assert api.c.get(url(side, f"size/{NEW}")).status_code == 404
    assert api.c.get(url(child, "size/77")).status_code == 404
    # max label per version, next label repo-wide
    assert api.c.get(url(root, "maxlabel")).json() == {"maxlabel": BIG}
    assert api.c.get(url(child, "maxlabel")).json() == {"maxlabel": NEW}
    assert api.c.get(url(side, "maxlabel")).json() == {"maxlabel": BIG}
    for uuid in (root, child, side):
        assert api.c.get(url(uuid, "nextlabel")).json() == {"nextlabel": NEW + 1}
    assert api.c.post(url(side, "nextlabel/2")).json() == {"start": NEW + 1, "end": NEW + 2}
    assert api.c.post(url(child, "nextlabel/1")).json() == {"start": NEW + 3, "end": NEW + 3}
    # DVID's newLabels: the version that reserved ids has them as its max label
    ext = api.c.get(url(child, "info")).json()["Extended"]
    assert ext["MaxLabel"][str(version_id(api.c, child))] == NEW + 3
    assert api.c.get(url(side, "maxlabel")).json() == {"maxlabel": NEW + 2}
    ext = api.c.get(url(root, "info")).json()["Extended"]
    assert ext["MaxLabel"][str(version_id(api.c, root))] == BIG
    assert ext["MaxRepoLabel"] == NEW + 3 and ext["NextLabel"] == 0
    assert api.c.get(url(root, "nextlabel")).json() == {"nextlabel": NEW + 4}


def test_locked_node_refuses_every_write(seg) -> None:
    api, root, _ = seg
    api.commit(root)

    def snapshot() -> dict:
        return {
            "raw": read_raw(api.c, root).tobytes(),
            "svs": read_raw(api.c, root, supervoxels="true").tobytes(),
            "half": read_raw(api.c, root, (32, 32, 32), scale=1).tobytes(),
            "mappings": api.c.get(url(root, "mappings")).text,
            "index": api.c.get(url(root, f"index/{A}")).content,
            "nextlabel": api.c.get(url(root, "nextlabel")).json(),
            "maxlabel": api.c.get(url(root, "maxlabel")).json(),
            "labels": listlabels(api.c, root),
            "info": api.c.get(url(root, "info")).json()["Extended"],
        }

    before = snapshot()
    block = np.full((32, 32, 32), 88, np.uint64)
    index = pb.LabelIndex(label=88)
    index.blocks[block_key(0, 0, 0)].counts[88] = 1
    writes = {
        "raw": ("raw/0_1_2/32_32_32/0_0_0", {}, block.tobytes()),
        "raw lz4": (
            "raw/0_1_2/32_32_32/0_0_0",
            {"compression": "lz4"},
            lz4.block.compress(block.tobytes(), store_size=False),
        ),
        "blocks": ("blocks", {}, stream(((0, 0, 0), block))),
        "blocks scale 1": ("blocks", {"scale": 1}, stream(((0, 0, 0), block))),
        "ingest-supervoxels": ("ingest-supervoxels", {}, stream(((0, 0, 0), block))),
        "mappings": (
            "mappings",
            {},
            pb.MappingOps(mappings=[pb.MappingOp(mapped=C, original=[A])]).SerializeToString(),
        ),
        "indices": (
            "indices",
            {},
            pb.LabelIndices(indices=[index, pb.LabelIndex(label=A)]).SerializeToString(),
        ),
        "index": (f"index/{A}", {}, pb.LabelIndex(label=A).SerializeToString()),
        "nextlabel": ("nextlabel/3", {}, b""),
        "maxlabel": (f"maxlabel/{2**44}", {}, b""),
    }
    got = {}
    for name, (path, params, body) in writes.items():
        got[name] = api.c.post(url(root, path), params=params, content=body).status_code
    assert got == dict.fromkeys(writes, 400)
    assert snapshot() == before


# --- info, extents, counters -------------------------------------------------------------


def test_extents_and_counters_grow_with_writes(api: Api) -> None:
    root = new_seg(api)
    vid = str(version_id(api.c, root))
    r = api.c.post(
        url(root, "raw/0_1_2/32_32_32/0_0_0"), content=np.full(32**3, 10, "<u8").tobytes()
    )
    assert r.status_code == 200
    info = api.c.get(url(root, "info")).json()
    ext = info["Extended"]
    assert info["Extents"] == {"MinPoint": [0, 0, 0], "MaxPoint": [31, 31, 31]}
    assert ext["MinPoint"] == [0, 0, 0] and ext["MaxPoint"] == [31, 31, 31]
    assert ext["MinIndex"] == [0, 0, 0] and ext["MaxIndex"] == [0, 0, 0]
    assert ext["MaxLabel"] == {vid: 10}
    assert ext["MaxRepoLabel"] == 10 and ext["NextLabel"] == 0
    r = api.c.post(
        url(root, "blocks"), content=stream(((2, 1, 0), np.full((32, 32, 32), 20, np.uint64)))
    )
    assert r.status_code == 200
    info = api.c.get(url(root, "info")).json()
    ext = info["Extended"]
    assert info["Extents"] == {"MinPoint": [0, 0, 0], "MaxPoint": [95, 63, 31]}
    assert ext["MaxIndex"] == [2, 1, 0]
    assert ext["MaxLabel"] == {vid: 20}
    assert ext["MaxRepoLabel"] == 20 and ext["NextLabel"] == 0
    r = api.c.post(
        url(root, "raw/0_1_2/32_32_32/-32_0_0"), content=np.full(32**3, 3, "<u8").tobytes()
    )
    assert r.status_code == 200
    info = api.c.get(url(root, "info")).json()
    assert info["Extents"] == {"MinPoint": [-32, 0, 0], "MaxPoint": [95, 63, 31]}
    assert info["Extended"]["MaxLabel"] == {vid: 20}  # a smaller label does not lower it
    assert api.c.post(url(root, "nextlabel/5")).json() == {"start": 21, "end": 25}
    ext = api.c.get(url(root, "info")).json()["Extended"]
    assert ext["MaxRepoLabel"] == 25 and ext["NextLabel"] == 0
    assert api.c.get(url(root, "nextlabel")).json() == {"nextlabel": 26}
    assert api.c.post(url(root, "nextlabel/0")).status_code == 400
    assert api.c.post(url(root, "maxlabel/1000")).status_code == 200
    assert api.c.get(url(root, "maxlabel")).json() == {"maxlabel": 1000}
    assert api.c.get(url(root, "nextlabel")).json() == {"nextlabel": 1001}
    assert api.c.post(url(root, "maxlabel/500")).status_code == 200  # never lowers
    assert api.c.get(url(root, "maxlabel")).json() == {"maxlabel": 1000}
    assert api.c.post(url(root, "maxlabel/0")).status_code == 400
    assert api.c.post(url(root, f"maxlabel/{2**48 + 1}")).status_code == 400


def test_metadata_extents_and_resolution_endpoints(api: Api) -> None:
    """§2: GET /metadata, POST /extents, POST /resolution behave as in imageblk."""
    root = new_seg(api)
    problems = []
    r = api.c.post(url(root, "extents"), json={"MinPoint": [0, 0, 0], "MaxPoint": [127, 63, 31]})
    extents = api.c.get(url(root, "info")).json()["Extents"]
    if r.status_code != 200 or extents != {"MinPoint": [0, 0, 0], "MaxPoint": [127, 63, 31]}:
        problems.append(f"POST /extents: {r.status_code} {r.text[:60]!r}, Extents {extents}")
    r = api.c.post(url(root, "resolution"), json=[4, 4, 40])
    voxel_size = api.c.get(url(root, "info")).json()["Extended"]["VoxelSize"]
    if r.status_code != 200 or voxel_size != [4, 4, 40]:
        problems.append(f"POST /resolution: {r.status_code} {r.text[:60]!r}, {voxel_size}")
    r = api.c.get(url(root, "metadata"))
    if r.status_code != 200 or not r.headers["content-type"].startswith(
        "application/vnd.dvid-nd-data+json"
    ):
        problems.append(f"GET /metadata: {r.status_code} {r.text[:60]!r}")
    assert not problems, problems


# --- creation ----------------------------------------------------------------------------


def test_bad_creation_settings(api: Api) -> None:
    root = api.new_repo()
    cases = [
        {"BlockSize": "24,24,24"},
        {"BlockSize": "8,8,8"},
        {"BlockSize": "32,32,40"},
        {"MaxDownresLevel": "256"},
        {"MaxDownresLevel": "-1"},
        {"MaxDownresLevel": "1.5"},
        {"MaxDownresLevel": "two"},
    ]
    accepted = []
    for settings in cases:
        body = {"typename": "labelmap", "dataname": "seg", **settings}
        if api.c.post(f"/api/repo/{root}/instance", json=body).status_code != 400:
            accepted.append(settings)
    assert accepted == []
    assert api.c.get(url(root, "info")).status_code != 200


def test_good_creation_settings(api: Api) -> None:
    root = api.new_repo()
    api.new_instance(root, "labelmap", "seg", BlockSize="16,32,48", MaxDownresLevel="255")
    ext = api.c.get(url(root, "info")).json()["Extended"]
    assert ext["BlockSize"] == [16, 32, 48] and ext["MaxDownresLevel"] == 255
    root = api.new_repo()
    api.new_instance(root, "labelmap", "seg")
    ext = api.c.get(url(root, "info")).json()["Extended"]
    assert ext["BlockSize"] == [64, 64, 64] and ext["MaxDownresLevel"] == 0
    assert ext["VoxelSize"] == [8, 8, 8] and ext["IndexedLabels"] is True


def test_indexed_labels_false(api: Api) -> None:
    root = new_seg(api, IndexedLabels="false")
    vol = volume()
    r = api.c.post(url(root, "raw/0_1_2/64_64_64/0_0_0"), content=vol.tobytes())
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(read_raw(api.c, root), vol)
    assert api.c.get(url(root, "label/50_60_60")).json() == {"Label": BIG}
    assert api.c.get(url(root, "info")).json()["Extended"]["IndexedLabels"] is False
    statuses = {
        path: api.c.get(url(root, path)).status_code
        for path in (
            f"size/{A}",
            f"sparsevol/{A}",
            f"sparsevol-size/{A}",
            f"sparsevol-coarse/{A}",
            "maxlabel",
            "nextlabel",
        )
    }
    statuses["POST nextlabel/1"] = api.c.post(url(root, "nextlabel/1")).status_code
    assert statuses == dict.fromkeys(statuses, 400)


# --- label 0 -----------------------------------------------------------------------------


def test_label_zero_is_400(seg) -> None:
    api, root, vol = seg
    statuses = {
        path: api.c.get(url(root, path)).status_code
        for path in (
            "size/0",
            "size/0?supervoxels=true",
            "sparsevol/0",
            "sparsevol/0?format=blocks",
            "sparsevol-size/0",
            "sparsevol-coarse/0",
            "supervoxels/0",
            "supervoxel-sizes/0",
            "index/0",
            "index/0?metadata-only=true",
        )
    }
    statuses["HEAD sparsevol/0"] = api.c.head(url(root, "sparsevol/0")).status_code
    body = pb.LabelIndex(label=0).SerializeToString()
    statuses["POST index/0"] = api.c.post(url(root, "index/0"), content=body).status_code
    assert vol[0, 0, 63] == 0
    statuses["sparsevol-by-point background"] = api.c.get(
        url(root, "sparsevol-by-point/63_0_0")
    ).status_code
    assert statuses == dict.fromkeys(statuses, 400)
    r = api.c.request("GET", url(root, "sizes"), json=[0, A])
    assert r.json() == [0, int((vol == A).sum())]


# --- cloud stores ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["s3", "gcs"])
def test_ingest_and_read_on_cloud_stores(api: Api, make_client: Callable[..., TestClient]) -> None:
    root = new_seg(api, MaxDownresLevel="1")
    vol = volume()
    body = lz4.block.compress(vol.tobytes(), store_size=False)
    r = api.c.post(
        url(root, "raw/0_1_2/64_64_64/0_0_0"), params={"compression": "lz4"}, content=body
    )
    assert r.status_code == 200, r.text
    extra = np.full((32, 32, 32), NEW, np.uint64)
    assert api.c.post(url(root, "blocks"), content=stream(((2, 0, 0), extra))).status_code == 200
    ops = pb.MappingOps(mappings=[pb.MappingOp(mapped=A, original=[C])])
    assert api.c.post(url(root, "mappings"), content=ops.SerializeToString()).status_code == 200
    for c in (api.c, make_client()):
        np.testing.assert_array_equal(read_raw(c, root, supervoxels="true"), vol)
        np.testing.assert_array_equal(read_raw(c, root), np.where(vol == C, A, vol))
        half = mode2(vol)
        np.testing.assert_array_equal(
            read_raw(c, root, (32, 32, 32), scale=1), np.where(half == C, A, half)
        )
        assert c.get(url(root, f"size/{BIG}")).json() == {"voxels": int((vol == BIG).sum())}
        assert c.get(url(root, f"size/{NEW}")).json() == {"voxels": 32**3}
        r = c.get(url(root, f"sparsevol/{BIG}"))
        np.testing.assert_array_equal(rasterize(parse_rles(r.content)), vol == BIG)
        assert listlabels(c, root) == [A, C, D, BIG, NEW]
        r = c.get(url(root, "specificblocks"), params={"blocks": "2,0,0", "compression": "lz4"})
        ((_, payload),) = parse_stream(r.content)
        np.testing.assert_array_equal(decode_payload(payload, "lz4"), extra)
        assert c.request("GET", url(root, "mapping"), json=[C, D]).json() == [A, D]
