"""Bulk commands on Dask, each beside the plain tensorstore job doing the same copy.

``ingest``: a 1024³ uint8 volume into a uint8blk and a 512³ uint64 label volume into a
labelmap (default settings: 32³ lz4 and 64³ gzip blocks, no lower scales), on a local
folder, with 1 and 2 workers (``dvid-cloud ingest`` as a real process, its own local
cluster), beside one process of tensorstore reading the same source and writing a zarr3
array with the same chunks and codec. Sources are zarr3 arrays (64³ chunks, raw). MB/s
count the voxels' bytes; the ingest figure is timed from the first task submitted (the
summary line: after the cluster started and the workers imported the code), the wall
time is the whole command's.

``export``: the same volumes, put in place by ingest, exported by ``dvid-cloud export``
(a real process, its own local cluster) with 1 and 2 workers, unsharded, and sharded with
2 workers, beside one process of tensorstore copying the ingested chunk array into a
precomputed volume with the same scale metadata (:func:`bench_export`).

    python -m bench.bulk [ingest] [export] [--quick]

``--quick``: 256³ and 128³ in 2 MB tasks (else 64 MB, the default). Figures are
printed, never checked.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

CLI = shutil.which("dvid-cloud", path=str(Path(sys.executable).parent)) or "dvid-cloud"
MB = 1e6


# --- ingest ------------------------------------------------------------------------------


def _zarr3(path: Path, shape: tuple[int, ...], dtype: str, codecs: list[Any] | None = None) -> Any:
    metadata: dict[str, Any] = {
        "shape": list(shape),
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [64, 64, 64]}},
    }
    if codecs is not None:
        metadata["codecs"] = codecs
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}
    return ts.open({**spec, "metadata": metadata}, create=True, delete_existing=True).result()


def _make_source(path: Path, edge: int, labels: bool) -> None:
    """A zarr3 volume of ``edge``³: random gray levels, or labels in 16³ patches (about 64
    labels per 64³ block), written a slab at a time."""
    rng = np.random.default_rng(1)
    array = _zarr3(path, (edge,) * 3, "uint64" if labels else "uint8")
    for z in range(0, edge, 64):  # edges are multiples of 64
        if labels:
            coarse = rng.integers(1, 100_000, (4, edge // 16, edge // 16), dtype=np.uint64)
            slab = coarse.repeat(16, 0).repeat(16, 1).repeat(16, 2)
        else:
            slab = rng.integers(0, 256, (64, edge, edge), dtype=np.uint8)
        array[z : z + 64].write(slab).result()


def _tensorstore_copy(source: Path, target: Path, labels: bool) -> float:
    """Seconds for one process to copy ``source`` into a zarr3 array with the instance's
    chunks and codec (64³ gzip for labels, 32³ blosc lz4 for gray)."""
    from app.volumes.arrays import VolumeSpec

    dtype = np.dtype("<u8" if labels else "<u1")
    block = (64, 64, 64) if labels else (32, 32, 32)
    metadata = VolumeSpec(dtype, block, 0, "gzip" if labels else "lz4").zarr_metadata()
    reader = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(source)}})
    src = reader.result()
    metadata["shape"] = list(src.shape)
    kvstore = {"driver": "file", "path": str(target)}
    started = time.perf_counter()
    dst = ts.open({"driver": "zarr3", "kvstore": kvstore, "metadata": metadata}, create=True)
    dst.result().write(src).result()
    return time.perf_counter() - started


def _new_repo(data_dir: Path, instances: list[tuple[str, str]]) -> str:
    """A repo with ``(typename, name)`` instances, through an in-process app."""
    from fastapi.testclient import TestClient

    from app.server import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(data_dir=str(data_dir)))) as c:
        root = c.post("/api/repos", json={}).json()["root"]
        for typename, name in instances:
            body = {"typename": typename, "dataname": name}
            assert c.post(f"/api/repo/{root}/instance", json=body).status_code == 200
    return str(root)


def _ingest(
    source: Path, data_dir: Path, root: str, name: str, workers: int, task_mb: float
) -> dict[str, Any]:
    command = [CLI, "ingest", str(source), "--uuid", root, "--instance", name]
    command += ["--data-dir", str(data_dir), "--workers", str(workers), "--task-mb", str(task_mb)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"ingest failed: {done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    summary["wall"] = wall
    return summary


def bench_ingest(quick: bool) -> None:
    cases = [("uint8blk", 256 if quick else 1024, False), ("labelmap", 128 if quick else 512, True)]
    task_mb = 2.0 if quick else 64.0
    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        names = [(t, f"{t}_{w}") for t, _, _ in cases for w in (1, 2)]
        root = _new_repo(data_dir, names)
        print("ingest: dvid-cloud ingest (zarr3 source, local folder) vs one tensorstore copy")
        for typename, edge, labels in cases:
            source = work / f"{typename}-source"
            _make_source(source, edge, labels)
            nbytes = edge**3 * (8 if labels else 1)
            copy = _tensorstore_copy(source, work / f"{typename}-copy", labels)
            base = nbytes / copy / MB
            print(f"  {typename} {edge}³ ({nbytes / MB:.0f} MB)")
            print(f"    tensorstore copy, 1 process  {base:8.1f} MB/s  ({copy:.1f} s)")
            rates = {}
            for workers in (1, 2):
                s = _ingest(source, data_dir, root, f"{typename}_{workers}", workers, task_mb)
                rates[workers] = s["MB_per_second"]
                print(
                    f"    ingest, {workers} worker{'s' if workers > 1 else ' '}"
                    f"           {s['MB_per_second']:8.1f} MB/s  ({s['seconds']:.1f} s,"
                    f" {s['wall']:.1f} s wall, {s['tasks']} tasks of {task_mb:g} MB)"
                    f"  = {s['MB_per_second'] / base:.2f}x tensorstore"
                )
            print(f"    scaling 2 workers / 1 worker   {rates[2] / rates[1]:.2f}x")
            shutil.rmtree(source)


# --- export ------------------------------------------------------------------------------


def _tensorstore_export(data_dir: Path, root: str, name: str, target: Path) -> float:
    """Seconds for one process of tensorstore to copy scale 0 of instance ``name`` (its
    zarr3 chunk array, as ingest left it at ``root``) into a precomputed volume with the
    export's scale metadata: the same bytes in and out, without Dask, the version's
    chunk lookups or (labelmap) the mapping to bodies."""
    from app.datatypes import bind
    from app.services import Services
    from app.settings import Settings
    from app.volumes import keys, precomputed
    from app.volumes.base import VolumeData

    services = Services.from_settings(Settings(data_dir=str(data_dir)))
    repo, node = services.catalog.resolve(root)
    data = bind(services, repo, node.uuid, repo.instance(name))
    assert isinstance(data, VolumeData)
    info = precomputed.info(data)
    scale = info["scales"][0]
    (x0, y0, z0), (nx, ny, nz) = scale["voxel_offset"], scale["size"]
    started = time.perf_counter()
    store = data.store
    path = keys.node_array(keys.chunk_array(data.root, 0), node.uuid)
    kvstore = store.tensorstore_kvstore(path)
    source = services.arrays.open(kvstore, data.spec(), False, store.tensorstore_context())
    xyz = source[z0 : z0 + nz, y0 : y0 + ny, x0 : x0 + nx].T[..., ts.newaxis]
    metadata = {
        "key": "s0",
        "resolution": scale["resolution"],
        "voxel_offset": scale["voxel_offset"],
        "size": scale["size"],
        "chunk_size": scale["chunk_sizes"][0],
        "encoding": scale["encoding"],
    }
    if "compressed_segmentation_block_size" in scale:
        metadata["compressed_segmentation_block_size"] = [8, 8, 8]
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": f"{target}/"},
        "multiscale_metadata": {k: info[k] for k in ("type", "data_type", "num_channels")},
        "scale_metadata": metadata,
    }
    output = ts.open(spec, create=True).result()
    output[ts.d[:3].translate_to[0]].write(xyz[ts.d[:3].translate_to[0]]).result()
    return time.perf_counter() - started


def _export(
    data_dir: Path, root: str, name: str, dest: Path, workers: int, sharded: bool
) -> dict[str, Any]:
    command = [CLI, "export", str(dest), "--uuid", root, "--instance", name]
    command += ["--data-dir", str(data_dir), "--workers", str(workers)]
    command += ["--sharded"] if sharded else []
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"export failed: {done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    summary["wall"] = wall
    return summary


def bench_export(quick: bool) -> None:
    """Each volume is put in place by ``dvid-cloud ingest`` (2 workers), then exported
    unsharded with 1 and 2 workers and sharded with 2, beside :func:`_tensorstore_export`
    of the same voxels. MB/s count the exported voxels' bytes (uint8, uint64); the export
    figure is timed from the first task (after the cluster started), the wall time is the
    whole command's."""
    cases = [("uint8blk", 256 if quick else 1024, False), ("labelmap", 128 if quick else 512, True)]
    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        root = _new_repo(data_dir, [(t, t) for t, _, _ in cases])
        print("export: dvid-cloud export (local folder to a folder) vs one tensorstore copy")
        for typename, edge, labels in cases:
            source = work / f"{typename}-source"
            _make_source(source, edge, labels)
            _ingest(source, data_dir, root, typename, 2, 64.0)
            shutil.rmtree(source)
            nbytes = edge**3 * (8 if labels else 1)
            copy = _tensorstore_export(data_dir, root, typename, work / f"{typename}-copy")
            base = nbytes / copy / MB
            print(f"  {typename} {edge}³ ({nbytes / MB:.0f} MB)")
            print(f"    tensorstore copy, 1 process   {base:8.1f} MB/s  ({copy:.1f} s)")
            rates = {}
            for workers, sharded in ((1, False), (2, False), (2, True)):
                dest = work / f"{typename}-{workers}-{sharded}"
                s = _export(data_dir, root, typename, dest, workers, sharded)
                rates[workers, sharded] = s["MB_per_second"]
                kind = "sharded  " if sharded else "unsharded"
                print(
                    f"    export {kind}, {workers} worker{'s' if workers > 1 else ' '}"
                    f" {s['MB_per_second']:8.1f} MB/s  ({s['seconds']:.1f} s,"
                    f" {s['wall']:.1f} s wall, {s['chunks']} chunks)"
                    f"  = {s['MB_per_second'] / base:.2f}x tensorstore"
                )
                shutil.rmtree(dest)
            print(f"    scaling 2 workers / 1 worker    {rates[2, False] / rates[1, False]:.2f}x")


SECTIONS: dict[str, Callable[[bool], None]] = {"ingest": bench_ingest, "export": bench_export}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sections", nargs="*", help=f"of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller volumes")
    args = parser.parse_args()
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    for name in args.sections or SECTIONS:
        SECTIONS[name](args.quick)


if __name__ == "__main__":
    main()
