"""``dvid-cloud meshes`` and ``dvid-cloud skeletons`` on a Dask cluster of two worker
processes.

A labelmap (anisotropic voxels, MaxDownresLevel 1) holds a box made of two supervoxels
merged into one body at the open child, a tube along x and a ball, each spanning several
blocks. The commands must leave a parseable ``<body>.ngmesh`` / ``<body>_swc`` in the
``seg_meshes`` / ``seg_skeletons`` keyvalue instances (created by the command) for each
body asked for, geometrically right (the box's mesh has the box's bounds in nm, the
tube's skeleton runs its length), and byte for byte what :mod:`app.bulk.shapes` computes
in this process from ``GET raw`` of the body (at scale 1 when ``--max-voxels`` forces
it): the worker path equals the single-process one. With ``--export`` they also write
precomputed meshes and skeletons that CloudVolume reads beside ``dvid-cloud export``.
The same runs on moto S3; bad input is refused with one line and nothing written.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.bulk import shapes
from app.server import create_app
from app.settings import Settings, load_settings
from backends.local import LocalStore
from tests.bulk_cluster import Run, run, scheduler
from tests.cli_support import refused
from tests.fixtures_stores import make_s3_store, new_bucket_name
from tests.test_bulk_export import box, ok

__all__ = ["run", "scheduler"]  # fixtures from tests.bulk_cluster

SIZE = (96, 64, 48)  # x, y, z, written at 0, 0, 0
VOXEL = (8.0, 8.0, 16.0)
BOX = ((16, 8, 4), (48, 40, 36))  # two supervoxels, x < 32 and x >= 32; even corners
TUBE = ((4, 48, 20), (92, 54, 26))
BOX_BODY, BOX_OTHER, TUBE_BODY, BALL_BODY = 10, 11, 20, 30


def volume() -> np.ndarray:
    z, y, x = np.mgrid[0 : SIZE[2], 0 : SIZE[1], 0 : SIZE[0]]
    labels = np.zeros(x.shape, np.uint64)
    (x0, y0, z0), (x1, y1, z1) = BOX
    inside = (x0 <= x) & (x < x1) & (y0 <= y) & (y < y1) & (z0 <= z) & (z < z1)
    labels[inside] = np.where(x[inside] < 32, BOX_BODY, BOX_OTHER)
    (x0, y0, z0), (x1, y1, z1) = TUBE
    labels[(x0 <= x) & (x < x1) & (y0 <= y) & (y < y1) & (z0 <= z) & (z < z1)] = TUBE_BODY
    labels[(x - 72) ** 2 + (y - 20) ** 2 + 4 * (z - 30) ** 2 <= 81] = BALL_BODY
    return labels


def populate(c: TestClient) -> dict[str, str]:
    """Root (committed): the volume; child (open): the box's supervoxels merged. A second
    labelmap ``other`` and a uint8blk are there for the refusals."""
    root = ok(c.post("/api/repos", json={})).json()["root"]
    for body in (
        {
            "typename": "labelmap",
            "dataname": "seg",
            "BlockSize": "16,16,16",
            "VoxelSize": ",".join(map(str, VOXEL)),
            "MaxDownresLevel": "1",
        },
        {"typename": "labelmap", "dataname": "other", "BlockSize": "16,16,16"},
        {"typename": "uint8blk", "dataname": "gray"},
    ):
        ok(c.post(f"/api/repo/{root}/instance", json=body))
    node = f"/api/node/{root}"
    ok(c.post(f"{node}/seg/raw/0_1_2/{box(SIZE, (0, 0, 0))}", content=volume().tobytes()))
    small = np.full((16, 16, 16), 5, np.uint64)
    ok(c.post(f"{node}/other/raw/0_1_2/{box((16, 16, 16), (0, 0, 0))}", content=small.tobytes()))
    ok(c.post(f"{node}/commit", json={"note": "v1"}))
    child = ok(c.post(f"{node}/newversion", json={})).json()["child"]
    ok(c.post(f"/api/node/{child}/seg/merge", content=json.dumps([BOX_BODY, BOX_OTHER])))
    return {"root": root, "child": child}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, dict]]:
    """An app on a local store holding :func:`populate`'s repo; (client, data dir, UUIDs)."""
    folder = tmp_path_factory.mktemp("bodies-store")
    with TestClient(create_app(Settings(), {"default": LocalStore(folder)})) as c:
        yield c, str(folder), populate(c)


