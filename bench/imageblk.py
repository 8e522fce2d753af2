"""imageblk over loopback HTTP: a real ``dvid-cloud serve`` process on a local folder.

Every ratio is between two figures measured in the same run:

1. GET raw 256³ uint8 (MB/s) against tensorstore reading the same 64 chunks in-process
   from the zarr3 array the server wrote, zarr-python reading that array, and icechunk +
   zarr-python reading the same voxels (if ``icechunk`` and ``zarr`` import).
2. neuroglancer's access pattern: many concurrent GETs of single 64³ blocks, 16 clients,
   (a) ``subvolblocks?compression=jpeg`` on a Compression=jpeg instance, (b) ``raw`` 64³;
   with the in-process cost of one chunk read and one JPEG encode for reference.
3. The same 256³ read at DAG depth 1 and depth 100 (each version rewrites a few chunks).
4. POST raw 256³ (block aligned and at 5_5_5) against an in-process tensorstore write.

    python -m bench.imageblk [--quick]

The load generator is ``wrk`` when installed (``apt-get install -y wrk``), else threads
of httpx clients. MB are 10^6 bytes; times are medians.
"""

from __future__ import annotations

import argparse
import math
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

import httpx
import numpy as np
import tensorstore as ts

CLI = shutil.which("dvid-cloud", path=str(Path(sys.executable).parent)) or "dvid-cloud"
MB = 1e6
EDGE = 256
BLOCK = 64
CLIENTS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(data_dir: Path, log: Path) -> Iterator[str]:
    """``dvid-cloud serve --data-dir data_dir`` on a free loopback port until the block
    ends (its JSON log lines go to ``log``); yields the base URL."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [CLI, "serve", "--data-dir", str(data_dir), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/api/heartbeat", timeout=1).text == "OK":
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
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


def median_s(fn: Callable[[], object], reps: int, warm: int = 1) -> float:
    for _ in range(warm):
        fn()
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


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
        "rps": int(total.group(1)) / secs,
        "mbps": float(total.group(4)) * scale / secs / MB,
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
        "rps": len(latencies) / elapsed,
        "mbps": nbytes[0] / elapsed / MB,
        "p50": latencies[len(latencies) // 2] * 1e3,
        "p99": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


# --- figures -----------------------------------------------------------------------------


def icechunk_read(data: np.ndarray, folder: Path, reps: int) -> tuple[float, str] | str:
    """Median seconds for zarr-python reading ``data`` back from an icechunk repo on local
    disk (64³ chunks, blosc lz4 like the server's arrays), or why it could not run."""
    try:
        import icechunk
        import zarr
        from zarr.codecs import BloscCodec
    except ImportError as e:
        return f"skipped: {e} (pip install icechunk zarr)"
    try:
        icechunk.set_logs_filter("error")  # not its warning about local-disk commits
        repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(folder)))
        session = repo.writable_session("main")
        group = zarr.group(store=session.store)
        array = group.create_array(
            "s0",
            shape=data.shape,
            chunks=(BLOCK,) * 3,
            dtype="uint8",
            fill_value=0,
            compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        )
        array[...] = data
        session.commit("256³ volume")
        reader = zarr.open_array(repo.readonly_session(branch="main").store, path="s0", mode="r")
        assert np.array_equal(reader[...], data)
        return median_s(lambda: reader[...], reps), f"icechunk {icechunk.__version__}"
    except Exception as e:  # any failure is reported, not fatal
        return f"skipped: icechunk did not work here: {type(e).__name__}: {e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run (about 40 s)")
    args = parser.parse_args()
    quick = args.quick
    reps = 5 if quick else 15
    depth = 20 if quick else 100
    load_seconds = 2 if quick else 6
    load = wrk_load if shutil.which("wrk") else thread_load
    nbytes = EDGE**3

    with tempfile.TemporaryDirectory(prefix="bench-imageblk-") as tmp:
        folder = Path(tmp)
        data_dir = folder / "data"
        data = em_like(EDGE)
        with (
            server(data_dir, folder / "server.log") as url,
            httpx.Client(base_url=url, timeout=120) as http,
        ):
            print(f"server: {CLI} serve on {url} (one uvicorn worker), local folder store")
            print(
                f"load generator: {'wrk -t1' if load is wrk_load else 'httpx threads'}, "
                f"{CLIENTS} connections, {load_seconds} s per run"
            )
            root = ok(http.post("/api/repos", json={})).json()["root"]
            for name, extra in (
                ("grayscale", {}),
                ("jpeg", {"Compression": "jpeg"}),
                ("writes", {}),
            ):
                body = {"typename": "uint8blk", "dataname": name, "BlockSize": "64,64,64", **extra}
                ok(http.post(f"/api/repo/{root}/instance", json=body))
            for name in ("grayscale", "jpeg"):
                ok(http.post(raw_path(root, name, (EDGE,) * 3, (0, 0, 0)), content=data.tobytes()))
            ok(http.post(f"/api/node/{root}/commit", json={"note": "256³ at 0_0_0"}))

            # 1. one 256³ read ------------------------------------------------------------
            print(
                f"\n1. GET raw {EDGE}³ uint8 at a committed root ({nbytes / MB:.1f} MB, "
                f"{(EDGE // BLOCK) ** 3} chunks of {BLOCK}³, blosc lz4)"
            )
            get_path = raw_path(root, "grayscale", (EDGE,) * 3, (0, 0, 0))
            assert ok(http.get(get_path)).content == data.tobytes()
            http_s = median_s(lambda: ok(http.get(get_path)).content, reps)
            info = ok(http.get(f"/api/node/{root}/grayscale/info")).json()
            array_dir = data_dir / "data" / info["Base"]["DataUUID"] / "s0" / root
            block_size = tuple(info["Extended"]["BlockSize"])
            offsets = [-(-(1 << 30) // b) * b for b in reversed(block_size)]  # z, y, x
            region = tuple(slice(o, o + EDGE) for o in offsets)
            store = ts.open(
                {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(array_dir) + "/"}},
                open=True,
            ).result()
            assert np.array_equal(store[region].read().result(), data)
            ts_s = median_s(lambda: store[region].read().result(), reps)
            rows = [
                ("GET over HTTP (server process)", http_s),
                ("tensorstore in-process, same array", ts_s),
            ]
            try:
                import zarr

                zarr_array = zarr.open_array(str(array_dir), mode="r")
                assert np.array_equal(zarr_array[region], data)
                rows.append(
                    (
                        "zarr-python in-process, same array",
                        median_s(lambda: zarr_array[region], reps),
                    )
                )
            except ImportError:
                pass
            ice = icechunk_read(data, folder / "icechunk", reps)
            if isinstance(ice, tuple):
                rows.append((f"{ice[1]} + zarr-python, same voxels", ice[0]))
            for label, secs in rows:
                print(f"   {label:<42} {secs * 1e3:8.1f} ms {nbytes / secs / MB:8.0f} MB/s")
            for label, secs in rows[1:]:
                print(f"   HTTP GET / {label.split(',')[0]:<31} {http_s / secs:8.2f}x the time")
            if isinstance(ice, str):
                print(f"   icechunk: {ice}")

            # 2. neuroglancer: many concurrent 64³ block GETs ------------------------------
            origins = block_origins(EDGE // BLOCK)
            print(
                f"\n2. {CLIENTS} concurrent clients, single {BLOCK}³ blocks cycling over "
                f"{len(origins)} blocks (neuroglancer's pattern)"
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
            for label, paths in (
                ("(a) subvolblocks 64³ ?compression=jpeg", jpeg_paths),
                ("(b) raw/0_1_2/64_64_64", raw_paths),
            ):
                load(url, paths[:4], 1, folder)  # warm
                r = load(url, paths, load_seconds, folder)
                print(
                    f"   {label:<40} {r['rps']:7.0f} req/s {r['mbps']:7.1f} MB/s  "
                    f"p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms"
                )
            one = tuple(slice(o, o + BLOCK) for o in offsets)
            chunk_s = median_s(lambda: store[one].read().result(), 200, warm=5)
            from app.datatypes.imageblk.images import jpeg_volume

            jpeg_s = median_s(lambda: jpeg_volume(block), 200, warm=5)
            print(
                f"   in-process, one thread: tensorstore read of one {BLOCK}³ chunk "
                f"{chunk_s * 1e6:.0f} µs, JPEG encode of it {jpeg_s * 1e6:.0f} µs "
                f"({len(jpeg_volume(block)) / 1024:.0f} KiB)"
            )

            # 3. depth ---------------------------------------------------------------------
            print(
                f"\n3. GET raw {EDGE}³ along a chain of {depth} committed versions, each "
                "rewriting 2 chunks by POST raw 64³"
            )
            rng = np.random.default_rng(1)
            expected = data.copy()
            nodes = [root]
            written: list[set[int]] = [set(range(len(origins)))]  # chunk indices, per version
            t = time.perf_counter()
            for i in range(depth):
                if i:
                    ok(http.post(f"/api/node/{nodes[-1]}/commit", json={}))
                child = ok(http.post(f"/api/node/{nodes[-1]}/newversion", json={})).json()
                nodes.append(child["child"])
                written.append({int(k) for k in rng.choice(len(origins), 2, replace=False)})
                for k in sorted(written[-1]):
                    x, y, z = origins[k]
                    part = expected[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK] + 1 + i
                    part = part.astype(np.uint8)
                    expected[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK] = part
                    path = raw_path(nodes[-1], "grayscale", (BLOCK,) * 3, (x, y, z))
                    ok(http.post(path, content=part.tobytes()))
            ok(http.post(f"/api/node/{nodes[-1]}/commit", json={}))
            print(
                f"   built in {time.perf_counter() - t:.1f} s "
                f"({(time.perf_counter() - t) / depth * 1e3:.0f} ms per version: "
                "commit + newversion + 2 POSTs)"
            )
            leaf_path = raw_path(nodes[-1], "grayscale", (EDGE,) * 3, (0, 0, 0))
            assert ok(http.get(leaf_path)).content == expected.tobytes()
            at = {}
            for d in (0, 1, depth):
                path = raw_path(nodes[d], "grayscale", (EDGE,) * 3, (0, 0, 0))
                at[d] = median_s(lambda path=path: ok(http.get(path)).content, reps)
                latest = {k: v for v in range(d + 1) for k in written[v]}
                owners = len(set(latest.values()))
                print(
                    f"   depth {d:3d} (chunks from {owners:2d} versions) {at[d] * 1e3:8.1f} ms "
                    f"{nbytes / at[d] / MB:8.0f} MB/s"
                )
            print(
                f"   ratio depth {depth} / depth 1: {at[depth] / at[1]:.2f}   "
                f"(depth 1 / depth 0: {at[1] / at[0]:.2f})"
            )

            # 4. POST ----------------------------------------------------------------------
            print(f"\n4. POST raw {EDGE}³ uint8 ({nbytes / MB:.1f} MB) at an open node")
            open_node = ok(http.post(f"/api/node/{nodes[-1]}/newversion", json={})).json()
            open_node = open_node["child"]
            body = data.tobytes()
            post = {}
            for label, at_ in (("aligned 0_0_0", (0, 0, 0)), ("unaligned 5_5_5", (5, 5, 5))):
                path = raw_path(open_node, "writes", (EDGE,) * 3, at_)
                post[label] = median_s(lambda path=path: ok(http.post(path, content=body)), reps)
            from app.blocks.volume import VolumeSpec

            spec = VolumeSpec(np.dtype("uint8"), (BLOCK,) * 3, 0, "lz4")
            target = ts.open(
                {
                    "driver": "zarr3",
                    "metadata": spec.zarr_metadata(),
                    "kvstore": {"driver": "file", "path": str(folder / "ts-write/")},
                },
                create=True,
                open=True,
            ).result()
            ts_w = median_s(lambda: target[region].write(data).result(), reps)
            for label, secs in (*post.items(), ("tensorstore write in-process", ts_w)):
                print(f"   {label:<32} {secs * 1e3:8.1f} ms {nbytes / secs / MB:8.0f} MB/s")
            print(
                f"   HTTP aligned / tensorstore: {post['aligned 0_0_0'] / ts_w:.2f}x the time;"
                f" unaligned / aligned: {post['unaligned 5_5_5'] / post['aligned 0_0_0']:.2f}x"
                " (reads and rewrites 5³ = 125 chunks instead of 64)"
            )


if __name__ == "__main__":
    main()
