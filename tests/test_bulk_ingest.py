"""``dvid-cloud ingest`` and ``dvid-cloud downres`` on a Dask cluster of two worker
processes, against the single-process server path.

Each command must leave exactly what the server's own writes leave: voxel for voxel at
every scale, and for labelmap index for index (counts, supervoxels, max label), read back
through the REST API of an in-process app on the same store (started before the command,
so it also shows that a running server sees the work without a restart). Sources of
every kind are made in temporary folders. A real ``dvid-cloud ingest`` process is
SIGKILLed halfway and rerun; the commands also run on moto S3; bad input is refused with
one line and nothing written.

The commands run in this process (click's runner) against one cluster per module
(``--scheduler``), except the killed run, which starts its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorstore as ts
import tifffile
from fastapi.testclient import TestClient
from pyroaring import BitMap64

from app.datatypes.labelmap import codecs
from app.proto import labelmap_pb2 as pb
from app.server import create_app
from app.services import Services
from app.settings import Settings, load_settings
from tests.bulk_cluster import Run, run, scheduler
from tests.cli_support import refused
from tests.conftest import Api
from tests.dvid_process import CLI
from tests.fixtures_stores import make_s3_store, new_bucket_name
from tests.neuroglancer_support import wait_for

__all__ = ["run", "scheduler"]  # fixtures from tests.bulk_cluster


def labels_volume(shape: tuple[int, int, int], seed: int = 0, values: int = 24) -> np.ndarray:
    """Labels in patches of 8^3 voxels drawn from ``values`` values, with background (0)
    holes."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, values, [-(-s // 8) for s in shape], dtype=np.uint64)
    coarse[coarse < 4] = 0
    fine = coarse.repeat(8, 0).repeat(8, 1).repeat(8, 2)[: shape[0], : shape[1], : shape[2]]
    return np.ascontiguousarray(np.where(fine == 0, 0, fine * 1000 + 7))


def gray_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def dims(shape: tuple[int, ...], offset: tuple[int, int, int]) -> tuple[str, str]:
    """``size`` and ``offset`` path parts of a ZYX ``shape`` at x, y, z ``offset``."""
    z, y, x = shape
    return f"{x}_{y}_{z}", "_".join(str(v) for v in offset)


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response


# --- sources ---------------------------------------------------------------------------


def write_source(kind: str, folder: Path, volume: np.ndarray, origin: tuple[int, int, int]) -> str:
    """``volume`` (ZYX) as a source of ``kind`` in ``folder``; its name for the CLI. Only
    precomputed volumes carry their origin (voxel_offset)."""
    z, y, x = volume.shape
    dtype = volume.dtype.name
    if kind == "npy":
        np.save(folder / "v.npy", volume)
        return str(folder / "v.npy")
    if kind == "tiff-stack":
        stack = folder / "stack"
        stack.mkdir()
        for i, plane in enumerate(volume):  # unpadded names: natural order matters
            tifffile.imwrite(stack / f"slice{i}.tif", plane)
        return str(stack)
    if kind == "tiff-glob":
        for i, plane in enumerate(volume):
            tifffile.imwrite(folder / f"z{i}.tiff", plane)
        return str(folder / "z*.tiff")
    if kind == "multipage-tiff":
        tifffile.imwrite(folder / "v.tif", volume)
        return str(folder / "v.tif")
    kvstore = {"driver": "file", "path": str(folder / kind)}
    if kind == "zarr2":
        spec: dict[str, Any] = {
            "driver": "zarr",
            "metadata": {"shape": [z, y, x], "chunks": [7, 16, 16], "dtype": volume.dtype.str},
        }
    elif kind == "zarr3":
        chunks = {"name": "regular", "configuration": {"chunk_shape": [8, 16, 16]}}
        spec = {
            "driver": "zarr3",
            "metadata": {"shape": [z, y, x], "data_type": dtype, "chunk_grid": chunks},
        }
    else:
        spec = {
            "driver": "neuroglancer_precomputed",
            "multiscale_metadata": {"type": "image", "data_type": dtype, "num_channels": 1},
            "scale_metadata": {
                "size": [x, y, z],
                "resolution": [8, 8, 8],
                "encoding": "raw",
                "chunk_size": [16, 16, 8],
                "voxel_offset": list(origin),
            },
        }
    array = ts.open({**spec, "kvstore": kvstore}, create=True).result()
    if kind == "precomputed":
        array = array[..., 0].T[ts.d[:].translate_to[0]]
    array.write(volume).result()
    return str(folder / kind)


