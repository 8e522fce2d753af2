"""Volume instances as neuroglancer precomputed volumes, read by real clients.

A real ``dvid-cloud serve`` process (TensorStore and CloudVolume have their own HTTP
stacks) holds a raw uint8blk with a pyramid level, a jpeg uint8blk and a labelmap with
MaxDownresLevel 1, all with extents that are not multiples of the block size, at two
versions that differ in voxels (and, for the labelmap, in the supervoxel -> body
mapping). TensorStore's ``neuroglancer_precomputed`` driver over its http kvstore, and
CloudVolume with ``precomputed://http://...``, must read exactly what was written at each
version (JPEG approximately), also through the moving reference ``:master``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tensorstore as ts

from app.proto import labelmap_pb2 as pb
from tests import live_http as live
from tests.servers import free_port

CLI = shutil.which("dvid-cloud", path=str(Path(sys.executable).parent)) or "dvid-cloud"

GRAY_OFFSET = (5, 3, 0)  # x, y, z: not block-aligned
GRAY_SIZE = (100, 70, 45)
JPEG_SIZE = (80, 50, 40)
SEG_WRITTEN = ((32, 0, 32), (96, 64, 64))  # block-aligned offset, size
SEG_EXTENTS = ((33, 2, 35), (120, 60, 90))  # MinPoint, MaxPoint (inclusive)
SV_MERGED, BODY = 7, 2**40 + 1


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("precomputed-data")
    with tempfile.TemporaryFile() as log:
        for _ in range(3):
            port = free_port()
            proc = subprocess.Popen(
                [CLI, "serve", "--data-dir", str(data), "--port", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ),
            )
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if live.get(f"{url}/api/heartbeat", timeout=1).text == "OK":
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                proc.kill()
                proc.wait()
                continue
            break
        else:
            log.seek(0)
            raise RuntimeError(f"server did not start:\n{log.read()[-2000:].decode()}")
        try:
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=15)


def _ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code == 200, response.text
    return response


def _box(offset: tuple[int, ...], size: tuple[int, ...]) -> str:
    return "_".join(map(str, size)) + "/" + "_".join(map(str, offset))


def gray_volume() -> np.ndarray:
    nx, ny, nz = GRAY_SIZE
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx]
    return ((x * 7 + y * 13 + z * 29) % 251).astype(np.uint8)


def jpeg_volume() -> np.ndarray:
    nx, ny, nz = JPEG_SIZE
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx]
    smooth = 128 + 60 * np.sin(x / 9.0) * np.cos(y / 11.0) + 30 * np.sin(z / 7.0)
    return smooth.astype(np.uint8)


def seg_volume() -> np.ndarray:
    nx, ny, nz = SEG_WRITTEN[1]
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx]
    labels = 1 + x // 7 + 20 * (y // 11) + 400 * (z // 13)
    labels = labels.astype(np.uint64)
    labels[(x + y) % 17 == 0] = 2**45 + 3  # a large id threading through everything
    labels[z > 50] = 0  # background too
    return labels


@pytest.fixture(scope="module")
def repo(base_url: str) -> dict:
    """Two versions of three instances; returns the UUIDs and expected ZYX volumes."""
    c = httpx.Client(base_url=base_url, timeout=60)
    root = _ok(c.post("/api/repos", json={})).json()["root"]
    for typename, name, settings in (
        ("uint8blk", "gray", {"BlockSize": "32,32,32", "VoxelSize": "4,4,40"}),
        ("uint8blk", "jgray", {"BlockSize": "32,32,32", "Compression": "jpeg"}),
        ("labelmap", "seg", {"BlockSize": "32,32,32", "MaxDownresLevel": "1"}),
        ("uint16blk", "empty", {}),
        ("rgba8blk", "color", {"BlockSize": "16,16,16"}),
        ("float32blk", "f32", {"BlockSize": "16,16,16"}),
    ):
        body = {"typename": typename, "dataname": name, **settings}
        _ok(c.post(f"/api/repo/{root}/instance", json=body))

    gray1 = gray_volume()
    jpeg1 = jpeg_volume()
    seg1 = seg_volume()
    node = f"/api/node/{root}"
    _ok(
        c.post(
            f"{node}/gray/raw/0_1_2/{_box(GRAY_OFFSET, GRAY_SIZE)}?downres=true&levels=1",
            content=gray1.tobytes(),
        )
    )
    _ok(c.post(f"{node}/jgray/raw/0_1_2/{_box((0, 0, 0), JPEG_SIZE)}", content=jpeg1.tobytes()))
    _ok(c.post(f"{node}/seg/raw/0_1_2/{_box(*SEG_WRITTEN)}", content=seg1.tobytes()))
    lo, hi = SEG_EXTENTS
    _ok(c.post(f"{node}/seg/extents", json={"MinPoint": list(lo), "MaxPoint": list(hi)}))
    rng = np.random.default_rng(7)
    color = rng.integers(0, 2**32, size=(20, 30, 40), dtype=np.uint32)
    _ok(c.post(f"{node}/color/raw/0_1_2/{_box((-8, 4, 2), (40, 30, 20))}", content=color.tobytes()))
    f32 = rng.standard_normal((20, 30, 40)).astype("<f4")
    _ok(c.post(f"{node}/f32/raw/0_1_2/{_box((0, 0, 0), (40, 30, 20))}", content=f32.tobytes()))
    _ok(c.post(f"{node}/commit", json={"note": "v1"}))
    child = _ok(c.post(f"{node}/newversion", json={})).json()["child"]

    node = f"/api/node/{child}"
    gray2 = gray1.copy()
    gray2[5:25, 10:30, 20:40] = 255 - gray2[5:25, 10:30, 20:40]
    patch = np.ascontiguousarray(gray2[5:25, 10:30, 20:40])
    gray_patch = (GRAY_OFFSET[0] + 20, GRAY_OFFSET[1] + 10, GRAY_OFFSET[2] + 5)
    _ok(
        c.post(
            f"{node}/gray/raw/0_1_2/{_box(gray_patch, (20, 20, 20))}?downres=true&levels=1",
            content=patch.tobytes(),
        )
    )
    jpeg2 = jpeg1.copy()
    jpeg2[8:30, 10:40, 30:70] = 20
    _ok(c.post(f"{node}/jgray/raw/0_1_2/{_box((0, 0, 0), JPEG_SIZE)}", content=jpeg2.tobytes()))
    seg2 = seg1.copy()
    seg2[32:64, 32:64, 32:64] = 99  # one block of the written volume relabelled
    block = np.ascontiguousarray(seg2[32:64, 32:64, 32:64])
    _ok(c.post(f"{node}/seg/raw/0_1_2/{_box((64, 32, 64), (32, 32, 32))}", content=block.tobytes()))
    ops = pb.MappingOps(mappings=[pb.MappingOp(mutid=1, mapped=BODY, original=[SV_MERGED, 99])])
    _ok(c.post(f"{node}/seg/mappings", content=ops.SerializeToString()))
    # The write grew the extents to whole blocks: clip them again.
    _ok(c.post(f"{node}/seg/extents", json={"MinPoint": list(lo), "MaxPoint": list(hi)}))
    bodies2 = np.where(np.isin(seg2, [SV_MERGED, 99]), np.uint64(BODY), seg2)
    c.close()
    return {
        "root": root,
        "child": child,
        "gray": {root: gray1, child: gray2},
        "jgray": {root: jpeg1, child: jpeg2},
        "seg": {root: seg1, child: bodies2},
        "color": color,
        "f32": f32,
    }


def _tensorstore(url: str, scale: int = 0) -> ts.TensorStore:
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "http", "base_url": url},
        "scale_index": scale,
    }
    context = ts.Context({"http_request_concurrency": {"limit": 4}})
    return ts.open(spec, read=True, context=context).result()


def _ts_read(url: str, scale: int = 0) -> tuple[np.ndarray, tuple[int, ...]]:
    """The whole scale as a ZYX array, and its voxel offset (x, y, z)."""
    store = _tensorstore(url, scale)
    xyz = store[..., 0].read().result()
    return np.ascontiguousarray(xyz.transpose(2, 1, 0)), tuple(store.domain.origin[:3])


def _expected_seg(volume: np.ndarray) -> np.ndarray:
    (wx, wy, wz), _ = SEG_WRITTEN
    (lx, ly, lz), (hx, hy, hz) = SEG_EXTENTS
    return volume[lz - wz : hz - wz + 1, ly - wy : hy - wy + 1, lx - wx : hx - wx + 1]


def test_info_describes_scales_extents_and_encodings(base_url: str, repo: dict) -> None:
    root = repo["root"]
    gray = _ok(live.get(f"{base_url}/api/node/{root}/gray/precomputed/info")).json()
    assert gray["@type"] == "neuroglancer_multiscale_volume"
    assert (gray["type"], gray["data_type"], gray["num_channels"]) == ("image", "uint8", 1)
    s0, s1 = gray["scales"]
    assert s0 == {
        "key": "s0",
        "resolution": [4.0, 4.0, 40.0],
        "voxel_offset": list(GRAY_OFFSET),
        "size": list(GRAY_SIZE),
        "chunk_sizes": [[32, 32, 32]],
        "encoding": "raw",
    }
    assert s1["key"] == "s1" and s1["resolution"] == [8.0, 8.0, 80.0]
    assert s1["voxel_offset"] == [2, 1, 0] and s1["size"] == [51, 36, 23]

    jgray = _ok(live.get(f"{base_url}/api/node/{root}/jgray/precomputed/info")).json()
    assert [s["encoding"] for s in jgray["scales"]] == ["jpeg"]

    seg = _ok(live.get(f"{base_url}/api/node/{root}/seg/precomputed/info")).json()
    assert (seg["type"], seg["data_type"]) == ("segmentation", "uint64")
    t0, t1 = seg["scales"]
    assert t0["voxel_offset"] == [33, 2, 35] and t0["size"] == [88, 59, 56]
    assert t1["voxel_offset"] == [16, 1, 17] and t1["size"] == [45, 30, 29]
    assert t1["resolution"] == [16.0, 16.0, 16.0]
    assert t0["encoding"] == "compressed_segmentation"
    assert t0["compressed_segmentation_block_size"] == [8, 8, 8]


@pytest.mark.parametrize("name", ["gray", "seg"])
def test_tensorstore_reads_exact_voxels_at_each_version(
    base_url: str, repo: dict, name: str
) -> None:
    expected_of = _expected_seg if name == "seg" else np.asarray
    results = {}
    for version in (repo["root"], repo["child"]):
        url = f"{base_url}/api/node/{version}/{name}/precomputed"
        got, _ = _ts_read(url)
        expected = expected_of(repo[name][version])
        np.testing.assert_array_equal(got, expected)
        results[version] = got
    assert not np.array_equal(results[repo["root"]], results[repo["child"]])
    # :master follows the branch to its open leaf; :master~1 is the committed root.
    got, _ = _ts_read(f"{base_url}/api/node/:master/{name}/precomputed")
    np.testing.assert_array_equal(got, results[repo["child"]])
    got, _ = _ts_read(f"{base_url}/api/node/:master~1/{name}/precomputed")
    np.testing.assert_array_equal(got, results[repo["root"]])


@pytest.mark.parametrize("name", ["gray", "seg"])
def test_scale_1_equals_the_servers_own_lower_scale(base_url: str, repo: dict, name: str) -> None:
    for version in (repo["root"], repo["child"]):
        got, origin = _ts_read(f"{base_url}/api/node/{version}/{name}/precomputed", scale=1)
        nz, ny, nx = got.shape
        if name == "seg":
            path = f"seg/raw/0_1_2/{_box(origin, (nx, ny, nz))}?scale=1"
        else:
            path = f"gray_1/raw/0_1_2/{_box(origin, (nx, ny, nz))}"
        raw = _ok(live.get(f"{base_url}/api/node/{version}/{path}")).content
        dtype = np.uint64 if name == "seg" else np.uint8
        np.testing.assert_array_equal(got, np.frombuffer(raw, dtype).reshape(got.shape))
        assert got.any()


def test_tensorstore_reads_jpeg_chunks_approximately(base_url: str, repo: dict) -> None:
    for version in (repo["root"], repo["child"]):
        got, origin = _ts_read(f"{base_url}/api/node/{version}/jgray/precomputed")
        expected = repo["jgray"][version]
        assert origin == (0, 0, 0) and got.shape == expected.shape
        error = np.abs(got.astype(int) - expected.astype(int))
        assert error.mean() < 2 and error.max() < 40
    changed = (slice(8, 30), slice(10, 40), slice(30, 70))
    assert np.abs(got[changed].astype(int) - 20).mean() < 2


def test_rgba_is_four_uint8_channels_and_float32_is_raw(base_url: str, repo: dict) -> None:
    root = repo["root"]
    store = _tensorstore(f"{base_url}/api/node/{root}/color/precomputed")
    assert store.dtype == ts.uint8 and tuple(store.domain.origin) == (-8, 4, 2, 0)
    xyzc = store.read().result()
    rgba = repo["color"].view(np.uint8).reshape(20, 30, 40, 4)
    np.testing.assert_array_equal(xyzc, rgba.transpose(2, 1, 0, 3))
    got, _ = _ts_read(f"{base_url}/api/node/{root}/f32/precomputed")
    np.testing.assert_array_equal(got, repo["f32"])


def test_cloudvolume_reads_exact_voxels_at_each_version(base_url: str, repo: dict) -> None:
    cloudvolume = pytest.importorskip("cloudvolume")
    for name, expected_of in (("gray", np.asarray), ("seg", _expected_seg)):
        for ref in (repo["root"], repo["child"], ":master"):
            version = repo["child"] if ref == ":master" else ref
            vol = cloudvolume.CloudVolume(
                f"precomputed://{base_url}/api/node/{ref}/{name}/precomputed",
                mip=0,
                progress=False,
                parallel=1,
                cache=False,
            )
            cutout = np.asarray(vol[vol.bounds])[..., 0]
            got = np.ascontiguousarray(cutout.transpose(2, 1, 0))
            np.testing.assert_array_equal(got, expected_of(repo[name][version]))
    # JPEG, approximately.
    vol = cloudvolume.CloudVolume(
        f"precomputed://{base_url}/api/node/{repo['root']}/jgray/precomputed",
        progress=False,
        parallel=1,
        cache=False,
    )
    got = np.asarray(vol[vol.bounds])[..., 0].transpose(2, 1, 0)
    error = np.abs(got.astype(int) - repo["jgray"][repo["root"]].astype(int))
    assert error.mean() < 2


def test_chunk_files_headers_and_errors(base_url: str, repo: dict) -> None:
    root, child = repo["root"], repo["child"]
    # The last chunk along each axis is clipped at the volume's end: 5+96..105 etc.
    name = "101-105_99-73_32-45"
    bad = live.get(f"{base_url}/api/node/{root}/gray/precomputed/s0/{name}")
    assert bad.status_code == 400  # an end below its start
    name = "101-105_67-73_32-45"
    plain = live.get(
        f"{base_url}/api/node/{root}/gray/precomputed/s0/{name}",
        headers={"Accept-Encoding": "identity"},
    )
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    expected = gray_volume()[32:45, 64:70, 96:100]
    assert plain.content == expected.tobytes()
    assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
    seg_chunk = f"{base_url}/api/node/{root}/seg/precomputed/s0/97-121_34-61_67-91"
    with live.stream("GET", seg_chunk, headers={"Accept-Encoding": "gzip"}) as raw:
        assert raw.status_code == 200 and raw.headers["content-encoding"] == "gzip"
        compressed = b"".join(raw.iter_raw())
    body = gzip.decompress(compressed)
    assert np.frombuffer(body[:4], np.uint32)[0] == 1  # one channel
    # Open versions and branch references are not cached.
    for ref in (child, ":master"):
        r = live.get(f"{base_url}/api/node/{ref}/gray/precomputed/s0/{name}")
        assert r.headers["cache-control"] == "no-cache"
    info = live.get(f"{base_url}/api/node/{root}/gray/precomputed/info")
    assert info.headers["cache-control"] == "public, max-age=300"
    assert live.get(f"{base_url}/api/node/:master/gray/precomputed/info").headers[
        "cache-control"
    ] == ("no-cache")
    # Off-grid boxes are answered too; voxels nothing wrote are the background.
    outside = live.get(f"{base_url}/api/node/{root}/gray/precomputed/s0/200-216_0-8_0-4")
    assert outside.status_code == 200 and outside.content == bytes(16 * 8 * 4)
    huge = live.get(f"{base_url}/api/node/{root}/gray/precomputed/s0/0-1024_0-1024_0-1024")
    assert huge.status_code == 413
    # Errors: malformed names and unknown scales are 400; absent files 404.
    node = f"{base_url}/api/node/{root}"
    for path in ("gray/precomputed/s0/1-2_3-4", "gray/precomputed/s9/0-32_0-32_0-32"):
        assert live.get(f"{node}/{path}").status_code == 400, path
    assert live.get(f"{node}/seg/precomputed/s2/0-32_0-32_0-32").status_code == 400
    assert live.get(f"{node}/seg/precomputed/provenance").status_code == 404
    assert live.get(f"{node}/empty/precomputed/info").status_code == 404
    # CORS: browsers (neuroglancer) may read it from another origin.
    r = live.get(f"{node}/gray/precomputed/info", headers={"Origin": "http://example.org"})
    assert r.headers["access-control-allow-origin"] in ("*", "http://example.org")
