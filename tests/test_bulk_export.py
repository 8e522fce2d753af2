"""``dvid-cloud export`` on a Dask cluster of two worker processes.

A uint8blk (with a pyramid instance) and a labelmap (MaxDownresLevel 1, merges at both
versions, so bodies differ from supervoxels) are written through the REST API of an
in-process app, at a committed root and an open child that differ. Each export, sharded
or not, to a folder or to moto S3, is read back by TensorStore and by CloudVolume and
must equal ``GET raw`` at that version and scale (the labelmap's body ids), with the
server's own precomputed scales. Bad input is refused with one line and nothing written.

Commands run in this process (click's runner) on one cluster per module
(``--scheduler``); small ``--task-mb`` makes many tasks and shards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorstore as ts
from fastapi.testclient import TestClient

from app.server import create_app
from app.settings import Settings, load_settings
from backends.local import LocalStore
from tests.bulk_cluster import Run, run, scheduler
from tests.cli_support import refused
from tests.fixtures_stores import AWS_TEST_REGION, make_s3_store, new_bucket_name

__all__ = ["run", "scheduler"]  # fixtures from tests.bulk_cluster


GRAY_OFFSET = (5, 3, 1)  # not block-aligned
GRAY_SIZE = (70, 50, 40)  # x, y, z
SEG_SIZE = (64, 48, 48)  # written at 0,0,0
MERGED_AT_ROOT = [3, 4, 5]
MERGED_AT_CHILD = [3, 9, 99]


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response


def box(size: tuple[int, ...], offset: tuple[int, ...]) -> str:
    return "_".join(map(str, size)) + "/" + "_".join(map(str, offset))


def populate(c: TestClient) -> dict[str, str]:
    """The repo: root (committed) and child (open) differ in gray and seg voxels and in
    the seg mapping. Returns their UUIDs."""
    root = ok(c.post("/api/repos", json={})).json()["root"]
    for body in (
        {
            "typename": "uint8blk",
            "dataname": "gray",
            "BlockSize": "16,16,16",
            "VoxelSize": "4,4,40",
        },
        {
            "typename": "labelmap",
            "dataname": "seg",
            "BlockSize": "16,16,16",
            "MaxDownresLevel": "1",
        },
        {"typename": "uint16blk", "dataname": "empty"},
        {"typename": "keyvalue", "dataname": "kv"},
    ):
        ok(c.post(f"/api/repo/{root}/instance", json=body))
    z, y, x = np.mgrid[0 : GRAY_SIZE[2], 0 : GRAY_SIZE[1], 0 : GRAY_SIZE[0]]
    gray = ((x * 7 + y * 13 + z * 29) % 251).astype(np.uint8)
    node = f"/api/node/{root}"
    ok(
        c.post(
            f"{node}/gray/raw/0_1_2/{box(GRAY_SIZE, GRAY_OFFSET)}?downres=true&levels=1",
            content=gray.tobytes(),
        )
    )
    z, y, x = np.mgrid[0 : SEG_SIZE[2], 0 : SEG_SIZE[1], 0 : SEG_SIZE[0]]
    seg = (1 + x // 12 + 6 * (y // 17) + 18 * (z // 20)).astype(np.uint64)
    seg[(x + 2 * y) % 23 == 0] = 2**45 + 3  # a large id threading through everything
    seg[z > 40] = 0
    ok(c.post(f"{node}/seg/raw/0_1_2/{box(SEG_SIZE, (0, 0, 0))}", content=seg.tobytes()))
    ok(c.post(f"{node}/seg/merge", content=json.dumps(MERGED_AT_ROOT)))
    ok(c.post(f"{node}/commit", json={"note": "v1"}))
    child = ok(c.post(f"{node}/newversion", json={})).json()["child"]

    node = f"/api/node/{child}"
    patch = np.full((10, 12, 14), 255, np.uint8)
    ok(
        c.post(
            f"{node}/gray/raw/0_1_2/{box((14, 12, 10), (30, 20, 10))}?downres=true&levels=1",
            content=patch.tobytes(),
        )
    )
    block = np.full((16, 16, 16), 99, np.uint64)
    ok(c.post(f"{node}/seg/raw/0_1_2/{box((16, 16, 16), (32, 16, 16))}", content=block.tobytes()))
    ok(c.post(f"{node}/seg/merge", content=json.dumps(MERGED_AT_CHILD)))
    return {"root": root, "child": child}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, dict]]:
    """An app on a local store holding :func:`populate`'s repo; (client, data dir, UUIDs)."""
    folder = tmp_path_factory.mktemp("export-store")
    with TestClient(create_app(Settings(), {"default": LocalStore(folder)})) as c:
        uuids = populate(c)
        child = uuids["child"]
        for body in (
            {"typename": "rgba8blk", "dataname": "color", "BlockSize": "16,16,16"},
            {"typename": "uint8blk", "dataname": "jgray", "Compression": "jpeg"},
        ):
            ok(c.post(f"/api/repo/{child}/instance", json=body))
        color = np.random.default_rng(7).integers(0, 2**32, (20, 30, 40), dtype=np.uint32)
        node = f"/api/node/{child}"
        ok(
            c.post(
                f"{node}/color/raw/0_1_2/{box((40, 30, 20), (-8, 4, 2))}", content=color.tobytes()
            )
        )
        z, y, x = np.mgrid[0:40, 0:50, 0:80]
        smooth = 128 + 60 * np.sin(x / 9.0) * np.cos(y / 11.0) + 30 * np.sin(z / 7.0)
        jpeg = smooth.astype(np.uint8).tobytes()
        ok(c.post(f"{node}/jgray/raw/0_1_2/{box((80, 50, 40), (0, 0, 0))}", content=jpeg))
        yield c, str(folder), uuids