SOURCES = ["tiff-stack", "multipage-tiff", "zarr2", "zarr3", "precomputed", "npy"]


@pytest.mark.parametrize("kind", SOURCES)
def test_ingest_into_uint8blk_equals_post_raw(kind: str, tmp_path: Path, run: Run) -> None:
    """An unaligned volume from each kind of source, into an instance the command
    creates (--type), is what POST raw of the same voxels writes; a server started
    before the ingest serves it."""
    data_dir = str(tmp_path / "data")
    volume = gray_volume((20, 45, 70), seed=SOURCES.index(kind))
    offset = (2, 3, 5)
    name = write_source(kind, tmp_path, volume, offset)
    size, at = dims(volume.shape, offset)
    with TestClient(create_app(Settings(data_dir=data_dir))) as c:
        api = Api(c)
        root = api.new_repo()
        api.new_instance(root, "uint8blk", "posted", BlockSize="16,16,16")
        ok(c.post(f"/api/node/{root}/posted/raw/0_1_2/{size}/{at}", content=volume.tobytes()))
        where = [] if kind == "precomputed" else ["--offset", "2,3,5"]
        summary = run(
            "ingest", name, "--uuid", root[:8], "--instance", "gray", "--data-dir", data_dir,
            "--type", "uint8blk", "-s", "BlockSize=16,16,16", "--task-mb", "0.005", *where,
        )  # fmt: skip
        assert summary["voxels"] == volume.size and summary["tasks"] > 1
        assert summary["tasks_skipped"] == 0 and summary["chunks"] == 5 * 3 * 2
        region = "raw/0_1_2/80_48_32/0_0_0"  # the blocks around the volume
        gray = ok(c.get(f"/api/node/{root}/gray/{region}")).content
        assert gray == ok(c.get(f"/api/node/{root}/posted/{region}")).content
        got = np.frombuffer(ok(c.get(f"/api/node/{root}/gray/raw/0_1_2/{size}/{at}")).content)
        assert (got.view(np.uint8).reshape(volume.shape) == volume).all()
        info, posted = (ok(c.get(f"/api/node/{root}/{n}/info")).json() for n in ("gray", "posted"))
        assert (
            info["Extents"]
            == posted["Extents"]
            == {"MinPoint": [2, 3, 5], "MaxPoint": [71, 47, 24]}
        )
        assert info["Extended"]["BlockSize"] == [16, 16, 16]


