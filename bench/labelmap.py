"""labelmap over loopback HTTP: a real ``dvid-cloud serve`` process on a local folder.

A synthetic segmentation stands in for real data: warped, irregular Voronoi-like cells
(random cut planes per axis, displaced by smooth sinusoids; a few thousand supervoxels with
large random ids, 5% of the cells background), agglomerated into bodies of about 27
neighbouring supervoxels (~10^6 voxels each) by a ``POST /mappings`` made before ingest,
so that the label index is built per body. Every ratio is between figures of the same run,
timed in interleaved rounds (a, b, c, a, b, c...) so the load of a shared machine falls on
all alike:

1. Ingest of the volume into labelmaps with ``BlockSize 64,64,64`` and ``MaxDownresLevel
   3`` (label index, counters and 3 lower scales kept by the server) by ``POST raw``:
   256³ pieces uncompressed, 256³ pieces ``compression=lz4``, 128³ pieces lz4. Baselines:
   tensorstore writing the same voxels in-process into a zarr3 array with the server's own
   chunk metadata (scale 0 only), and the same plus 3 lower scales by tensorstore's
   ``downsample`` driver (method ``mode``).
2. neuroglancer's path: 16 concurrent clients (``wrk``) GETting single 64³ blocks
   ``raw/0_1_2/64_64_64/x_y_z?compression=googlegzip`` (mapped, and ``supervoxels=true``),
   against the same work done in-process on one thread: tensorstore chunk read +
   ``compressed_segmentation.compress`` + gzip level 6.
3. ``sparsevol`` (rles), ``sparsevol-size`` and ``sparsevol-coarse`` of a ~10^6-voxel body.
4. ``GET /labels`` of 10,000 random points (spread over the volume, and in one block).
5. Cold start: ``POST /mappings`` of 10^7 supervoxels (protobuf ``MappingOps`` in
   batches) at a child node, commit, then new server processes on the same folder: time
   from process start to the first 200 of ``/api/heartbeat`` (against a server on an
   empty folder), and of the first ``GET /mapping`` and ``GET /label`` answered.

    python -m bench.labelmap [--quick]

Timed sequential requests go through a keep-alive ``http.client`` connection. The server
runs with its defaults (one uvicorn worker, info-level JSON log, here to a file). MB are
10^6 bytes; times are medians unless said otherwise.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import compressed_segmentation as cseg
import httpx
import lz4.block
import numpy as np
import tensorstore as ts

from app.datatypes.labelmap import codecs
from app.datatypes.labelmap.ingest import mode_downsample
from app.proto import labelmap_pb2 as pb
from bench.imageblk import (
    CLIENTS,
    Lean,
    cpu_seconds,
    free_port,
    median_s,
    medians,
    ok,
    thread_load,
    wrk_load,
)

CLI = shutil.which("dvid-cloud", path=str(Path(sys.executable).parent)) or "dvid-cloud"
MB = 1e6
BLOCK = 64
LEVELS = 3
CELL = 32  # mean supervoxel edge, voxels
GROUP = 3  # bodies are GROUP³ neighbouring supervoxel cells
MAP_BUDGET_S = 180.0  # POST /mappings stops early (and says so) beyond this


# --- the server ------------------------------------------------------------------------------


class Server:
    """``dvid-cloud serve --data-dir folder --workers 1`` (the default is a worker per
    core) on a free loopback port; ``startup`` is the time from ``Popen`` to the first
    200 of ``/api/heartbeat`` (polled every 2 ms)."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "ab") as out:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                [
                    CLI,
                    "serve",
                    "--data-dir",
                    str(data_dir),
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 60
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/api/heartbeat")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            finally:
                conn.close()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                self.dump_log()
                raise RuntimeError("server did not start")
            time.sleep(0.002)
        self.startup = time.perf_counter() - t0

    def dump_log(self) -> None:
        tail = self.log.read_text(errors="replace").splitlines()[-15:]
        print("server log, last lines:", *tail, sep="\n   ", file=sys.stderr)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def first_request(
    url: str, method: str, path: str, body: bytes | None = None
) -> tuple[float, bytes]:
    """Seconds for one request on a new connection, and its body (200 required)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    t = time.perf_counter()
    conn.request(method, path, body=body)
    response = conn.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - t
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
    return elapsed, data


# --- synthetic segmentation --------------------------------------------------------------


class Segmentation:
    """A ZYX uint64 supervoxel volume of warped irregular cells, and its agglomeration.

    ``svs`` (sorted) are the supervoxel ids present, ``bodies`` their bodies, ``sizes``
    their voxel counts."""

    def __init__(self, edge: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        pad = 16  # room for the warp on both sides
        luts, ncells = [], []
        for _ in range(3):
            span = edge + 2 * pad
            cuts = np.sort(rng.choice(np.arange(1, span), size=span // CELL, replace=False))
            lut = np.searchsorted(cuts, np.arange(span), side="right").astype(np.int32)
            luts.append(lut)
            ncells.append(int(lut[-1]) + 1)
        nx, ny, nz = ncells
        cells = nx * ny * nz
        k = np.arange(cells, dtype=np.uint64)
        # distinct, random-looking 40-bit ids (an odd multiplier is a bijection mod 2^40)
        ids = (k * np.uint64(0x9E3779B1) + np.uint64(12345)) % np.uint64(1 << 40) + np.uint64(1)
        ids[rng.random(cells) < 0.05] = 0
        phase = rng.uniform(0, 2 * np.pi, size=6)
        a = np.arange(edge, dtype=np.float32)

        def warp(p: float, q: float) -> np.ndarray:
            w = pad + 6 * np.sin(a[:, None] / 13 + p) + 5 * np.sin(a[None, :] / 17 + q)
            return np.rint(w).astype(np.int32)

        dx, dy, dz = warp(phase[0], phase[1]), warp(phase[2], phase[3]), warp(phase[4], phase[5])
        self.volume = np.empty((edge,) * 3, np.uint64)
        counts = np.zeros(cells, np.int64)
        ar = np.arange(edge, dtype=np.int32)
        for z in range(edge):
            cx = luts[0][ar[None, :] + dx[z][:, None]]  # x displaced by f(z, y)
            cy = luts[1][ar[:, None] + dy[z][None, :]]  # y displaced by f(z, x)
            cz = luts[2][z + dz]  # z displaced by f(y, x)
            index = (cz * ny + cy) * nx + cx
            self.volume[z] = ids[index]
            counts += np.bincount(index.ravel(), minlength=cells)
        present = (counts > 0) & (ids != 0)
        iz, iy, ix = np.unravel_index(np.arange(cells), (nz, ny, nx))
        group = ((iz // GROUP) * (ny // GROUP + 1) + iy // GROUP) * (nx // GROUP + 1) + ix // GROUP
        body_of_cell = (1 << 41) + 2 * group.astype(np.uint64) + 1
        order = np.argsort(ids[present])
        self.svs = ids[present][order]
        self.bodies = body_of_cell[present][order]
        self.sizes = counts[present][order]
        self.edge = edge

    def to_bodies(self, labels: np.ndarray) -> np.ndarray:
        """Mapped labels (0 stays 0)."""
        labels = np.asarray(labels, dtype=np.uint64)
        pos = np.clip(np.searchsorted(self.svs, labels), 0, self.svs.size - 1)
        return np.where(labels == 0, np.uint64(0), self.bodies[pos])

    def body_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        bodies, inverse = np.unique(self.bodies, return_inverse=True)
        return bodies, np.bincount(inverse, weights=self.sizes).astype(np.int64)


def mapping_ops(svs: np.ndarray, bodies: np.ndarray) -> bytes:
    """Serialized ``MappingOps``: one op per body, its supervoxels as ``original``."""
    order = np.argsort(bodies, kind="stable")
    bodies, svs = bodies[order], svs[order]
    starts = np.flatnonzero(np.r_[True, bodies[1:] != bodies[:-1]])
    ops = pb.MappingOps()
    for body, group in zip(bodies[starts].tolist(), np.split(svs, starts[1:]), strict=True):
        ops.mappings.add(mapped=body, original=group.tolist())
    return ops.SerializeToString()


# --- helpers -------------------------------------------------------------------------------


def raw_path(node: str, name: str, size: int, at: tuple[int, int, int], query: str = "") -> str:
    path = f"/api/node/{node}/{name}/raw/0_1_2/{size}_{size}_{size}/{'_'.join(map(str, at))}"
    return f"{path}?{query}" if query else path


def origins(edge: int, step: int) -> list[tuple[int, int, int]]:
    r = range(0, edge, step)
    return [(x, y, z) for z in r for y in r for x in r]


def new_labelmap(http: httpx.Client, root: str, name: str) -> None:
    body = {
        "typename": "labelmap",
        "dataname": name,
        "BlockSize": f"{BLOCK},{BLOCK},{BLOCK}",
        "MaxDownresLevel": str(LEVELS),
    }
    ok(http.post(f"/api/repo/{root}/instance", json=body))


def array_dir(http: httpx.Client, data_dir: Path, node: str, name: str, scale: int) -> Path:
    info = ok(http.get(f"/api/node/{node}/{name}/info")).json()
    return data_dir / "data" / info["Base"]["DataUUID"] / f"s{scale}" / node


# --- figures -----------------------------------------------------------------------------


def ingest_figure(
    http: httpx.Client, lean: Lean, seg: Segmentation, root: str, data_dir: Path, folder: Path
) -> None:
    """Figure 1. Leaves ``seg`` (256³ raw pieces) in place for the other figures."""
    vol, edge = seg.volume, seg.edge
    big = min(256, edge)
    print(
        f"\n1. Ingest {edge}³ uint64 ({vol.nbytes / MB:.0f} MB, {seg.svs.size} supervoxels in "
        f"{np.unique(seg.bodies).size} bodies) into labelmaps with BlockSize {BLOCK}³, "
        f"MaxDownresLevel {LEVELS}"
    )
    ok(http.post(f"/api/node/{root}/seg/mappings", content=mapping_ops(seg.svs, seg.bodies)))
    for name in ("seg_lz4", "seg_128"):
        new_labelmap(http, root, name)
        ok(http.post(f"/api/node/{root}/{name}/mappings", content=mapping_ops(seg.svs, seg.bodies)))
    # warm the server's code paths on a scratch instance (not timed)
    new_labelmap(http, root, "warm")
    lean.post(raw_path(root, "warm", BLOCK, (0, 0, 0)), vol[:BLOCK, :BLOCK, :BLOCK].tobytes())

    # the baselines write zarr3 arrays with the server's own chunk metadata (codec too)
    metadata = json.loads((array_dir(http, data_dir, root, "warm", 0) / "zarr.json").read_text())
    codec = [c["name"] for c in metadata["codecs"]]
    offsets = [-(-(1 << 30) // BLOCK) * BLOCK] * 3

    def ts_array(path: Path) -> ts.TensorStore:
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{path}/"}}
        arr = ts.open({**spec, "metadata": metadata}, create=True, open=True).result()
        return arr[ts.d[:].translate_by[tuple(-o for o in offsets)]]

    ts_s0 = ts_array(folder / "ts-s0")
    ts_scaled = [ts_array(folder / f"ts-scales-s{s}") for s in range(LEVELS + 1)]

    def ts_write(o: tuple[int, int, int], size: int, scales: bool) -> None:
        x, y, z = o
        piece = vol[z : z + size, y : y + size, x : x + size]
        if not scales:
            ts_s0[z : z + size, y : y + size, x : x + size].write(piece).result()
            return
        futures = [ts_scaled[0][z : z + size, y : y + size, x : x + size].write(piece)]
        for s in range(1, LEVELS + 1):
            piece = ts.downsample(ts.array(piece), [2, 2, 2], "mode").read().result()
            n, f = size >> s, 1 << s
            futures.append(
                ts_scaled[s][z // f : z // f + n, y // f : y // f + n, x // f : x // f + n].write(
                    piece
                )
            )
        for future in futures:
            future.result()

    def post(name: str, o: tuple[int, int, int], size: int, body: bytes, query: str) -> None:
        lean.post(raw_path(root, name, size, o, query), body)

    # bodies prepared ahead (lz4 compression of the client is not timed)
    regions = origins(edge, big)
    times: dict[str, float] = {}
    lz4_in = lz4_out = 0
    labels = {
        "raw": f"POST raw {big}³ pieces, uncompressed",
        "lz4": f"POST raw {big}³ pieces, compression=lz4",
        "lz4s": "POST raw 128³ pieces, compression=lz4",
        "ts0": "tensorstore in-process, scale 0 only",
        "ts3": f"tensorstore in-process + {LEVELS} scales (mode)",
    }
    times = dict.fromkeys(labels, 0.0)
    for o in regions:  # a, b, c, d, e per region: shared-machine noise falls on all alike
        x, y, z = o
        piece = np.ascontiguousarray(vol[z : z + big, y : y + big, x : x + big])
        raw = piece.tobytes()
        packed = lz4.block.compress(raw, store_size=False)
        lz4_in, lz4_out = lz4_in + len(raw), lz4_out + len(packed)
        small = []
        for sx, sy, sz in origins(big, 128):
            part = np.ascontiguousarray(piece[sz : sz + 128, sy : sy + 128, sx : sx + 128])
            small.append(
                ((x + sx, y + sy, z + sz), lz4.block.compress(part.tobytes(), store_size=False))
            )
        steps: dict[str, Callable[[], object]] = {
            "raw": lambda o=o, raw=raw: post("seg", o, big, raw, ""),
            "lz4": lambda o=o, p=packed: post("seg_lz4", o, big, p, "compression=lz4"),
            "lz4s": lambda s=small: [post("seg_128", q, 128, p, "compression=lz4") for q, p in s],
            "ts0": lambda o=o: ts_write(o, big, False),
            "ts3": lambda o=o: ts_write(o, big, True),
        }
        for key, step in steps.items():
            t = time.perf_counter()
            step()
            times[key] += time.perf_counter() - t
    for key, label in labels.items():
        print(f"   {label:<44} {times[key]:7.1f} s {vol.nbytes / times[key] / MB:7.1f} MB/s")
    print(
        f"   (server and baselines store chunks with zarr codecs {codec}; lz4 bodies are "
        f"{lz4_in / lz4_out:.0f}x smaller than raw)"
    )
    print(
        f"   issue 15's figure, POST raw {edge}³ (in {big}³ pieces) with index and {LEVELS} "
        f"scales / tensorstore + {LEVELS} scales, as a speed: {times['ts3'] / times['raw']:.2f}"
    )
    print(
        f"   POST raw / tensorstore scale 0: {times['raw'] / times['ts0']:.1f}x the time; "
        f"/ tensorstore + {LEVELS} scales: {times['raw'] / times['ts3']:.1f}x; "
        f"lz4 / raw: {times['lz4'] / times['raw']:.2f}; 128³ / {big}³ lz4: "
        f"{times['lz4s'] / times['lz4']:.2f}"
    )
    # checks: voxels of every instance, a lower scale, and a body size
    corner = vol[:128, :128, :128]
    for name in ("seg", "seg_lz4", "seg_128"):
        got = lean.get(raw_path(root, name, 128, (0, 0, 0), "supervoxels=true"))
        assert got == corner.tobytes(), f"{name}: voxels differ"
    expected = corner
    for _ in range(LEVELS):
        expected = mode_downsample(expected)
    n = 128 >> LEVELS
    got = lean.get(raw_path(root, "seg", n, (0, 0, 0), f"supervoxels=true&scale={LEVELS}"))
    assert got == expected.tobytes(), "scale 3 differs from the mode of scale 0"
    bodies, sizes = seg.body_sizes()
    size = ok(http.get(f"/api/node/{root}/seg_128/size/{bodies[0]}")).json()["voxels"]
    assert size == sizes[0], (size, sizes[0])


def googlegzip_figure(
    http: httpx.Client,
    url: str,
    pid: int,
    seg: Segmentation,
    root: str,
    data_dir: Path,
    folder: Path,
    seconds: float,
    rounds: int,
) -> None:
    """Figure 2: neuroglancer's single-block reads against one in-process thread."""
    load = wrk_load if shutil.which("wrk") else thread_load
    blocks = origins(seg.edge, BLOCK)
    print(
        f"\n2. GET raw 64³ ?compression=googlegzip, {CLIENTS} clients "
        f"({'wrk -t1' if load is wrk_load else 'httpx threads'}, {seconds} s each in "
        f"{rounds} rounds) cycling over {len(blocks)} blocks, committed node"
    )
    paths = {
        "mapped (neuroglancer)": [
            raw_path(root, "seg", BLOCK, o, "compression=googlegzip&scale=0") for o in blocks
        ],
        "supervoxels=true": [
            raw_path(root, "seg", BLOCK, o, "compression=googlegzip&scale=0&supervoxels=true")
            for o in blocks
        ],
    }
    x, y, z = blocks[len(blocks) // 3]
    block = seg.volume[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK]
    r = ok(http.get(paths["mapped (neuroglancer)"][len(blocks) // 3]))
    assert r.headers["content-encoding"] == "gzip"
    assert np.array_equal(codecs.decode_google(r.content, block.shape), seg.to_bodies(block))
    for p in paths.values():
        load(url, p[:8], 1, folder)  # warm
    runs: dict[str, list[tuple[dict[str, float], float]]] = {label: [] for label in paths}
    for _ in range(rounds):
        for label, p in paths.items():
            cpu = cpu_seconds(pid)
            result = load(url, p, seconds / rounds, folder)
            runs[label].append((result, cpu_seconds(pid) - cpu))
    rates = {}
    for label, results in runs.items():
        n = sum(r["requests"] for r, _ in results)
        secs = sum(r["seconds"] for r, _ in results)
        cores = sum(cpu for _, cpu in results) / secs
        rates[label] = n / secs
        p50 = statistics.median(r["p50"] for r, _ in results)
        p99 = max(r["p99"] for r, _ in results)
        print(
            f"   server, {label:<22} {n / secs:6.0f} req/s  p50 {p50:6.1f} ms  p99 "
            f"{p99:6.1f} ms  server {cores:.2f} cores, {cores / (n / secs) * 1e3:.2f} ms CPU/req"
        )
    # in-process, one thread: the same chunks from the server's own zarr3 array
    kvstore = {"driver": "file", "path": f"{array_dir(http, data_dir, root, 'seg', 0)}/"}
    offsets = [-(-(1 << 30) // BLOCK) * BLOCK] * 3
    store = ts.open({"driver": "zarr3", "kvstore": kvstore}, open=True).result()
    store = store[ts.d[:].translate_by[tuple(-o for o in offsets)]]

    def read(o: tuple[int, int, int]) -> np.ndarray:
        x, y, z = o
        return store[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK].read().result()

    def encode(chunk: np.ndarray) -> bytes:
        xyz = np.asfortranarray(chunk.T)
        return bytes(cseg.compress(xyz, block_size=(8, 8, 8), order="F"))

    encoded = encode(read((x, y, z)))
    assert np.array_equal(codecs.decode_google(encoded, block.shape), block)
    chunk = read((x, y, z))
    cycle = iter(range(1 << 62))
    parts = medians(
        {
            "all": lambda: gzip.compress(
                encode(read(blocks[next(cycle) % len(blocks)])), compresslevel=6
            ),
            "read": lambda: read(blocks[next(cycle) % len(blocks)]),
            "cseg": lambda: encode(chunk),
            "gzip": lambda: gzip.compress(encoded, compresslevel=6),
            "unique": lambda: np.unique(chunk, return_inverse=True),
        },
        31 if seconds > 3 else 11,
    )
    one_thread = 1 / parts["all"]
    print(
        f"   in-process, one thread: tensorstore read + compressed_segmentation + gzip 6  "
        f"{one_thread:6.0f} /s ({parts['read'] * 1e3:.2f} + {parts['cseg'] * 1e3:.2f} + "
        f"{parts['gzip'] * 1e3:.2f} ms; np.unique(return_inverse) of a block, the mapping "
        f"step, {parts['unique'] * 1e3:.2f} ms)"
    )
    mapped, svs = rates["mapped (neuroglancer)"], rates["supervoxels=true"]
    print(
        f"   server ({CLIENTS} clients, 2 cores) / in-process one thread: mapped "
        f"{mapped / one_thread:.2f}, supervoxels {svs / one_thread:.2f}; mapped / supervoxels "
        f"{mapped / svs:.2f}"
    )


def sparsevol_figure(
    http: httpx.Client, lean: Lean, seg: Segmentation, root: str, reps: int
) -> None:
    """Figure 3."""
    bodies, sizes = seg.body_sizes()
    i = int(np.argmin(np.abs(sizes - 1_000_000)))
    body, size = int(bodies[i]), int(sizes[i])
    base = f"/api/node/{root}/seg"
    rles = lean.get(f"{base}/sparsevol/{body}")
    runs = codecs.decode_rles(rles)
    assert int(runs[:, 3].sum()) == size, (int(runs[:, 3].sum()), size)
    info = json.loads(lean.get(f"{base}/sparsevol-size/{body}"))
    assert info["voxels"] == size, info
    coarse = lean.get(f"{base}/sparsevol-coarse/{body}")
    print(
        f"\n3. Sparse volume of body {body}: {size:,} voxels, {info['numblocks']} blocks, "
        f"{len(runs):,} runs ({len(rles) / MB:.1f} MB rles)"
    )
    times = medians(
        {
            "sparsevol (rles)": lambda: lean.get(f"{base}/sparsevol/{body}"),
            "sparsevol?format=blocks": lambda: lean.get(f"{base}/sparsevol/{body}?format=blocks"),
            "sparsevol-size": lambda: lean.get(f"{base}/sparsevol-size/{body}"),
            "sparsevol-coarse": lambda: lean.get(f"{base}/sparsevol-coarse/{body}"),
        },
        reps,
    )
    for label, secs in times.items():
        print(f"   {label:<26} {secs * 1e3:8.1f} ms")
    assert len(coarse) > 12


def labels_figure(
    http: httpx.Client, lean: Lean, seg: Segmentation, root: str, data_dir: Path, reps: int
) -> None:
    """Figure 4."""
    rng = np.random.default_rng(4)
    n = 10_000
    spread = rng.integers(0, seg.edge, size=(n, 3))
    one_block = rng.integers(0, BLOCK, size=(n, 3)) + BLOCK
    path = f"/api/node/{root}/seg/labels"
    print(f"\n4. GET /labels with a JSON body of {n:,} points [x,y,z]")
    bodies = {}
    for name, points in (("spread", spread), ("one block", one_block)):
        body = json.dumps(points.tolist()).encode()
        got = np.array(json.loads(lean.request("GET", path, body)), dtype=np.uint64)
        x, y, z = points.T
        assert np.array_equal(got, seg.to_bodies(seg.volume[z, y, x])), name
        bodies[name] = body
    touched = sorted({tuple(p) for p in (spread // BLOCK).tolist()})
    blocks = len(touched)
    kvstore = {"driver": "file", "path": f"{array_dir(http, data_dir, root, 'seg', 0)}/"}
    offsets = [-(-(1 << 30) // BLOCK) * BLOCK] * 3
    store = ts.open({"driver": "zarr3", "kvstore": kvstore}, open=True).result()
    store = store[ts.d[:].translate_by[tuple(-o for o in offsets)]]

    def read_touched() -> list[np.ndarray]:
        with ts.Batch() as batch:
            futures = [
                store[
                    z * BLOCK : (z + 1) * BLOCK,
                    y * BLOCK : (y + 1) * BLOCK,
                    x * BLOCK : (x + 1) * BLOCK,
                ].read(batch=batch)
                for x, y, z in touched
            ]
        return [f.result() for f in futures]

    times = medians(
        {
            f"random over the volume ({blocks} blocks)": lambda: lean.request(
                "GET", path, bodies["spread"]
            ),
            "random within one 64³ block": lambda: lean.request("GET", path, bodies["one block"]),
            f"in-process tensorstore read of those {blocks} chunks": read_touched,
        },
        reps,
    )
    for label, secs in times.items():
        print(f"   {label:<48} {secs * 1e3:8.1f} ms")
    spread_s, _, chunks_s = times.values()
    print(f"   spread points / in-process chunk read: {spread_s / chunks_s:.2f}x the time")


def cold_start_figure(
    lean: Lean,
    seg: Segmentation,
    root: str,
    total: int,
    batches: int,
) -> tuple[str, int]:
    """Figure 5, first half: load the mapping at a child of ``root`` and commit it.
    Returns the child and the number of entries loaded."""
    child = json.loads(lean.post(f"/api/node/{root}/newversion", b"{}"))["child"]
    # the segmentation's own supervoxels get new bodies at the child (so the answers show
    # the child's mapping is read), the rest are synthetic: 100 supervoxels per body
    real = seg.svs.size
    k = np.arange(total - real, dtype=np.uint64)
    synthetic = (k * np.uint64(0xC2B2AE3D) + np.uint64(99)) % np.uint64(1 << 40) + np.uint64(
        1 << 42
    )
    svs = np.concatenate([seg.svs, synthetic])
    bodies = np.concatenate([seg.bodies + np.uint64(1 << 40), (1 << 43) + k // np.uint64(100)])
    print(
        f"\n5. Cold start. POST /mappings of {total:,} supervoxels at a child node, "
        f"{batches} batches (protobuf MappingOps, one op per body)"
    )
    per = -(-total // batches)
    loaded, spent = 0, 0.0
    for b in range(batches):
        lo, hi = b * per, min(total, (b + 1) * per)
        body = mapping_ops(svs[lo:hi], bodies[lo:hi])
        t = time.perf_counter()
        lean.post(f"/api/node/{child}/seg/mappings", body)
        secs = time.perf_counter() - t
        loaded, spent = hi, spent + secs
        print(
            f"   batch {b + 1}: {hi - lo:,} entries ({len(body) / MB:.0f} MB) in {secs:5.1f} s, "
            f"{(hi - lo) / secs:9,.0f} entries/s"
        )
        if hi < total and spent + secs * 1.3 > MAP_BUDGET_S:
            print(
                f"   STOPPED after {loaded:,} of {total:,} entries: the next batch would pass "
                f"the {MAP_BUDGET_S:.0f} s budget"
            )
            break
    print(
        f"   POST /mappings overall: {loaded:,} entries in {spent:.1f} s, "
        f"{loaded / spent:,.0f} entries/s"
    )
    pick = np.random.default_rng(5).integers(0, loaded, size=10_000)
    got = json.loads(
        lean.request(
            "GET", f"/api/node/{child}/seg/mapping", json.dumps(svs[pick].tolist()).encode()
        )
    )
    assert got == bodies[pick].tolist(), "GET /mapping disagrees with what was posted"
    lean.post(f"/api/node/{child}/commit", b"{}")
    secs = median_s(
        lambda: lean.request(
            "GET", f"/api/node/{child}/seg/mapping", json.dumps(svs[pick].tolist()).encode()
        ),
        5,
    )
    print(
        f"   GET /mapping of 10,000 loaded supervoxels, warm server, committed: {secs * 1e3:.1f} ms"
    )
    return child, loaded


def restart_figure(
    data_dir: Path,
    folder: Path,
    seg: Segmentation,
    child: str,
    loaded: int,
    rounds: int,
) -> None:
    """Figure 5, second half: new server processes on the loaded folder (and on an empty
    one for the floor), alternately."""
    zs, ys, xs = np.nonzero(seg.volume[BLOCK : 2 * BLOCK, :BLOCK, :BLOCK])
    point = (int(xs[0]), int(ys[0]), BLOCK + int(zs[0]))
    sv = int(seg.volume[point[2], point[1], point[0]])
    body = int(seg.to_bodies(np.array([sv]))[0]) + (1 << 40)  # as mapped at the child
    empty = folder / "empty"
    empty.mkdir()
    samples: dict[str, list[float]] = {k: [] for k in ("empty", "loaded", "map", "label")}
    warm: dict[str, list[float]] = {"map": [], "label": []}
    map_path = f"/api/node/{child}/seg/mapping"
    label_path = f"/api/node/{child}/seg/label/{'_'.join(map(str, point))}"
    for _ in range(rounds):
        s = Server(empty, folder / "empty.log")
        samples["empty"].append(s.startup)
        s.stop()
        s = Server(data_dir, folder / "restart.log")
        try:
            samples["loaded"].append(s.startup)
            secs, data = first_request(s.url, "GET", map_path, json.dumps([sv]).encode())
            assert json.loads(data) == [body], data
            samples["map"].append(secs)
            secs, data = first_request(s.url, "GET", label_path)
            assert json.loads(data) == {"Label": body}, data
            samples["label"].append(secs)
            warm["map"].append(first_request(s.url, "GET", map_path, json.dumps([sv]).encode())[0])
            warm["label"].append(first_request(s.url, "GET", label_path)[0])
        finally:
            s.stop()
    med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    print(
        f"   new process on the folder ({loaded:,} mapped supervoxels at a committed child; "
        f"median of {rounds} starts, OS file cache warm):"
    )
    print(
        f"   (a) start -> first 200 /api/heartbeat   {med['loaded']:7.0f} ms  "
        f"(empty folder {med['empty']:.0f} ms; ratio {med['loaded'] / med['empty']:.2f})"
    )
    print(
        f"   (b) then first GET /mapping [sv]          {med['map']:7.1f} ms  "
        f"(second one {statistics.median(warm['map']) * 1e3:.1f} ms)"
    )
    print(
        f"       then first GET /label/x_y_z           {med['label']:7.1f} ms  "
        f"(second one {statistics.median(warm['label']) * 1e3:.1f} ms)"
    )
    print(f"   process start -> first /mapping answered: {med['loaded'] + med['map']:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256³, 10^6 mappings (~1 min)")
    parser.add_argument("--ingest-only", action="store_true", help="figure 1 alone")
    args = parser.parse_args()
    edge = 256 if args.quick else 512
    reps = 5 if args.quick else 11
    seconds = 2 if args.quick else 8
    rounds = 2
    total, batches = (10**6, 2) if args.quick else (10**7, 5)
    started = time.perf_counter()
    t = time.perf_counter()
    seg = Segmentation(edge)
    print(f"synthetic segmentation {edge}³ generated in {time.perf_counter() - t:.1f} s")
    with tempfile.TemporaryDirectory(prefix="bench-labelmap-") as tmp:
        folder = Path(tmp)
        data_dir = folder / "data"
        srv = Server(data_dir, folder / "server.log")
        try:
            with httpx.Client(base_url=srv.url, timeout=600) as http:
                lean = Lean(srv.url)
                print(f"server: dvid-cloud serve (one uvicorn worker) on {srv.url}, local folder")
                root = ok(http.post("/api/repos", json={})).json()["root"]
                new_labelmap(http, root, "seg")
                ingest_figure(http, lean, seg, root, data_dir, folder)
                if args.ingest_only:
                    lean.close()
                    return
                lean.post(f"/api/node/{root}/commit", b"{}")
                googlegzip_figure(
                    http, srv.url, srv.pid, seg, root, data_dir, folder, seconds, rounds
                )
                sparsevol_figure(http, lean, seg, root, reps)
                labels_figure(http, lean, seg, root, data_dir, reps)
                child, loaded = cold_start_figure(lean, seg, root, total, batches)
                lean.close()
        except Exception:
            srv.dump_log()
            raise
        finally:
            srv.stop()
        restart_figure(data_dir, folder, seg, child, loaded, 3 if not args.quick else 2)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