def bodies_raw(c: TestClient, uuid: str, scale: int = 0) -> np.ndarray:
    """``GET raw`` of the whole labelmap (body ids, ZYX) at ``scale``."""
    size = tuple(s // 2**scale for s in SIZE)
    body = ok(c.get(f"/api/node/{uuid}/seg/raw/0_1_2/{box(size, (0, 0, 0))}?scale={scale}"))
    return np.frombuffer(body.content, np.uint64).reshape(size[2], size[1], size[0])


def in_process(c: TestClient, uuid: str, body: int, scale: int = 0) -> shapes.Mask:
    """The body's mask computed here from ``GET raw``."""
    resolution = (VOXEL[0] * 2**scale, VOXEL[1] * 2**scale, VOXEL[2] * 2**scale)
    return shapes.Mask(bodies_raw(c, uuid, scale) == body, (0, 0, 0), resolution)


def parse_ngmesh(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (n, 3) nm, triangles (m, 3)) of neuroglancer's legacy mesh format."""
    (count,) = struct.unpack_from("<I", data)
    vertices = np.frombuffer(data, "<f4", count * 3, 4).reshape(-1, 3)
    rest = data[4 + 12 * count :]
    assert len(rest) % 12 == 0
    triangles = np.frombuffer(rest, "<u4").reshape(-1, 3)
    assert len(triangles) and triangles.max() < count
    return vertices, triangles


def parse_swc(text: str) -> np.ndarray:
    """Rows (id, type, x, y, z, radius, parent); parents precede their children."""
    rows = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    table = np.array(rows, dtype=np.float64)
    assert table.shape[1] == 7
    assert list(table[:, 0]) == list(range(1, len(table) + 1))
    assert all(p == -1 or 1 <= p < i for i, p in zip(table[:, 0], table[:, 6], strict=True))
    return table


def value(c: TestClient, uuid: str, name: str, key: str) -> bytes:
    return ok(c.get(f"/api/node/{uuid}/{name}/key/{key}")).content


def box_nm(corners: tuple[tuple[int, ...], ...]) -> np.ndarray:
    return np.array(corners, dtype=np.float64) * np.array(VOXEL)


def test_meshes_of_every_body(local: tuple[TestClient, str, dict], run: Run) -> None:
    c, data_dir, uuids = local
    child = uuids["child"]
    summary = run("meshes", "--uuid", ":master", "--instance", "seg", "--data-dir", data_dir)
    assert summary["uuid"] == child and summary["bodies"] == 3
    assert summary["keyvalue"] == "seg_meshes" and summary["bodies_per_scale"] == {"0": 3}
    instances = ok(c.get(f"/api/repo/{child}/info")).json()["DataInstances"]
    assert instances["seg_meshes"]["Base"]["TypeName"] == "keyvalue"
    keys = ok(c.get(f"/api/node/{child}/seg_meshes/keys")).json()
    assert keys == sorted(f"{b}.ngmesh" for b in (BOX_BODY, TUBE_BODY, BALL_BODY))
    raw = bodies_raw(c, child)
    for body in (BOX_BODY, TUBE_BODY, BALL_BODY):
        stored = value(c, child, "seg_meshes", f"{body}.ngmesh")
        vertices, _ = parse_ngmesh(stored)
        z, y, x = np.nonzero(raw == body)
        lo = np.array([x.min(), y.min(), z.min()]) * VOXEL
        hi = (np.array([x.max(), y.max(), z.max()]) + 1) * VOXEL
        assert (vertices.min(axis=0) >= lo - 1e-2).all() and (
            vertices.max(axis=0) <= hi + 1e-2
        ).all()
        assert stored == shapes.mesh(in_process(c, child, body)).ngmesh()
    vertices, _ = parse_ngmesh(value(c, child, "seg_meshes", f"{BOX_BODY}.ngmesh"))
    np.testing.assert_allclose(vertices.min(axis=0), box_nm(BOX)[0], atol=1e-2)
    np.testing.assert_allclose(vertices.max(axis=0), box_nm(BOX)[1], atol=1e-2)


def test_skeletons_of_chosen_bodies(local: tuple[TestClient, str, dict], run: Run) -> None:
    c, data_dir, uuids = local
    child = uuids["child"]
    args = ["--uuid", child, "--instance", "seg", "--data-dir", data_dir]
    summary = run("skeletons", *args, "--labels", f"{TUBE_BODY},{BOX_BODY}")
    assert summary["bodies"] == 2 and summary["keyvalue"] == "seg_skeletons"
    keys = ok(c.get(f"/api/node/{child}/seg_skeletons/keys")).json()
    assert keys == [f"{BOX_BODY}_swc", f"{TUBE_BODY}_swc"]
    for body in (TUBE_BODY, BOX_BODY):
        text = value(c, child, "seg_skeletons", f"{body}_swc").decode()
        parse_swc(text)
        expected = shapes.skeleton(in_process(c, child, body))
        assert expected is not None and text == expected.swc(VOXEL)
    tube = parse_swc(value(c, child, "seg_skeletons", f"{TUBE_BODY}_swc").decode())
    (x0, y0, z0), (x1, y1, z1) = TUBE
    xs, ys, zs = tube[:, 2], tube[:, 3], tube[:, 4]  # voxels, voxel centres at integers
    assert xs.min() <= x0 + 1 and xs.max() >= x1 - 2  # end to end
    assert (y0 <= ys).all() and (ys <= y1 - 1).all() and (z0 <= zs).all() and (zs <= z1 - 1).all()


def test_big_bodies_are_read_at_a_lower_scale(
    local: tuple[TestClient, str, dict], run: Run
) -> None:
    c, data_dir, uuids = local
    child = uuids["child"]
    args = ["--uuid", child, "--instance", "seg", "--data-dir", data_dir, "--labels", "10"]
    # The box's blocks span 2x3x3 blocks of 16^3 (73,728 voxels) at scale 0, 2x2x2
    # (32,768 voxels) at scale 1.
    summary = run("meshes", *args, "--max-voxels", "40000")
    assert summary["bodies_per_scale"] == {"1": 1}
    stored = value(c, child, "seg_meshes", f"{BOX_BODY}.ngmesh")
    assert stored == shapes.mesh(in_process(c, child, BOX_BODY, scale=1)).ngmesh()
    vertices, _ = parse_ngmesh(stored)
    np.testing.assert_allclose(vertices.min(axis=0), box_nm(BOX)[0], atol=1e-2)
    np.testing.assert_allclose(vertices.max(axis=0), box_nm(BOX)[1], atol=1e-2)


def test_precomputed_meshes_and_skeletons(
    local: tuple[TestClient, str, dict], run: Run, tmp_path: Path
) -> None:
    """Beside an export of the labelmap; at the committed root, without keyvalue."""
    from cloudvolume import CloudVolume

    c, data_dir, uuids = local
    root = uuids["root"]
    dest = tmp_path / "seg"
    common = ["--uuid", root, "--instance", "seg", "--data-dir", data_dir]
    run("export", str(dest), *common)
    for command in ("meshes", "skeletons"):
        summary = run(command, *common, "--export", str(dest), "--no-keyvalue")
        assert summary["bodies"] == 4 and summary["keyvalue"] is None
    info = json.loads((dest / "info").read_text())
    assert (info["mesh"], info["skeletons"]) == ("mesh", "skeletons")
    vol = CloudVolume(f"file://{dest}", progress=False, parallel=1, cache=False)
    mesh = vol.mesh.get(BOX_BODY)
    mesh = mesh[BOX_BODY] if isinstance(mesh, dict) else mesh
    box_lo, box_hi = box_nm(BOX)
    box_hi[0] = 32 * VOXEL[0]  # at the root the box's two supervoxels are two bodies
    np.testing.assert_allclose(mesh.vertices.min(axis=0), box_lo, atol=1e-2)
    np.testing.assert_allclose(mesh.vertices.max(axis=0), box_hi, atol=1e-2)
    skeleton = vol.skeleton.get(TUBE_BODY)
    (x0, _, _), (x1, _, _) = TUBE
    span = skeleton.vertices[:, 0] / VOXEL[0]
    assert span.min() <= x0 + 1.5 and span.max() >= x1 - 1.5
    stored = (dest / "skeletons" / str(TUBE_BODY)).read_bytes()
    expected = shapes.skeleton(in_process(c, root, TUBE_BODY))
    assert expected is not None and stored == expected.precomputed()


def test_on_s3(tmp_path: Path, s3_env: str, run: Run) -> None:
    """A store on moto S3 (configured by a TOML file), precomputed files to a bucket."""
    bucket, out = new_bucket_name(), new_bucket_name()
    for name in (bucket, out):
        make_s3_store(s3_env, bucket=name).client.create_bucket(Bucket=name)
    config = tmp_path / "dvid.toml"
    config.write_text(f'[store.default]\npath = "s3://{bucket}/dvid"\nendpoint = "{s3_env}"\n')
    with TestClient(create_app(load_settings(config))) as c:
        child = populate(c)["child"]
        common = ["--uuid", child, "--instance", "seg", "--config", str(config)]
        common += ["--labels", f"{BOX_BODY},{TUBE_BODY}", "--export", f"s3://{out}/seg"]
        run("meshes", *common)
        run("skeletons", *common)
        for body in (BOX_BODY, TUBE_BODY):
            mesh = value(c, child, "seg_meshes", f"{body}.ngmesh")
            assert mesh == shapes.mesh(in_process(c, child, body)).ngmesh()
            skeleton = shapes.skeleton(in_process(c, child, body))
            assert skeleton is not None
            assert value(c, child, "seg_skeletons", f"{body}_swc").decode() == skeleton.swc(VOXEL)
    listing = make_s3_store(s3_env, bucket=out).client.list_objects_v2(Bucket=out)
    found = {item["Key"] for item in listing["Contents"]}
    expected = {"seg/mesh/info", "seg/skeletons/info"}
    for body in (BOX_BODY, TUBE_BODY):
        expected |= {f"seg/mesh/{body}:0", f"seg/mesh/{body}:0:0", f"seg/skeletons/{body}"}
    assert found == expected


def test_bad_input_is_one_line_and_writes_nothing(
    local: tuple[TestClient, str, dict], tmp_path: Path
) -> None:
    c, data_dir, uuids = local
    root, child = uuids["root"], uuids["child"]
    dest = tmp_path / "out"
    at_child = ["--uuid", child, "--data-dir", data_dir]
    cases = [
        (["meshes", "--instance", "nosuch", *at_child], "nosuch"),
        (["meshes", "--instance", "gray", *at_child], "not a labelmap"),
        (["skeletons", "--instance", "other", "--labels", "5,abc", *at_child], "abc"),
        (["meshes", "--instance", "other", "--labels", "0", *at_child], "'0'"),
        (["meshes", "--instance", "seg", "--labels", f"{BOX_OTHER}", *at_child], "not a body"),
        (["meshes", "--instance", "other", "--labels", "5,6", *at_child], "label 6"),
        (["meshes", "--instance", "other", "--uuid", root, "--data-dir", data_dir], "committed"),
        (["skeletons", "--instance", "other", "--no-keyvalue", *at_child], "--export"),
        (["meshes", "--instance", "other", "--export", "ftp://x/y", *at_child], "DEST"),
    ]
    for args, words in cases:
        code, err = refused(*args)
        lines = err.strip().splitlines()
        assert code != 0 and len(lines) == 1 and words in lines[0], (args, err)
    instances = ok(c.get(f"/api/repo/{child}/info")).json()["DataInstances"]
    assert not {"other_meshes", "other_skeletons"} & set(instances)
    assert not dest.exists()