def label_state(c: TestClient, root: str, name: str, box: str, scales: int) -> dict[str, Any]:
    """What the REST API tells about a labelmap's labels: voxels at every scale, each
    label's index (without its stamp), and what is derived from the index (sizes,
    supervoxels, block bounds) for a few labels."""
    base = f"/api/node/{root}/{name}"
    state: dict[str, Any] = {
        f"raw{s}": ok(c.get(f"{base}/raw/0_1_2/{box}?scale={s}&supervoxels=true")).content
        for s in range(scales + 1)
    }
    labels = np.frombuffer(ok(c.get(f"{base}/listlabels")).content, dtype="<u8").tolist()
    state["labels"] = labels
    state["maxlabel"] = ok(c.get(f"{base}/maxlabel")).json()
    state["nextlabel"] = ok(c.get(f"{base}/nextlabel")).json()
    extended = ok(c.get(f"{base}/info")).json()
    state["extents"] = extended["Extents"]
    for label in labels:
        index = pb.LabelIndex.FromString(ok(c.get(f"{base}/index/{label}")).content)
        assert index.last_mod_time and index.last_mutid
        index.last_mutid, index.last_mod_time = 0, ""
        state[f"index{label}"] = index.SerializeToString(deterministic=True)
    for label in labels[:: max(1, len(labels) // 3)]:
        state[f"size{label}"] = ok(c.get(f"{base}/size/{label}")).json()
        state[f"sparsevol{label}"] = ok(c.get(f"{base}/sparsevol-size/{label}")).json()
        state[f"supervoxels{label}"] = ok(c.get(f"{base}/supervoxels/{label}")).json()
    return state


def test_ingest_into_labelmap_equals_post_raw(tmp_path: Path, run: Run) -> None:
    """A zarr v3 label volume ingested in many transactions leaves the same voxels at
    scales 0..2, label indices, sizes, max label and extents as one POST raw, served at
    once by a server that read the version before; so does an unaligned volume, against
    POST raw of it padded with background."""
    data_dir = str(tmp_path / "data")
    volume = labels_volume((64, 96, 128))
    source = write_source("zarr3", tmp_path, volume, (0, 0, 0))
    settings = {"BlockSize": "32,32,32", "MaxDownresLevel": "2"}
    with TestClient(create_app(Settings(data_dir=data_dir))) as c:
        api = Api(c)
        root = api.new_repo()
        for name in ("posted", "seg", "padded", "shifted"):
            api.new_instance(root, "labelmap", name, **settings)
        ok(c.post(f"/api/node/{root}/posted/raw/0_1_2/128_96_64/32_0_0", content=volume.tobytes()))
        seg = f"/api/node/{root}/seg"
        label = int(volume.max())
        # The server reads the open version before the ingest, and after it without a restart.
        assert not any(ok(c.get(f"{seg}/raw/0_1_2/128_96_64/32_0_0?scale=1")).content)
        assert c.get(f"{seg}/index/{label}").status_code == 404
        assert ok(c.get(f"{seg}/listlabels")).content == b""
        summary = run(
            "ingest", source, "--uuid", ":master", "--instance", "seg", "--offset", "32,0,0",
            "--data-dir", data_dir, "--task-mb", "0.5",
        )  # fmt: skip
        assert summary["tasks"] == 12 and summary["chunks"] == 24
        box = "160_96_64/0_0_0"
        assert label_state(c, root, "seg", box, 2) == label_state(c, root, "posted", box, 2)

        # Over what is there: the blocks' old labels leave the indices as POST raw's do.
        again = labels_volume((64, 96, 128), seed=5)
        np.save(tmp_path / "again.npy", again)
        ok(c.post(f"/api/node/{root}/posted/raw/0_1_2/128_96_64/32_0_0", content=again.tobytes()))
        run(
            "ingest", str(tmp_path / "again.npy"), "--uuid", root, "--instance", "seg",
            "--offset", "32,0,0", "--data-dir", data_dir, "--task-mb", "0.5",
        )  # fmt: skip
        assert label_state(c, root, "seg", box, 2) == label_state(c, root, "posted", box, 2)

        part = volume[5:60, 3:90, 1:100]
        np.save(tmp_path / "part.npy", part)
        padded = np.zeros((64, 96, 128), np.uint64)
        padded[5:60, 3:90, 1:100] = part
        ok(c.post(f"/api/node/{root}/padded/raw/0_1_2/128_96_64/0_0_0", content=padded.tobytes()))
        run(
            "ingest", str(tmp_path / "part.npy"), "--uuid", root, "--instance", "shifted",
            "--offset", "1,3,5", "--data-dir", data_dir, "--task-mb", "0.5",
        )  # fmt: skip
        box = "128_96_64/0_0_0"
        assert label_state(c, root, "shifted", box, 2) == label_state(c, root, "padded", box, 2)


def test_downres_of_images_equals_the_servers_pyramid(tmp_path: Path, run: Run) -> None:
    """``downres`` of a uint8blk rebuilds <name>_1 and <name>_2 as POST raw?downres=true
    does, over an unaligned box cut into many tasks."""
    data_dir = str(tmp_path / "data")
    volume = gray_volume((40, 70, 90), seed=3)
    size, at = dims(volume.shape, (3, 5, 7))
    with TestClient(create_app(Settings(data_dir=data_dir))) as c:
        api = Api(c)
        root = api.new_repo()
        for name in ("posted", "gray"):
            api.new_instance(root, "uint8blk", name, BlockSize="16,16,16", MaxDownresLevel="2")
        raw = f"raw/0_1_2/{size}/{at}"
        ok(c.post(f"/api/node/{root}/posted/{raw}?downres=true", content=volume.tobytes()))
        ok(c.post(f"/api/node/{root}/gray/{raw}", content=volume.tobytes()))
        summary = run(
            "downres", "--uuid", root, "--instance", "gray", "--data-dir", data_dir,
            "--task-mb", "0.01",
        )  # fmt: skip
        assert summary["tasks"] > 4 and summary["voxels"] == volume.size
        for level, box in ((1, "64_48_32/0_0_0"), (2, "32_32_16/0_0_0")):
            mine = ok(c.get(f"/api/node/{root}/gray_{level}/raw/0_1_2/{box}")).content
            assert mine == ok(c.get(f"/api/node/{root}/posted_{level}/raw/0_1_2/{box}")).content
            extents = (
                ok(c.get(f"/api/node/{root}/{n}_{level}/info")).json()["Extents"]
                for n in ("gray", "posted")
            )
            assert next(extents) == next(extents)


def test_downres_of_labels_equals_the_scales_post_raw_leaves(tmp_path: Path, run: Run) -> None:
    """Blocks written at scale 0 only (POST blocks), then ``downres``: scales 1 and 2 are
    those POST raw computes as it writes; a --box rebuilds only its part."""
    data_dir = str(tmp_path / "data")
    volume = labels_volume((64, 64, 128), seed=5)
    with TestClient(create_app(Settings(data_dir=data_dir))) as c:
        api = Api(c)
        root = api.new_repo()
        for name in ("posted", "seg"):
            api.new_instance(root, "labelmap", name, BlockSize="32,32,32", MaxDownresLevel="2")
        ok(c.post(f"/api/node/{root}/posted/raw/0_1_2/128_64_64/0_0_0", content=volume.tobytes()))
        records = []
        for bz in range(2):
            for by in range(2):
                for bx in range(4):
                    block = volume[
                        bz * 32 : bz * 32 + 32, by * 32 : by * 32 + 32, bx * 32 : bx * 32 + 32
                    ]
                    payload = codecs.encode_block_payload(np.ascontiguousarray(block), "blocks")
                    records.append(((bx, by, bz), payload))
        ok(c.post(f"/api/node/{root}/seg/blocks", content=codecs.write_block_stream(records)))
        scale1 = "64_32_32/0_0_0"
        empty = ok(c.get(f"/api/node/{root}/seg/raw/0_1_2/{scale1}?scale=1")).content
        assert not any(empty)
        summary = run(
            "downres", "--uuid", root, "--instance", "seg", "--box", "0,0,0,64,64,64",
            "--data-dir", data_dir, "--task-mb", "0.5",
        )  # fmt: skip
        assert summary["chunks"] == 8 and summary["tasks"] == 4
        query = f"raw/0_1_2/{scale1}?scale=1"
        part, posted = (
            np.frombuffer(ok(c.get(f"/api/node/{root}/{n}/{query}")).content, "<u8")
            .reshape(32, 32, 64) for n in ("seg", "posted")
        )  # fmt: skip
        assert (part[:, :, :32] == posted[:, :, :32]).all() and not part[:, :, 32:].any()
        run("downres", "--uuid", root, "--instance", "seg", "--data-dir", data_dir)
        for scale, box in ((1, scale1), (2, "32_16_16/0_0_0")):
            query = f"raw/0_1_2/{box}?scale={scale}"
            mine = ok(c.get(f"/api/node/{root}/seg/{query}")).content
            assert mine == ok(c.get(f"/api/node/{root}/posted/{query}")).content


def owned_blocks(data_dir: Path) -> int:
    """Scale-0 blocks written so far at any node of any labelmap under ``data_dir``."""
    found = list(data_dir.glob("data/*/s0/owned/*.roaring"))
    return sum(len(BitMap64.deserialize(p.read_bytes())) for p in found)


def test_a_killed_ingest_resumes_where_it_stopped(tmp_path: Path, run: Run) -> None:
    """A real ``dvid-cloud ingest`` (its own local cluster) SIGKILLed with its workers
    once some boxes are written; the rerun skips those, writes the rest, and the result
    is that of one POST raw."""
    data_dir = tmp_path / "data"
    volume = labels_volume((64, 64, 128), seed=9)
    np.save(tmp_path / "labels.npy", volume)
    with TestClient(create_app(Settings(data_dir=str(data_dir)))) as c:
        api = Api(c)
        root = api.new_repo()
        for name in ("posted", "seg"):
            api.new_instance(root, "labelmap", name, BlockSize="32,32,32", MaxDownresLevel="1")
        ok(c.post(f"/api/node/{root}/posted/raw/0_1_2/128_64_64/0_0_0", content=volume.tobytes()))
        before = owned_blocks(data_dir)
        command = [
            "ingest", str(tmp_path / "labels.npy"), "--uuid", root, "--instance", "seg",
            "--data-dir", str(data_dir), "--task-mb", "0.25",
        ]  # fmt: skip
        proc = subprocess.Popen(
            [CLI, *command, "--workers", "2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for(
                lambda: owned_blocks(data_dir) != before or proc.poll() is not None,
                60,
                "the ingest's first written block",
                interval=0.02,
            )
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        written = owned_blocks(data_dir) - before
        assert 0 < written < 16, written
        summary = run(*command)
        # Every box a transaction published is skipped (one killed past its commit point
        # is completed first, and skipped too); the others are written.
        assert summary["tasks"] == 16 and summary["tasks_skipped"] >= written
        assert summary["tasks_skipped"] + summary["chunks"] == 16 and summary["chunks"] > 0
        box = "128_64_64/0_0_0"
        assert label_state(c, root, "seg", box, 1) == label_state(c, root, "posted", box, 1)
        again = run(*command)
        assert again["tasks_skipped"] == 16 and again["voxels"] == 0


def test_ingest_and_downres_on_s3(tmp_path: Path, s3_env: str, run: Run) -> None:
    """The same commands on a bucket (moto), configured by a TOML file; two tasks each."""
    bucket = new_bucket_name()
    make_s3_store(s3_env, bucket=bucket).client.create_bucket(Bucket=bucket)
    config = tmp_path / "dvid.toml"
    config.write_text(f'[store.default]\npath = "s3://{bucket}/dvid"\nendpoint = "{s3_env}"\n')
    volume = gray_volume((12, 32, 48), seed=11)
    source = write_source("tiff-glob", tmp_path, volume, (0, 0, 0))
    labels = labels_volume((16, 16, 32), seed=12, values=8)
    np.save(tmp_path / "labels.npy", labels)
    node = "/api/node/{}/{}/raw/0_1_2/{}"
    with TestClient(create_app(load_settings(config))) as c:
        api = Api(c)
        root = api.new_repo()
        api.new_instance(root, "uint8blk", "posted", BlockSize="16,16,16")
        api.new_instance(root, "labelmap", "posted_seg", BlockSize="16,16,16", MaxDownresLevel="1")
        gray = volume.tobytes()
        ok(c.post(node.format(root, "posted", "48_32_12/0_0_0?downres=true"), content=gray))
        seg = labels.tobytes()
        ok(c.post(node.format(root, "posted_seg", "32_16_16/0_0_0"), content=seg))
        common = ["--uuid", root, "--config", str(config)]
        run("ingest", source, "--instance", "gray", "--type", "uint8blk", "-s", "BlockSize=16",
            "--task-mb", "0.01", *common)  # fmt: skip
        run("downres", "--instance", "gray", "--task-mb", "0.01", *common)
        run("ingest", str(tmp_path / "labels.npy"), "--instance", "seg", "--type", "labelmap",
            "-s", "BlockSize=16,16,16", "-s", "MaxDownresLevel=1", "--task-mb", "0.04", *common,
        )  # fmt: skip
        for name, box in (("", "48_32_16/0_0_0"), ("_1", "24_16_8/0_0_0")):
            mine = ok(c.get(node.format(root, f"gray{name}", box))).content
            assert mine == ok(c.get(node.format(root, f"posted{name}", box))).content
        box = "32_16_16/0_0_0"
        assert label_state(c, root, "seg", box, 1) == label_state(c, root, "posted_seg", box, 1)


def store_listing(data_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(data_dir)): p.read_bytes() for p in data_dir.rglob("*") if p.is_file()
    }


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    np.save(tmp_path / "deep.npy", np.zeros((4, 4, 4), np.uint16))
    np.save(tmp_path / "signed.npy", np.zeros((4, 4, 4), np.int32))
    np.save(tmp_path / "ok.npy", np.zeros((4, 4, 4), np.uint8))
    with TestClient(create_app(Settings(data_dir=str(data_dir)))) as c:
        api = Api(c)
        root = api.new_repo()
        api.new_instance(root, "uint8blk", "gray")
        api.new_instance(root, "labelmap", "flat")
        api.new_instance(root, "keyvalue", "kv")
        api.commit(root)
        child = api.newversion(root)

    def ingest(source: str, uuid: str, name: str, *more: str) -> list[str]:
        return ["ingest", str(tmp_path / source), "--uuid", uuid, "--instance", name, *more]

    def downres(uuid: str, name: str, *more: str) -> list[str]:
        return ["downres", "--uuid", uuid, "--instance", name, *more]

    cases = [
        (ingest("nope.npy", child, "gray"), "no such file"),
        (ingest("nope", child, "gray"), "no such file"),
        (ingest("deep.npy", child, "gray"), "uint16"),
        (ingest("signed.npy", child, "flat"), "int32"),
        (ingest("deep.npy", child, "new", "--type", "uint8blk"), "uint16"),
        (ingest("ok.npy", root, "gray"), "locked"),
        (ingest("ok.npy", child, "new"), "--type"),
        (ingest("ok.npy", child, "kv"), "keyvalue"),
        (ingest("ok.npy", child, "new", "--type", "keyvalue"), "keyvalue"),
        (ingest("ok.npy", child, "gray", "--type", "labelmap"), "not a labelmap"),
        (ingest("ok.npy", "ffffff", "gray"), "ffffff"),
        (downres(child, "gray"), "no voxels"),
        (downres(child, "flat"), "MaxDownresLevel 0"),
        (downres(root, "gray", "--box", "0,0,0,8,8,8"), "locked"),
        (downres(child, "nope"), "nope"),
    ]
    Services.from_settings(Settings(data_dir=str(data_dir))).check()  # stamps the format
    before = store_listing(data_dir)
    for args, why in cases:
        code, stderr = refused(*args, "--data-dir", str(data_dir))
        assert code == 1 and why in stderr, (args, stderr)
        assert stderr.startswith("Error: ") and stderr.count("\n") == 1, stderr
    assert store_listing(data_dir) == before
