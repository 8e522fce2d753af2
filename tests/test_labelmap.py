"""labelmap through HTTP: ingest, reads in every form, label queries, versions."""

from __future__ import annotations

import gzip

import lz4.block
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.datatypes.labelmap import codecs
from app.datatypes.labelmap.ingest import mode_downsample
from app.proto import labelmap_pb2 as pb
from tests.conftest import Api

BLOCK = 32


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def segmentation(seed: int = 0) -> np.ndarray:
    """A 64³ ZYX volume of a few supervoxels: slabs plus a sphere, with background."""
    z, y, x = np.mgrid[0:64, 0:64, 0:64]
    vol = np.where(x < 20, 7, np.where(x < 40, 9, 11)).astype(np.uint64)
    vol[(x - 32) ** 2 + (y - 32) ** 2 + (z - 32) ** 2 < 12**2] = 1_000_000_000_001 + seed
    vol[:, :4, :] = 0
    return vol


@pytest.fixture
def seg(api: Api) -> tuple[Api, str, np.ndarray]:
    root = api.new_repo()
    api.new_instance(
        root, "labelmap", "seg", BlockSize=f"{BLOCK},{BLOCK},{BLOCK}", MaxDownresLevel="2"
    )
    vol = segmentation()
    r = api.c.post(f"/api/node/{root}/seg/raw/0_1_2/64_64_64/0_0_0", content=vol.tobytes())
    assert r.status_code == 200, r.text
    return api, root, vol


def url(uuid: str, path: str) -> str:
    return f"/api/node/{uuid}/seg/{path}"


def read_raw(c: TestClient, uuid: str, size=(64, 64, 64), offset=(0, 0, 0), **q) -> np.ndarray:
    s = "_".join(map(str, size))
    o = "_".join(map(str, offset))
    r = c.get(url(uuid, f"raw/0_1_2/{s}/{o}"), params=q)
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, dtype="<u8").reshape(size[2], size[1], size[0])


def test_info_has_what_neuroglancer_needs(seg) -> None:
    api, root, _ = seg
    info = api.c.get(url(root, "info")).json()
    ext = info["Extended"]
    assert info["Base"]["TypeName"] == "labelmap"
    assert ext["Values"][0]["DataType"] == "uint64"
    assert ext["MaxDownresLevel"] == 2 and ext["BlockSize"] == [32, 32, 32]
    assert ext["MinPoint"] == [0, 0, 0] and ext["MaxPoint"] == [63, 63, 63]
    assert ext["IndexedLabels"] is True
    assert ext["MaxRepoLabel"] == 1_000_000_000_001
    assert "gzip" in info["Base"]["Compression"]


def test_raw_reads_in_every_compression(seg) -> None:
    api, root, vol = seg
    np.testing.assert_array_equal(read_raw(api.c, root), vol)
    part = read_raw(api.c, root, (10, 20, 30), (5, 6, 7))
    np.testing.assert_array_equal(part, vol[7:37, 6:26, 5:15])
    r = api.c.get(url(root, "raw/0_1_2/64_64_64/0_0_0"), params={"compression": "lz4"})
    raw = lz4.block.decompress(r.content, uncompressed_size=vol.nbytes)
    np.testing.assert_array_equal(np.frombuffer(raw, "<u8").reshape(vol.shape), vol)
    r = api.c.get(url(root, "raw/0_1_2/64_64_64/0_0_0"), params={"compression": "gzip"})
    np.testing.assert_array_equal(np.frombuffer(gzip.decompress(r.content), "<u8"), vol.ravel())
    r = api.c.get(url(root, "raw/0_1_2/64_64_64/0_0_0"), params={"compression": "googlegzip"})
    assert r.headers["content-encoding"] == "gzip"
    # httpx already inflated the Content-Encoding: gzip body
    np.testing.assert_array_equal(codecs.decode_google(r.content, (64, 64, 64)), vol)
    r = api.c.get(url(root, "raw/0_1_2/60_64_64/0_0_0"), params={"compression": "googlegzip"})
    assert r.status_code == 400


def test_lower_scales_are_the_mode(seg) -> None:
    api, root, vol = seg
    half = read_raw(api.c, root, (32, 32, 32), scale=1)
    np.testing.assert_array_equal(half, mode_downsample(vol))
    quarter = read_raw(api.c, root, (16, 16, 16), scale=2)
    np.testing.assert_array_equal(quarter, mode_downsample(mode_downsample(vol)))
    assert api.c.get(url(root, "raw/0_1_2/8_8_8/0_0_0"), params={"scale": 3}).status_code == 400


def test_mode_ignores_zero_and_prefers_smallest() -> None:
    cell = np.array([0, 0, 0, 0, 0, 5, 5, 3], np.uint64).reshape(2, 2, 2)
    assert mode_downsample(cell)[0, 0, 0] == 5
    tie = np.array([0, 0, 0, 0, 9, 9, 4, 4], np.uint64).reshape(2, 2, 2)
    assert mode_downsample(tie)[0, 0, 0] == 4
    assert mode_downsample(np.zeros((2, 2, 2), np.uint64))[0, 0, 0] == 0


