"""imageblk over loopback HTTP: a real ``dvid-cloud serve`` process on a local folder.

Every ratio is between two figures measured in the same run, timed in interleaved rounds
(a, b, c, a, b, c...) so that the load of a shared machine falls on both alike:

1. GET raw 256³ uint8 (MB/s) against tensorstore reading the same 64 chunks in-process
   from the zarr3 array the server wrote, zarr-python reading that array, and icechunk +
   zarr-python reading the same voxels (if ``icechunk`` and ``zarr`` import).
2. neuroglancer's access pattern: many concurrent GETs of single 64³ blocks, 16 clients,
   (a) ``subvolblocks?compression=jpeg`` on a Compression=jpeg instance, (b) ``raw`` 64³,
   (c) ``/api/heartbeat`` as the HTTP floor; with the server's CPU per request, and the
   in-process cost of one chunk read and one JPEG encode for reference.
3. The same 256³ read at DAG depth 0, 1 and 100 (each version rewrites 2 chunks).
4. POST raw 256³ (block aligned and at 5_5_5) against an in-process tensorstore write.

    python -m bench.imageblk [--quick]

Timed sequential requests go through a keep-alive ``http.client`` connection (figure 1
also shows httpx). The load generator is ``wrk`` when installed (``apt-get install -y
wrk``), else threads of httpx clients. The server runs with its defaults (one uvicorn
worker, info-level JSON access log, here to a file). MB are 10^6 bytes; times are medians.
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tensorstore as ts

from tests.servers import wait_for_heartbeat

CLI = shutil.which("dvid-cloud", path=str(Path(sys.executable).parent)) or "dvid-cloud"
MB = 1e6
EDGE = 256
BLOCK = 64
CLIENTS = 16
ROUNDS = 2  # each load runs this many times, interleaved with the others


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(data_dir: Path, log: Path) -> Iterator[tuple[str, int]]:
    """``dvid-cloud serve --data-dir data_dir`` on a free loopback port until the block
    ends (its JSON log lines go to ``log``); yields the base URL and the process id."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [CLI, "serve", "--data-dir", str(data_dir), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_heartbeat(url, proc):
            raise RuntimeError("server did not start")
        yield url, proc.pid
    except Exception:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        print("server log, last lines:", *tail, sep="\n   ", file=sys.stderr)
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def em_like(edge: int, seed: int = 0) -> np.ndarray:
    """A ZYX uint8 volume with smooth structure plus noise (lz4 and JPEG treat it roughly
    like EM grayscale, unlike uniform noise)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:edge, :edge, :edge]
    smooth = 60 * np.sin(x / 7.0) * np.cos(y / 11.0) + 30 * np.sin(z / 5.0 + x / 13.0)
    noise = rng.normal(0, 12, (edge, edge, edge)).astype(np.float32)
    return np.clip(128 + smooth + noise, 0, 255).astype(np.uint8)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Lean:
    """A keep-alive ``http.client`` connection for the timed sequential requests: httpx
    spends many milliseconds of its own on a 16 MB body, which would blur the server's."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        try:
            self.conn.request(method, path, body=body)
            response = self.conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed the idle keep-alive connection (uvicorn: after 5 s).
            self.conn.close()
            self.conn.request(method, path, body=body)
            response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return data

    def get(self, path: str) -> bytes:
        return self.request("GET", path)

    def post(self, path: str, body: bytes) -> bytes:
        return self.request("POST", path, body)

    def close(self) -> None:
        self.conn.close()


def median_s(fn: Callable[[], object], reps: int, warm: int = 1) -> float:
    for _ in range(warm):
        fn()
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def medians(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each callable, timed in interleaved rounds (a, b, c, a, b, c...)
    so that the load of a shared machine falls on all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t)
    return {name: statistics.median(times) for name, times in samples.items()}


def ok(response: httpx.Response) -> httpx.Response:
    if response.status_code != 200:
        raise RuntimeError(
            f"{response.request.method} {response.url}: {response.status_code} "
            f"{response.text[:300]}"
        )
    return response


def raw_path(node: str, name: str, size: tuple[int, int, int], at: tuple[int, int, int]) -> str:
    shape = "_".join(map(str, size))
    return f"/api/node/{node}/{name}/raw/0_1_2/{shape}/{'_'.join(map(str, at))}"


