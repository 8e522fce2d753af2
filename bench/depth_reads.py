"""Whole-volume read at version depth 100: dvid-cloud against Icechunk + zarr-python.

Builds the same uint8 volume (``--edge``³, 64³ chunks, blosc lz4 with shuffle in both) twice:

* in dvid-cloud, through the HTTP API of a real ``dvid-cloud serve`` process on a local
  folder: the whole volume POSTed at the root and committed, then ``--depth`` versions,
  each a ``newversion``, one POST raw of a 64³ chunk and a commit;
* in an Icechunk repo on local-filesystem storage: the whole volume in one commit, then
  ``--depth`` commits, each rewriting the same chunk with the same bytes.

Then reads the whole volume at the newest version, in interleaved rounds (a, b, c, a, b,
c...) so that the load of a shared machine falls on every reader alike:

* dvid-cloud: GET raw over HTTP (a keep-alive ``http.client`` connection) with a query
  no request had before (``?read=n``, which the server ignores), so that no kept answer
  serves it: the chunks are read and assembled afresh, as at a first request;
* dvid-cloud in-process: binding the instance (catalog check included) and the volume's
  read path (``VersionedVolume.read``), in this process, on the same folder (the server
  does not keep these one-off 16 MiB answers: it keeps a large answer only when it is
  asked for again, app/immutable.py);
* dvid-cloud in-process without its chunk cache (``chunk_cache_bytes=0``): the server
  keeps the decoded chunks of locked versions (every version of this chain is locked),
  so after the first round the lines above copy chunks from memory; this one reads and
  decodes them from the folder each time, as Icechunk + zarr-python (no chunk cache) do;
* Icechunk + zarr-python: ``array[...]`` on one array opened at the branch head (its
  snapshot and manifest kept, as dvid keeps its ownership indexes; no chunk cache),
  and on an array opened from a fresh read-only session each time.

The figure of issue 15 is the ratio of speeds, dvid GET over HTTP ÷ Icechunk with its
array kept open. MB are 10^6 bytes; each line gives the median and the range of rounds.

    python -m bench.depth_reads [--edge 256] [--depth 100] [--rounds 15]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.api.instances import resolve
from app.services import Services
from app.settings import Settings
from app.volumes.base import VolumeData
from app.volumes.geometry import Box, vec
from bench.imageblk import Lean, blosc_array, em_like, raw_path, server

BLOCK = 64
MB = 1e6
NAME = "grayscale"


def rewrites(edge: int, depth: int, seed: int = 1) -> list[tuple[tuple[int, int, int], int]]:
    """Per version, the chunk it rewrites: its (x, y, z) origin and a value added to its
    voxels. Every chunk is rewritten before any is rewritten twice."""
    n = edge // BLOCK
    origins = [
        (x * BLOCK, y * BLOCK, z * BLOCK) for z in range(n) for y in range(n) for x in range(n)
    ]
    order = np.random.default_rng(seed).permutation(len(origins))
    return [(origins[int(order[i % len(order)])], 1 + i) for i in range(depth)]


def block_of(origin: tuple[int, int, int]) -> tuple[slice, slice, slice]:
    x, y, z = origin
    return np.s_[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK]


def ok(response: httpx.Response) -> httpx.Response:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:300]}")
    return response


# --- dvid-cloud ----------------------------------------------------------------------------


def build_dvid(
    http: httpx.Client, lean: Lean, data: np.ndarray, changes: list[Any]
) -> tuple[str, np.ndarray]:
    """The chain of versions over HTTP; returns the newest (committed) node and the
    volume it holds."""
    edge = data.shape[0]
    root = ok(http.post("/api/repos", json={})).json()["root"]
    body = {"typename": "uint8blk", "dataname": NAME, "BlockSize": f"{BLOCK},{BLOCK},{BLOCK}"}
    ok(http.post(f"/api/repo/{root}/instance", json=body))
    lean.post(raw_path(root, NAME, (edge,) * 3, (0, 0, 0)), data.tobytes())
    lean.post(f"/api/node/{root}/commit", b"{}")
    expected = data.copy()
    node = root
    for origin, add in changes:
        node = ok(http.post(f"/api/node/{node}/newversion", json={})).json()["child"]
        where = block_of(origin)
        expected[where] = (expected[where] + add).astype(np.uint8)
        lean.post(raw_path(node, NAME, (BLOCK,) * 3, origin), expected[where].tobytes())
        lean.post(f"/api/node/{node}/commit", b"{}")
    return node, expected


def in_process_reader(
    data_dir: Path, node: str, edge: int, chunk_cache: bool = True
) -> Callable[[], np.ndarray]:
    """dvid-cloud's own read path in this process: bind the instance, read the box;
    without ``chunk_cache``, every chunk is read from the folder and decoded at every read."""
    settings = Settings(data_dir=data_dir)
    if not chunk_cache:
        settings = Settings(data_dir=data_dir, chunk_cache_bytes=0)
    services = Services.from_settings(settings)
    box = Box(vec((0, 0, 0)), vec((edge, edge, edge)))

    def read() -> np.ndarray:
        data = resolve(services, node, NAME)
        assert isinstance(data, VolumeData)
        return data.volume(0).read(box)

    return read


# --- Icechunk ------------------------------------------------------------------------------


def build_icechunk(
    folder: Path, data: np.ndarray, changes: list[Any]
) -> tuple[Callable[[], object], Callable[[], object], str] | str:
    """Readers of the newest snapshot (array kept open; fresh session per read) and a
    label, or why there are none."""
    try:
        import icechunk
        import zarr
    except ImportError as e:
        return f"skipped: {e} (pip install 'dvid-cloud[bench]')"
    icechunk.set_logs_filter("error")  # not its warning about commits on local disk
    storage = icechunk.local_filesystem_storage(str(folder))
    repo = icechunk.Repository.create(storage)
    session = repo.writable_session("main")
    array = blosc_array(session.store, data.shape)
    array[...] = data
    session.commit("whole volume")
    expected = data.copy()
    for origin, add in changes:
        session = repo.writable_session("main")
        array = zarr.open_array(session.store, path="s0", mode="r+")
        where = block_of(origin)
        expected[where] = (expected[where] + add).astype(np.uint8)
        array[where] = expected[where]
        session.commit(f"chunk at {origin}")
    no_chunk_cache = icechunk.RepositoryConfig(caching=icechunk.CachingConfig(num_bytes_chunks=0))
    reader = icechunk.Repository.open(storage, config=no_chunk_cache)
    kept = zarr.open_array(reader.readonly_session(branch="main").store, path="s0", mode="r")

    def fresh() -> object:
        store = reader.readonly_session(branch="main").store
        return zarr.open_array(store, path="s0", mode="r")[...]

    label = f"icechunk {icechunk.__version__} + zarr-python {zarr.__version__}"
    return (lambda: kept[...]), fresh, label


# --- timing --------------------------------------------------------------------------------


def rounds(fns: dict[str, Callable[[], object]], n: int) -> dict[str, list[float]]:
    """Seconds of each callable over ``n`` interleaved rounds (each warmed once first)."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edge", type=int, default=256, help="volume edge (a multiple of 64)")
    parser.add_argument("--depth", type=int, default=100, help="versions after the root")
    parser.add_argument("--rounds", type=int, default=15, help="timed reads per reader")
    args = parser.parse_args()
    if args.edge % BLOCK:
        parser.error(f"--edge must be a multiple of {BLOCK}")
    started = time.perf_counter()
    edge = args.edge
    data = em_like(edge)
    changes = rewrites(edge, args.depth)
    print(
        f"whole-volume read of {edge}³ uint8 ({data.nbytes / MB:.1f} MB, {BLOCK}³ chunks) "
        f"at depth {args.depth}: one chunk rewritten per commit; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-depth-") as tmp:
        folder = Path(tmp)
        data_dir = folder / "data"
        with (
            server(data_dir, folder / "server.log") as (url, _pid),
            httpx.Client(base_url=url, timeout=120) as http,
        ):
            lean = Lean(url)
            t = time.perf_counter()
            leaf, expected = build_dvid(http, lean, data, changes)
            print(f"dvid-cloud: built over HTTP in {time.perf_counter() - t:.1f} s")
            path = raw_path(leaf, NAME, (edge,) * 3, (0, 0, 0))
            fresh_query = itertools.count()
            readers: dict[str, Callable[[], object]] = {
                "dvid-cloud GET raw over HTTP (no kept answer)": (
                    lambda: lean.get(f"{path}?read={next(fresh_query)}")
                ),
                "dvid-cloud in-process (bind + volume read)": in_process_reader(
                    data_dir, leaf, edge
                ),
                "dvid-cloud in-process, no chunk cache": in_process_reader(
                    data_dir, leaf, edge, chunk_cache=False
                ),
            }
            assert lean.get(f"{path}?read=check") == expected.tobytes()
            inproc = readers["dvid-cloud in-process (bind + volume read)"]
            assert np.array_equal(np.asarray(inproc()), expected)
            t = time.perf_counter()
            ice = build_icechunk(folder / "icechunk", data, changes)
            if isinstance(ice, str):
                print(f"icechunk: {ice}")
            else:
                kept, fresh, label = ice
                print(f"{label}: built in {time.perf_counter() - t:.1f} s")
                for reader in (kept, fresh):
                    assert np.array_equal(np.asarray(reader()), expected)
                readers[f"{label}, array kept open"] = kept
                readers[f"{label}, fresh session"] = fresh
            samples = rounds(readers, args.rounds)
            lean.close()
    width = max(map(len, samples))
    print(f"\n{'reader':{width}} | {'median ms':>9} {'range ms':>15} | {'MB/s':>6}")
    speed = {}
    for name, times in samples.items():
        median = statistics.median(times)
        speed[name] = data.nbytes / median / MB
        span = f"{min(times) * 1e3:.1f}-{max(times) * 1e3:.1f}"
        print(f"{name:{width}} | {median * 1e3:9.1f} {span:>15} | {speed[name]:6.0f}")
    ice_names = [name for name in speed if name.startswith("icechunk")]
    if ice_names:
        base = ice_names[0]
        for name in [n for n in speed if n.startswith("dvid")]:
            per_round = [i / d for d, i in zip(samples[name], samples[base], strict=True)]
            print(
                f"ratio {name} ÷ icechunk (array kept open): {speed[name] / speed[base]:.2f} "
                f"(per round {min(per_round):.2f}-{max(per_round):.2f})"
            )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