def test_point_queries(seg) -> None:
    api, root, vol = seg
    assert api.c.get(url(root, "label/1_10_1")).json() == {"Label": 7}
    assert api.c.get(url(root, "label/32_32_32")).json() == {"Label": 1_000_000_000_001}
    assert api.c.get(url(root, "label/5_1_5")).json() == {"Label": 0}
    points = [[1, 10, 1], [25, 10, 3], [50, 60, 60], [32, 32, 32], [100, 100, 100]]
    r = api.c.request("GET", url(root, "labels"), json=points)
    expected = [int(vol[z, y, x]) if max(x, y, z) < 64 else 0 for x, y, z in points]
    assert r.json() == expected


def test_sizes_and_index(seg) -> None:
    api, root, vol = seg
    for label in (7, 9, 11, 1_000_000_000_001):
        assert api.c.get(url(root, f"size/{label}")).json() == {"voxels": int((vol == label).sum())}
    r = api.c.request("GET", url(root, "sizes"), json=[7, 12345, 9])
    assert r.json() == [int((vol == 7).sum()), 0, int((vol == 9).sum())]
    assert api.c.get(url(root, "size/12345")).status_code == 404
    assert api.c.get(url(root, "size/0")).status_code == 400
    index = pb.LabelIndex()
    index.ParseFromString(api.c.get(url(root, "index/9")).content)
    assert index.label == 9
    assert sum(c for e in index.blocks.values() for c in e.counts.values()) == (vol == 9).sum()
    keys = sorted(codecs.decode_block_key(k) for k in index.blocks)
    assert keys == sorted(
        {(20 // 32, y, z) for y in (0, 1) for z in (0, 1)}
        | {(1, y, z) for y in (0, 1) for z in (0, 1)}
    )
    assert api.c.get(url(root, "supervoxels/9")).json() == [9]
    meta = api.c.get(url(root, "index/9"), params={"metadata-only": "true"}).json()
    assert meta["num_voxels"] == int((vol == 9).sum())


def test_sparsevol_matches_voxels(seg) -> None:
    api, root, vol = seg
    label = 1_000_000_000_001
    r = api.c.get(url(root, f"sparsevol/{label}"))
    assert r.status_code == 200
    runs = codecs.decode_rles(r.content)
    got = np.zeros_like(vol, dtype=bool)
    for x, y, z, n in runs.tolist():
        got[z, y, x : x + n] = True
    np.testing.assert_array_equal(got, vol == label)
    size = api.c.get(url(root, f"sparsevol-size/{label}")).json()
    assert size["voxels"] == int((vol == label).sum()) and size["numblocks"] == 8
    assert size["minvoxel"] == [0, 0, 0] and size["maxvoxel"] == [63, 63, 63]
    bounded = api.c.get(url(root, f"sparsevol/{label}"), params={"minz": 32, "maxz": 35})
    runs = codecs.decode_rles(bounded.content)
    assert runs[:, 2].min() >= 32 and runs[:, 2].max() <= 35
    assert api.c.get(url(root, "sparsevol/424242")).status_code == 404
    assert api.c.head(url(root, "sparsevol/424242")).status_code == 204
    assert api.c.head(url(root, f"sparsevol/{label}")).status_code == 200
    coarse = api.c.get(url(root, "sparsevol-coarse/7")).content
    assert len(coarse) > 12
    by_point = api.c.get(url(root, "sparsevol-by-point/32_32_32"))
    assert by_point.content == r.content


def test_blocks_streams(seg) -> None:
    api, root, vol = seg
    r = api.c.get(url(root, "blocks/64_64_64/0_0_0"), params={"compression": "blocks"})
    records = codecs.read_block_stream(r.content)
    assert len(records) == 8
    for (bx, by, bz), payload in records:
        block = codecs.decode_block(gzip.decompress(payload), (32, 32, 32))
        np.testing.assert_array_equal(
            block, vol[bz * 32 : bz * 32 + 32, by * 32 : by * 32 + 32, bx * 32 : bx * 32 + 32]
        )
    r = api.c.get(
        url(root, "specificblocks"), params={"blocks": "1,1,1,5,5,5", "compression": "uncompressed"}
    )
    ((coord, payload),) = codecs.read_block_stream(r.content)
    assert coord == (1, 1, 1)
    np.testing.assert_array_equal(
        np.frombuffer(payload, "<u8").reshape(32, 32, 32), vol[32:, 32:, 32:]
    )
    assert api.c.get(url(root, "blocks/60_64_64/0_0_0")).status_code == 400


def test_post_blocks_ingests_with_index(api: Api) -> None:
    root = api.new_repo()
    api.new_instance(root, "labelmap", "seg", BlockSize="32,32,32")
    block = np.full((32, 32, 32), 77, np.uint64)
    block[:16] = 78
    stream = codecs.write_block_stream([((2, 0, 1), gzip.compress(codecs.encode_block(block)))])
    assert api.c.post(url(root, "blocks"), content=stream).status_code == 200
    got = read_raw(api.c, root, (32, 32, 32), (64, 0, 32), supervoxels="true")
    np.testing.assert_array_equal(got, block)
    assert api.c.get(url(root, "size/78")).json() == {"voxels": 16 * 32 * 32}
    bad = stream[:-5]
    assert api.c.post(url(root, "blocks"), content=bad).status_code == 400
    assert api.c.post(url(root, "blocks"), content=b"garbage!" * 3).status_code == 400


def test_mappings_change_bodies_not_voxels(seg) -> None:
    api, root, vol = seg
    ops = pb.MappingOps(mappings=[pb.MappingOp(mapped=7, original=[9, 11])])
    assert api.c.post(url(root, "mappings"), content=ops.SerializeToString()).status_code == 200
    r = api.c.request("GET", url(root, "mapping"), json=[9, 11, 7, 5])
    assert r.json() == [7, 7, 7, 0]  # 5 has no voxels: not a live supervoxel
    mapped = read_raw(api.c, root)
    expected = np.where(np.isin(vol, [9, 11]), 7, vol)
    np.testing.assert_array_equal(mapped, expected)
    np.testing.assert_array_equal(read_raw(api.c, root, supervoxels="true"), vol)
    text = api.c.get(url(root, "mappings")).text
    assert sorted(text.split("\n")[:-1]) == ["11 7", "9 7"]


def test_counters(seg) -> None:
    api, root, _ = seg
    assert api.c.get(url(root, "maxlabel")).json() == {"maxlabel": 1_000_000_000_001}
    nxt = api.c.get(url(root, "nextlabel")).json()["nextlabel"]
    r = api.c.post(url(root, "nextlabel/5")).json()
    assert r == {"start": nxt, "end": nxt + 4}
    assert api.c.get(url(root, "nextlabel")).json() == {"nextlabel": nxt + 5}
    labels = np.frombuffer(api.c.get(url(root, "listlabels")).content, "<u8").tolist()
    assert labels == [7, 9, 11, 1_000_000_000_001]


def test_versions_keep_their_own_labels(seg) -> None:
    api, root, vol = seg
    api.commit(root)
    child = api.newversion(root)
    block = np.full((32, 32, 32), 500, np.uint64)
    r = api.c.post(url(child, "raw/0_1_2/32_32_32/0_0_0"), content=block.tobytes())
    assert r.status_code == 200, r.text
    assert api.c.get(url(child, "size/500")).json() == {"voxels": 32**3}
    assert api.c.get(url(root, "size/500")).status_code == 404
    before = int((vol == 7).sum())
    after = int((vol[:, :, :] == 7).sum() - (vol[:32, :32, :32] == 7).sum())
    assert api.c.get(url(root, "size/7")).json() == {"voxels": before}
    assert api.c.get(url(child, "size/7")).json() == {"voxels": after}
    np.testing.assert_array_equal(read_raw(api.c, root), vol)
    assert (
        api.c.post(url(root, "raw/0_1_2/32_32_32/0_0_0"), content=block.tobytes()).status_code
        == 400
    )


@pytest.mark.parametrize(
    ("path", "params", "body"),
    [
        ("raw/0_1_2/30_32_32/0_0_0", {}, b"\0" * 30 * 32 * 32 * 8),
        ("raw/0_1_2/32_32_32/0_0_0", {}, b"\0" * 100),
        ("raw/0_1_2/32_32_32/0_0_0", {"compression": "lz4"}, b"\x10\x00bad"),
        ("raw/0_1_2/32_32_32/0_0_0", {"compression": "zip"}, b""),
        ("raw/xy/32_32/0_0_0", {}, b""),
    ],
)
def test_bad_writes_are_400_and_change_nothing(seg, path, params, body) -> None:
    api, root, vol = seg
    r = api.c.post(url(root, path), params=params, content=body)
    assert r.status_code == 400, r.text
    np.testing.assert_array_equal(read_raw(api.c, root), vol)


def test_slices_are_images_of_mapped_labels(seg) -> None:
    import io

    from PIL import Image

    api, root, vol = seg
    raw = api.c.get(url(root, "raw/xy/64_64/0_0_10/raw"))
    plane = np.frombuffer(raw.content, "<u8").reshape(64, 64)
    np.testing.assert_array_equal(plane, vol[10])
    png = api.c.get(url(root, "raw/xz/64_64/0_33_0"))
    assert png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.size == (64, 64)
    assert png.content[24:26] == bytes([16, 6])  # IHDR: 16-bit RGBA