def block_origins(blocks_per_axis: int) -> list[tuple[int, int, int]]:
    n = blocks_per_axis
    return [(x * BLOCK, y * BLOCK, z * BLOCK) for z in range(n) for y in range(n) for x in range(n)]


# --- load generation ---------------------------------------------------------------------

_LUA = """paths = {%s}
i = math.random(#paths)
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
"""


def wrk_load(url: str, paths: list[str], seconds: float, folder: Path) -> dict[str, float]:
    script = folder / "paths.lua"
    script.write_text(_LUA % ", ".join(f'"{p}"' for p in paths))
    cmd = ["wrk", "-t1", f"-c{CLIENTS}", f"-d{max(1, round(seconds))}s", "--latency"]
    cmd += ["-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise RuntimeError(f"wrk saw failures:\n{out}")

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        if m is None:
            return math.nan
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s), ([\d.]+)(B|KB|MB|GB) read", out)
    assert total is not None, out
    secs = float(total.group(2)) / (1e3 if total.group(3) == "ms" else 1)
    scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[total.group(5)]
    return {
        "requests": int(total.group(1)),
        "bytes": float(total.group(4)) * scale,
        "seconds": secs,
        "p50": ms("50%"),
        "p99": ms("99%"),
    }


def thread_load(url: str, paths: list[str], seconds: float, _folder: Path) -> dict[str, float]:
    """Fallback without wrk: CLIENTS threads, each a keep-alive httpx client."""
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    nbytes = [0]
    lock = threading.Lock()
    failures: list[str] = []

    def worker(k: int) -> None:
        mine, got = [], 0
        with httpx.Client(base_url=url, timeout=30) as client:
            i = k
            while time.monotonic() < stop:
                t = time.perf_counter()
                r = client.get(paths[i % len(paths)])
                mine.append(time.perf_counter() - t)
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.url}")
                    return
                got += len(r.content)
                i += CLIENTS
        with lock:
            latencies.extend(mine)
            nbytes[0] += got

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"load saw failures: {failures[:3]}")
    latencies.sort()
    return {
        "requests": len(latencies),
        "bytes": nbytes[0],
        "seconds": elapsed,
        "p50": latencies[len(latencies) // 2] * 1e3,
        "p99": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


# --- figures -----------------------------------------------------------------------------


def blosc_array(store: Any, shape: tuple[int, ...]) -> Any:
    """A uint8 zarr v3 array ``s0`` in ``store``, chunked and compressed as the server's
    arrays are (64³ chunks, blosc lz4 with byte shuffle): the Icechunk baselines' array."""
    import zarr
    from zarr.codecs import BloscCodec

    return zarr.create_array(
        store,
        name="s0",
        shape=shape,
        chunks=(BLOCK,) * 3,
        dtype="uint8",
        fill_value=0,
        compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    )


def icechunk_reader(data: np.ndarray, folder: Path) -> tuple[Callable[[], object], str] | str:
    """A callable reading ``data`` back through zarr-python from an icechunk repo on local
    disk (64³ chunks, blosc lz4 like the server's arrays), and a label; or why not."""
    try:
        import icechunk
        import zarr
    except ImportError as e:
        return f"skipped: {e} (pip install icechunk zarr)"
    try:
        icechunk.set_logs_filter("error")  # not its warning about local-disk commits
        repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(folder)))
        session = repo.writable_session("main")
        array = blosc_array(session.store, data.shape)
        array[...] = data
        session.commit("256³ volume")
        reader = zarr.open_array(repo.readonly_session(branch="main").store, path="s0", mode="r")
        assert np.array_equal(reader[...], data)
        return (lambda: reader[...]), f"icechunk {icechunk.__version__}"
    except Exception as e:  # any failure is reported, not fatal
        return f"skipped: icechunk did not work here: {type(e).__name__}: {e}"