def raw(c: TestClient, uuid: str, name: str, level: int, scale: dict) -> np.ndarray:
    """``GET raw`` of the box of precomputed ``scale`` (ZYX), as the server gives it."""
    size, offset = scale["size"], scale["voxel_offset"]
    if name == "seg":
        path = f"seg/raw/0_1_2/{box(size, offset)}?scale={level}"
    else:
        path = f"{name}{f'_{level}' if level else ''}/raw/0_1_2/{box(size, offset)}"
    dtype = np.uint64 if name == "seg" else np.uint8
    body = ok(c.get(f"/api/node/{uuid}/{path}")).content
    return np.frombuffer(body, dtype).reshape(size[2], size[1], size[0])


def read_tensorstore(kvstore: dict, level: int) -> np.ndarray:
    spec = {"driver": "neuroglancer_precomputed", "kvstore": kvstore, "scale_index": level}
    store = ts.open(spec, read=True).result()
    return np.ascontiguousarray(store[..., 0].read().result().transpose(2, 1, 0))


def read_cloudvolume(path: Path, level: int) -> np.ndarray:
    from cloudvolume import CloudVolume

    vol = CloudVolume(
        f"file://{path}", mip=level, fill_missing=True, progress=False, parallel=1, cache=False
    )
    return np.ascontiguousarray(np.asarray(vol[vol.bounds])[..., 0].transpose(2, 1, 0))


@pytest.mark.parametrize("sharded", [False, True], ids=["unsharded", "sharded"])
@pytest.mark.parametrize("name", ["gray", "seg"])
def test_export_equals_raw_at_each_version(
    local: tuple[TestClient, str, dict], run: Run, tmp_path: Path, name: str, sharded: bool
) -> None:
    c, data_dir, uuids = local
    exported = {}
    for ref, version in (("root", uuids["root"]), (":master", uuids["child"])):
        dest = tmp_path / ref.strip(":")
        # The root by a UUID prefix, the child by the branch reference.
        args = ["export", str(dest), "--uuid", version[:8] if ref == "root" else ref]
        args += ["--instance", name, "--data-dir", data_dir, "--task-mb", "0.02"]
        summary = run(*args, *(["--sharded"] if sharded else []))
        assert summary["uuid"] == version and summary["scales"] == 2
        assert summary["chunks"] > 4 and summary["voxels"] > 0
        info = json.loads((dest / "info").read_text())
        served = ok(c.get(f"/api/node/{version}/{name}/precomputed/info")).json()
        for scale in info["scales"]:
            assert ("sharding" in scale) == sharded
            scale.pop("sharding", None)
            scale.pop("jpeg_quality", None)
        assert info == served
        levels = []
        for level, scale in enumerate(info["scales"]):
            expected = raw(c, version, name, level, scale)
            kvstore = {"driver": "file", "path": f"{dest}/"}
            np.testing.assert_array_equal(read_tensorstore(kvstore, level), expected)
            np.testing.assert_array_equal(read_cloudvolume(dest, level), expected)
            levels.append(expected)
        exported[version] = levels
    assert not np.array_equal(exported[uuids["root"]][0], exported[uuids["child"]][0])
    if sharded:
        assert list((dest / "s0").glob("*.shard"))
        assert len(list((dest / "s0").iterdir())) > 1  # several shards, one task each


def test_bodies_not_supervoxels(
    local: tuple[TestClient, str, dict], run: Run, tmp_path: Path
) -> None:
    """The merged supervoxels show as their body at each version."""
    c, data_dir, uuids = local
    for version, merged in ((uuids["root"], MERGED_AT_ROOT), (uuids["child"], MERGED_AT_CHILD)):
        dest = tmp_path / version
        run(
            "export",
            str(dest),
            "--uuid",
            version,
            "--instance",
            "seg",
            "--data-dir",
            data_dir,
            "--scales",
            "1",
        )
        assert len(json.loads((dest / "info").read_text())["scales"]) == 1
        got = read_tensorstore({"driver": "file", "path": f"{dest}/"}, 0)
        supervoxels = np.frombuffer(
            ok(
                c.get(
                    f"/api/node/{version}/seg/raw/0_1_2/{box(SEG_SIZE, (0, 0, 0))}?supervoxels=true"
                )
            ).content,
            np.uint64,
        ).reshape(got.shape)
        target = merged[0]
        assert set(np.unique(got[np.isin(supervoxels, merged)])) == {target}
        assert not np.isin(got, merged[1:]).any()