def read_figure(
    http: httpx.Client,
    lean: Lean,
    data: np.ndarray,
    root: str,
    data_dir: Path,
    folder: Path,
    reps: int,
) -> ts.TensorStore:
    """Figure 1; returns the server's array, opened in-process (untranslated)."""
    nbytes = data.nbytes
    print(
        f"\n1. GET raw {EDGE}³ uint8 at a committed root ({nbytes / MB:.1f} MB, "
        f"{(EDGE // BLOCK) ** 3} chunks of {BLOCK}³, blosc lz4)"
    )
    get_path = raw_path(root, "grayscale", (EDGE,) * 3, (0, 0, 0))
    assert lean.get(get_path) == data.tobytes()
    readers: dict[str, Callable[[], object]] = {
        "GET over HTTP, http.client": lambda: lean.get(get_path),
        "GET over HTTP, httpx": lambda: ok(http.get(get_path)).content,
    }
    info = ok(http.get(f"/api/node/{root}/grayscale/info")).json()
    array_dir = data_dir / "data" / info["Base"]["DataUUID"] / "s0" / root
    offsets = [-(-(1 << 30) // b) * b for b in reversed(info["Extended"]["BlockSize"])]
    region = tuple(slice(o, o + EDGE) for o in offsets)  # z, y, x
    kvstore = {"driver": "file", "path": f"{array_dir}/"}
    store = ts.open({"driver": "zarr3", "kvstore": kvstore}, open=True).result()
    assert np.array_equal(store[region].read().result(), data)
    readers["tensorstore in-process, same array"] = lambda: store[region].read().result()
    try:
        import zarr

        zarr_array = zarr.open_array(str(array_dir), mode="r")
        assert np.array_equal(zarr_array[region], data)
        readers["zarr-python in-process, same array"] = lambda: zarr_array[region]
    except ImportError:
        print("   zarr-python: not installed (pip install zarr)")
    ice = icechunk_reader(data, folder / "icechunk")
    if isinstance(ice, tuple):
        readers[f"{ice[1]} + zarr-python, same voxels"] = ice[0]
    else:
        print(f"   icechunk: {ice}")
    times = medians(readers, reps)
    for label, secs in times.items():
        print(f"   {label:<42} {secs * 1e3:8.1f} ms {nbytes / secs / MB:8.0f} MB/s")
    http_s = times["GET over HTTP, http.client"]
    for label, secs in list(times.items())[1:]:
        short = "httpx client" if label.endswith("httpx") else label.split(" ")[0]
        print(f"   GET (http.client) / {short:<14} {http_s / secs:6.2f}x the time")
    return store[ts.d[:].translate_by[tuple(-o for o in offsets)]]


def blocks_figure(
    http: httpx.Client,
    url: str,
    pid: int,
    data: np.ndarray,
    root: str,
    store: ts.TensorStore,
    folder: Path,
    seconds: float,
) -> None:
    """Figure 2: many concurrent single-block GETs."""
    load = wrk_load if shutil.which("wrk") else thread_load
    origins = block_origins(EDGE // BLOCK)
    print(
        f"\n2. {CLIENTS} concurrent clients ({'wrk -t1' if load is wrk_load else 'httpx threads'}"
        f", {seconds} s each in {ROUNDS} rounds), single {BLOCK}³ blocks cycling over "
        f"{len(origins)} blocks"
    )
    jpeg_paths = [
        f"/api/node/{root}/jpeg/subvolblocks/64_64_64/{x}_{y}_{z}?compression=jpeg"
        for x, y, z in origins
    ]
    raw_paths = [raw_path(root, "grayscale", (BLOCK,) * 3, o) for o in origins]
    head = ok(http.get(jpeg_paths[0])).content
    assert len(head) > 16 and head[16:18] == b"\xff\xd8", "not a JPEG block record"
    x, y, z = origins[5]
    block = data[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK]
    assert ok(http.get(raw_paths[5])).content == block.tobytes()
    loads = {
        "(a) subvolblocks 64³ ?compression=jpeg": jpeg_paths,
        "(b) raw/0_1_2/64_64_64": raw_paths,
        "(c) /api/heartbeat (HTTP floor)": ["/api/heartbeat"],
    }
    for paths in loads.values():
        load(url, paths[:4], 1, folder)  # warm
    runs: dict[str, list[tuple[dict[str, float], float]]] = {label: [] for label in loads}
    for _ in range(ROUNDS):  # a, b, c, a, b, c: shared-machine noise falls on all alike
        for label, paths in loads.items():
            cpu = cpu_seconds(pid)
            r = load(url, paths, seconds / ROUNDS, folder)
            runs[label].append((r, cpu_seconds(pid) - cpu))
    rates = {}
    for label, results in runs.items():
        n = sum(r["requests"] for r, _ in results)
        secs = sum(r["seconds"] for r, _ in results)
        cores = sum(cpu for _, cpu in results) / secs
        rates[label[:3]] = n / secs
        p50 = statistics.median(r["p50"] for r, _ in results)
        p99 = max(r["p99"] for r, _ in results)
        print(
            f"   {label:<40} {n / secs:6.0f} req/s "
            f"{sum(r['bytes'] for r, _ in results) / secs / MB:6.1f} MB/s  p50 {p50:5.1f} ms"
            f"  p99 {p99:5.1f} ms  server {cores:.2f} cores, {cores / (n / secs) * 1e3:.2f} ms"
            " CPU/req"
        )
    print(
        f"   raw / heartbeat: {rates['(b)'] / rates['(c)']:.2f}; "
        f"jpeg / raw: {rates['(a)'] / rates['(b)']:.2f}"
    )
    chunk_s = median_s(
        lambda: store[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK].read().result(), 200, warm=5
    )
    from app.volumes.images import jpeg_volume

    jpeg_s = median_s(lambda: jpeg_volume(block), 200, warm=5)
    print(
        f"   in-process, one thread: tensorstore read of one {BLOCK}³ chunk "
        f"{chunk_s * 1e6:.0f} µs, JPEG encode of it {jpeg_s * 1e6:.0f} µs "
        f"({len(jpeg_volume(block)) / 1024:.0f} KiB)"
    )


def depth_figure(
    http: httpx.Client, lean: Lean, data: np.ndarray, root: str, depth: int, reps: int
) -> str:
    """Figure 3; returns the committed leaf."""
    print(
        f"\n3. GET raw {EDGE}³ along a chain of {depth} committed versions, each "
        "rewriting 2 chunks by POST raw 64³"
    )
    origins = block_origins(EDGE // BLOCK)
    rng = np.random.default_rng(1)
    expected = data.copy()
    nodes = [root]
    written: list[set[int]] = [set(range(len(origins)))]  # chunk indices, per version
    t = time.perf_counter()
    for i in range(depth):
        if i:
            lean.post(f"/api/node/{nodes[-1]}/commit", b"{}")
        child = ok(http.post(f"/api/node/{nodes[-1]}/newversion", json={})).json()["child"]
        nodes.append(child)
        written.append({int(k) for k in rng.choice(len(origins), 2, replace=False)})
        for k in sorted(written[-1]):
            x, y, z = origins[k]
            part = (expected[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK] + 1 + i).astype(np.uint8)
            expected[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK] = part
            lean.post(raw_path(child, "grayscale", (BLOCK,) * 3, (x, y, z)), part.tobytes())
    lean.post(f"/api/node/{nodes[-1]}/commit", b"{}")
    built = time.perf_counter() - t
    print(
        f"   built in {built:.1f} s ({built / depth * 1e3:.0f} ms per version: "
        "commit + newversion + 2 POSTs)"
    )
    assert lean.get(raw_path(nodes[-1], "grayscale", (EDGE,) * 3, (0, 0, 0))) == expected.tobytes()
    paths = {d: raw_path(nodes[d], "grayscale", (EDGE,) * 3, (0, 0, 0)) for d in (0, 1, depth)}
    at = medians({d: (lambda p=p: lean.get(p)) for d, p in paths.items()}, reps)
    for d in at:
        latest = {k: v for v in range(d + 1) for k in written[v]}
        print(
            f"   depth {d:3d} (chunks from {len(set(latest.values())):2d} versions) "
            f"{at[d] * 1e3:8.1f} ms {data.nbytes / at[d] / MB:8.0f} MB/s"
        )
    print(
        f"   ratio depth {depth} / depth 1: {at[depth] / at[1]:.2f}   "
        f"(depth 1 / depth 0: {at[1] / at[0]:.2f})"
    )
    return nodes[-1]


def post_figure(
    http: httpx.Client, lean: Lean, data: np.ndarray, leaf: str, folder: Path, reps: int
) -> None:
    """Figure 4: POST raw 256³, aligned and not, against an in-process tensorstore write."""
    nbytes = data.nbytes
    print(f"\n4. POST raw {EDGE}³ uint8 ({nbytes / MB:.1f} MB) at an open node")
    node = ok(http.post(f"/api/node/{leaf}/newversion", json={})).json()["child"]
    body = data.tobytes()
    aligned_path = raw_path(node, "writes", (EDGE,) * 3, (0, 0, 0))
    unaligned_path = raw_path(node, "writes", (EDGE,) * 3, (5, 5, 5))
    from app.volumes.arrays import VolumeSpec

    spec = VolumeSpec(np.dtype("uint8"), (BLOCK,) * 3, 0, "lz4")

    def ts_target(name: str, context: dict[str, Any]) -> Any:
        kvstore = {"driver": "file", "path": str(folder / name) + "/"}
        return ts.open(
            {"driver": "zarr3", "metadata": spec.zarr_metadata(), "kvstore": kvstore},
            create=True,
            open=True,
            context=ts.Context(context),
        ).result()

    target = ts_target("ts-write", {})
    # the server stages chunks with up to 64 files written at once (ArrayHandles)
    wide = ts_target("ts-write-64", {"file_io_concurrency": {"limit": 64}})
    region = tuple(slice(o, o + EDGE) for o in spec.offsets())
    post = medians(
        {
            "aligned 0_0_0": lambda: lean.post(aligned_path, body),
            "unaligned 5_5_5": lambda: lean.post(unaligned_path, body),
            "tensorstore write in-process": lambda: target[region].write(data).result(),
            "  same, 64 files at once": lambda: wide[region].write(data).result(),
        },
        reps,
    )
    assert lean.get(unaligned_path) == body
    for label, secs in post.items():
        print(f"   {label:<32} {secs * 1e3:8.1f} ms {nbytes / secs / MB:8.0f} MB/s")
    aligned, unaligned = post["aligned 0_0_0"], post["unaligned 5_5_5"]
    print(
        f"   issue 15's figure, POST {EDGE}³ aligned / tensorstore writing the same, as a "
        f"speed: {post['tensorstore write in-process'] / aligned:.2f} (against tensorstore "
        f"writing 64 files at once, as the server stages: "
        f"{post['  same, 64 files at once'] / aligned:.2f})"
    )
    print(
        f"   POST aligned / tensorstore: {aligned / post['tensorstore write in-process']:.2f}x "
        f"the time; unaligned / aligned: {unaligned / aligned:.2f}x (reads, merges and "
        "writes 5³ = 125 chunks instead of 64)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run (about 20 s)")
    parser.add_argument("--post-only", action="store_true", help="figure 4 alone")
    args = parser.parse_args()
    reps = 5 if args.quick else 31
    depth = 20 if args.quick else 100
    seconds = 2 if args.quick else 8
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-imageblk-") as tmp:
        folder = Path(tmp)
        data_dir = folder / "data"
        data = em_like(EDGE)
        with (
            server(data_dir, folder / "server.log") as (url, pid),
            httpx.Client(base_url=url, timeout=120) as http,
        ):
            lean = Lean(url)
            print(f"server: dvid-cloud serve (one uvicorn worker) on {url}, local folder store")
            root = ok(http.post("/api/repos", json={})).json()["root"]
            for name, extra in (
                ("grayscale", {}),
                ("jpeg", {"Compression": "jpeg"}),
                ("writes", {}),
            ):
                body = {"typename": "uint8blk", "dataname": name, "BlockSize": "64,64,64", **extra}
                ok(http.post(f"/api/repo/{root}/instance", json=body))
            for name in ("grayscale", "jpeg"):
                lean.post(raw_path(root, name, (EDGE,) * 3, (0, 0, 0)), data.tobytes())
            lean.post(f"/api/node/{root}/commit", b"{}")
            leaf = root
            if not args.post_only:
                store = read_figure(http, lean, data, root, data_dir, folder, reps)
                blocks_figure(http, url, pid, data, root, store, folder, seconds)
                leaf = depth_figure(http, lean, data, root, depth, reps)
            post_figure(http, lean, data, leaf, folder, reps)
            lean.close()
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