def test_rgba_channels_and_jpeg(
    local: tuple[TestClient, str, dict], run: Run, tmp_path: Path
) -> None:
    """rgba8blk: four uint8 channels, exact; a jpeg uint8blk: jpeg chunks, approximately."""
    c, data_dir, uuids = local
    child = uuids["child"]
    common = ["--uuid", child, "--data-dir", data_dir, "--task-mb", "0.01"]
    run("export", str(tmp_path / "color"), "--instance", "color", *common)
    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": f"{tmp_path}/color/"},
        }
    ).result()
    assert store.dtype == ts.uint8 and tuple(store.domain.origin) == (-8, 4, 2, 0)
    served = ok(c.get(f"/api/node/{child}/color/raw/0_1_2/{box((40, 30, 20), (-8, 4, 2))}"))
    rgba = np.frombuffer(served.content, np.uint8).reshape(20, 30, 40, 4)
    np.testing.assert_array_equal(store.read().result(), rgba.transpose(2, 1, 0, 3))

    run("export", str(tmp_path / "jgray"), "--instance", "jgray", "--sharded", *common)
    info = json.loads((tmp_path / "jgray" / "info").read_text())
    assert info["scales"][0]["encoding"] == "jpeg" and "sharding" in info["scales"][0]
    got = read_tensorstore({"driver": "file", "path": f"{tmp_path}/jgray/"}, 0)
    expected = raw(c, child, "jgray", 0, info["scales"][0])
    error = np.abs(got.astype(int) - expected.astype(int))
    assert got.shape == expected.shape and error.mean() < 2 and error.max() < 40


def test_export_to_s3(tmp_path: Path, s3_env: str, run: Run) -> None:
    """A store on moto S3 (configured by a TOML file), exported to another bucket."""
    bucket, out = new_bucket_name(), new_bucket_name()
    for name in (bucket, out):
        make_s3_store(s3_env, bucket=name).client.create_bucket(Bucket=name)
    config = tmp_path / "dvid.toml"
    config.write_text(f'[store.default]\npath = "s3://{bucket}/dvid"\nendpoint = "{s3_env}"\n')
    with TestClient(create_app(load_settings(config))) as c:
        uuids = populate(c)
        child = uuids["child"]
        for name, sharded in (("seg", True), ("gray", False)):
            dest = f"s3://{out}/exports/{name}"
            args = ["export", dest, "--uuid", child, "--instance", name, "--config", str(config)]
            summary = run(*args, "--task-mb", "0.2", *(["--sharded"] if sharded else []))
            assert summary["dest"] == f"{dest}/" and summary["chunks"] > 1
            kvstore = {
                "driver": "s3",
                "bucket": out,
                "path": f"exports/{name}/",
                "endpoint": s3_env,
                "aws_region": AWS_TEST_REGION,
            }
            info = json.loads(ts.KvStore.open(kvstore).result().read("info").result().value)
            for level, scale in enumerate(info["scales"]):
                expected = raw(c, child, name, level, scale)
                np.testing.assert_array_equal(read_tensorstore(kvstore, level), expected)


def test_bad_input_is_one_line_and_writes_nothing(
    local: tuple[TestClient, str, dict], tmp_path: Path
) -> None:
    _, data_dir, uuids = local
    dest = tmp_path / "out"
    common = ["--uuid", uuids["child"], "--data-dir", data_dir]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["export", str(dest), "--instance", "nosuch"], "nosuch"),
        (["export", str(dest), "--instance", "kv"], "not a volume"),
        (["export", str(dest), "--instance", "empty"], "no voxels"),
        (["export", "ftp://host/x", "--instance", "gray"], "DEST"),
        (["export", str(a_file), "--instance", "gray"], "not a folder"),
    ]
    for args, words in cases:
        code, err = refused(*args, *common)
        assert code != 0, args
        lines = err.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, err)
    cases = [
        (["export", str(dest), "--instance", "gray", "--uuid", "ffffffff"], "ffffffff"),
    ]
    for args, words in cases:
        code, err = refused(*args, "--data-dir", data_dir)
        assert code != 0, args
        lines = err.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, err)
    assert not dest.exists()
    assert a_file.read_text() == "x"


def test_destination_with_another_volume_is_refused(
    local: tuple[TestClient, str, dict], run: Run, tmp_path: Path
) -> None:
    _, data_dir, uuids = local
    dest = tmp_path / "out"
    common = ["--uuid", uuids["root"], "--data-dir", data_dir]
    run("export", str(dest), "--instance", "seg", *common)
    before = (dest / "info").read_bytes()
    code, err = refused("export", str(dest), "--instance", "gray", *common)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "cannot write" in err
    assert (dest / "info").read_bytes() == before
    run("export", str(dest), "--instance", "seg", *common)  # the same again is fine
