"""What does dvid-cloud's keyvalue API cost over the raw object-store client?

For each backend (a local folder, S3 on a moto server, GCS on a fake-gcs-server, all
started here on 127.0.0.1) this starts a real ``dvid-cloud serve`` process with a TOML
config pointing at that backend and measures, in one run:

* ``POST /key`` and ``GET /key`` of ``--size``-byte values over loopback HTTP (one keep-alive
  ``httpx.Client``), sequentially and with ``--threads`` concurrent threads; the sequential
  GETs also through a keep-alive ``http.client`` connection (mode ``seq/l``): httpx spends
  about a millisecond of CPU of its own per request, which is the client's, not the server's;
* the same puts and gets done in-process with the raw client on the same backend: files
  (open/write, open/read), boto3 ``put_object``/``get_object``, google-cloud-storage
  ``upload_from_string``/``download_as_bytes``;
* ``GET`` of one key at an open node, at the same node once committed (locked, its value
  served from the server's cache) and at an open child inheriting it; and, as the floor
  of client + HTTP + framework cost, ``GET /api/heartbeat``; then the raw client's get
  once, the store's floor for an open node's read while the repo's lease runs
  (app/catalog.py), and two at once, its floor when the lease has run out (the repo
  check and the record are read overlapped).

Sequential dvid and direct operations are interleaved one for one, and concurrent runs
alternate in three rounds, so the noise of a shared machine falls on both alike; compare
the ratios, not the absolute figures. Note that
with S3 and GCS the fake server competes for the same cores as the dvid server.

    python -m bench.kv_throughput [--ops 300] [--size 16384] [--backends local,s3,gcs]
                                  [--s3-latency-ms 10]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.imageblk import Lean
from tests.fault_proxy import FaultProxy
from tests.fixtures_stores import (
    isolated_server_env,
    make_gcs_store,
    make_s3_store,
)
from tests.servers import fake_gcs_server, free_port, moto_s3_server, wait_for_heartbeat

BACKENDS = ("local", "s3", "gcs")
WARMUP = 20
#: Alternate runs of the concurrent measurements.
ROUNDS = 3
START_ATTEMPTS = 3
CLI = shutil.which("dvid-cloud", path=str(Path(sys.executable).parent)) or "dvid-cloud"


@dataclass
class Stats:
    """Latencies (ms) of ``len(samples)`` operations that took ``seconds`` of wall time."""

    samples: list[float]
    seconds: float

    @property
    def ops(self) -> float:
        return len(self.samples) / self.seconds

    def mb_per_s(self, size: int) -> float:
        return self.ops * size / 1e6

    def pct(self, q: int) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def timed(fn: Callable[[int], object], i: int) -> float:
    t = time.perf_counter()
    fn(i)
    return (time.perf_counter() - t) * 1000


def interleaved(
    first: Callable[[int], object], second: Callable[[int], object], n: int
) -> tuple[Stats, Stats]:
    """Run ``first(i)`` and ``second(i)`` alternately; throughput is 1 / mean latency."""
    a, b = [], []
    for i in range(n):
        a.append(timed(first, i))
        b.append(timed(second, i))
    return Stats(a, sum(a) / 1000), Stats(b, sum(b) / 1000)


def sequential(fn: Callable[[int], object], n: int) -> Stats:
    samples = [timed(fn, i) for i in range(n)]
    return Stats(samples, sum(samples) / 1000)


def concurrent(fn: Callable[[int], object], ids: range, threads: int) -> Stats:
    """Operations ``fn(i)`` for ``i`` in ``ids`` spread over ``threads`` threads;
    throughput is by wall time."""
    with ThreadPoolExecutor(threads) as pool:
        t = time.perf_counter()
        samples = list(pool.map(lambda i: timed(fn, i), ids))
        seconds = time.perf_counter() - t
    return Stats(samples, seconds)


def alternated(
    first: Callable[[int], object], second: Callable[[int], object], n: int, threads: int
) -> tuple[Stats, Stats]:
    """``n`` concurrent operations of each, in :data:`ROUNDS` alternate runs (first,
    second, first...), so that the noise of a shared machine falls on both alike (one
    run after the other gave 8-thread GET ratios of 0.61 and 0.89 in two runs)."""
    runs: tuple[list[Stats], list[Stats]] = ([], [])
    bounds = [n * r // ROUNDS for r in range(ROUNDS + 1)]
    for lo, hi in itertools.pairwise(bounds):
        for fn, out in ((first, runs[0]), (second, runs[1])):
            out.append(concurrent(fn, range(lo, hi), threads))
    a, b = (
        Stats([x for s in stats for x in s.samples], sum(s.seconds for s in stats))
        for stats in runs
    )
    return a, b


# --- backends: a [store.main] section for the server, raw put/get for the baseline --------


@dataclass
class Backend:
    name: str
    store_toml: str  # the body of the [store.main] table
    put: Callable[[str, bytes], None]
    get: Callable[[str], bytes]


@contextlib.contextmanager
def local_backend(work: Path) -> Iterator[Backend]:
    direct = work / "direct"
    direct.mkdir()

    def put(key: str, data: bytes) -> None:
        with open(direct / key, "wb") as f:
            f.write(data)

    def get(key: str) -> bytes:
        with open(direct / key, "rb") as f:
            return f.read()

    yield Backend("local", f'path = "{work / "dvid"}"\n', put, get)


@contextlib.contextmanager
def s3_backend(work: Path, latency_ms: float = 0.0) -> Iterator[Backend]:
    """S3 on a moto server; with ``latency_ms``, behind a proxy holding every request that
    long (both the server's and the direct client's): moto answers in a few ms of its own
    CPU, where S3's time is mostly a network round trip, during which other calls run."""
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(moto_s3_server())
        if latency_ms:
            proxy = FaultProxy(endpoint, latency=latency_ms / 1000, max_connections=256)
            endpoint = stack.enter_context(proxy).url
        store = make_s3_store(endpoint)  # creates a fresh bucket
        client, bucket = store.client, store.bucket

        def put(key: str, data: bytes) -> None:
            client.put_object(Bucket=bucket, Key=f"direct/{key}", Body=data)

        def get(key: str) -> bytes:
            with client.get_object(Bucket=bucket, Key=f"direct/{key}")["Body"] as body:
                return body.read()

        toml = f'path = "s3://{bucket}/dvid"\nendpoint = "{endpoint}"\nregion = "{store.region}"\n'
        name = f"s3+{latency_ms:g}ms" if latency_ms else "s3"
        try:
            yield Backend(name, toml, put, get)
        finally:
            store.close()


@contextlib.contextmanager
def gcs_backend(work: Path) -> Iterator[Backend]:
    with fake_gcs_server() as endpoint:
        store = make_gcs_store(endpoint)  # creates a fresh bucket
        bucket = store.client.bucket(store.bucket_name)

        def put(key: str, data: bytes) -> None:
            bucket.blob(f"direct/{key}").upload_from_string(data)

        def get(key: str) -> bytes:
            return bucket.blob(f"direct/{key}").download_as_bytes()

        toml = f'path = "gs://{store.bucket_name}/dvid"\nendpoint = "{endpoint}"\n'
        try:
            yield Backend("gcs", toml, put, get)
        finally:
            store.close()


MAKERS = {"local": local_backend, "s3": s3_backend, "gcs": gcs_backend}


# --- the dvid-cloud server process ---------------------------------------------------------


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def dvid_server(backend: Backend, work: Path, timeout: float = 60.0) -> Iterator[str]:
    """Run ``dvid-cloud serve --config`` on a free port until the block ends; yields its URL.

    The port is chosen before the child binds it, so a lost race is retried on a new port.
    """
    config = work / f"{backend.name}.toml"
    log_path = work / f"{backend.name}-server.log"
    with open(log_path, "wb") as log:
        for _ in range(START_ATTEMPTS):
            port = free_port()
            config.write_text(
                f'[server]\nhost = "127.0.0.1"\nport = {port}\n\n'
                f'[store.main]\n{backend.store_toml}\n[backend]\ndefault = "main"\n'
            )
            proc = subprocess.Popen(
                [CLI, "serve", "--config", str(config), "--log-level", "warning"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=isolated_server_env(work),
            )
            url = f"http://127.0.0.1:{port}"
            if wait_for_heartbeat(url, proc, timeout):
                break
            _stop(proc)
        else:
            tail = log_path.read_bytes()[-2000:].decode(errors="replace")
            raise RuntimeError(f"dvid-cloud serve did not start; its output ends with:\n{tail}")
        try:
            yield url
        finally:
            _stop(proc)


def check(response: httpx.Response) -> httpx.Response:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.method} {response.request.url}: "
                           f"{response.status_code} {response.text.strip()}")  # fmt: skip
    return response


# --- one backend ---------------------------------------------------------------------------


@dataclass
class Row:
    op: str
    mode: str
    dvid: Stats
    direct: Stats


def bench_backend(
    backend: Backend, url: str, ops: int, size: int, threads: int
) -> tuple[list[Row], list[tuple[str, Stats]]]:
    value = os.urandom(size)
    http = httpx.Client(base_url=url, timeout=60)
    try:
        root = check(http.post("/api/repos", json={"alias": "bench"})).json()["root"]
        instance = {"typename": "keyvalue", "dataname": "kv"}
        check(http.post(f"/api/repo/{root}/instance", json=instance))
        kv = f"/api/node/{root}/kv/key"

        def dvid_post(prefix: str) -> Callable[[int], object]:
            return lambda i: check(http.post(f"{kv}/{prefix}{i:06d}", content=value))

        def dvid_get(prefix: str) -> Callable[[int], object]:
            def get(i: int) -> None:
                if len(check(http.get(f"{kv}/{prefix}{i:06d}")).content) != size:
                    raise RuntimeError("short read")

            return get

        def direct_put(prefix: str) -> Callable[[int], object]:
            return lambda i: backend.put(f"{prefix}{i:06d}", value)

        def direct_get(prefix: str) -> Callable[[int], object]:
            def get(i: int) -> None:
                if len(backend.get(f"{prefix}{i:06d}")) != size:
                    raise RuntimeError("short read")

            return get

        # Warm both paths (connections, imports, the server's repo cache), uncounted.
        interleaved(dvid_post("w"), direct_put("w"), WARMUP)
        interleaved(dvid_get("w"), direct_get("w"), WARMUP)

        lean = Lean(url)

        def lean_get(i: int) -> None:
            if len(lean.get(f"{kv}/s{i:06d}")) != size:
                raise RuntimeError("short read")

        rows = [
            Row("POST", "seq", *interleaved(dvid_post("s"), direct_put("s"), ops)),
            Row("GET", "seq", *interleaved(dvid_get("s"), direct_get("s"), ops)),
            # The same reads by a client of ~0.4 ms CPU a request instead of httpx's ~1.4.
            Row("GET", "seq/l", *interleaved(lean_get, direct_get("s"), ops)),
        ]
        lean.close()
        if threads > 1:
            mode = f"{threads} thr"
            posts = alternated(dvid_post("c"), direct_put("c"), ops, threads)
            rows.append(Row("POST", mode, *posts))
            rows.append(Row("GET", mode, *alternated(dvid_get("c"), direct_get("c"), ops, threads)))

        # The same key read at an open node, at that node once committed, at an open child.
        check(http.post(f"{kv}/hot", content=value))
        reads = max(WARMUP, min(ops, 200))
        hot = lambda node: lambda _i: check(http.get(f"/api/node/{node}/kv/key/hot"))  # noqa: E731
        sequential(hot(root), WARMUP)
        versions = [("open node (own record)", sequential(hot(root), reads))]
        check(http.post(f"/api/node/{root}/commit", json={"note": "bench"}))
        child = check(http.post(f"/api/node/{root}/newversion", json={})).json()["child"]
        sequential(hot(root), WARMUP)
        versions.append(("committed node (cached)", sequential(hot(root), reads)))
        sequential(hot(child), WARMUP)
        versions.append(("open child (inherited)", sequential(hot(child), reads)))
        # The floor: same client, server and framework, no store and no instance lookup.
        beat = lambda _i: check(http.get("/api/heartbeat"))  # noqa: E731
        sequential(beat, WARMUP)
        versions.append(("GET /api/heartbeat", sequential(beat, reads)))
        versions.extend(_direct_floors(backend, reads))
        return rows, versions
    finally:
        http.close()


def _direct_floors(backend: Backend, reads: int) -> list[tuple[str, Stats]]:
    """The raw client's get, once and twice overlapped (two threads): a GET at an open
    node reads its record, and once per repo lease (app/catalog.py) also checks the
    repo, overlapped when it reads ahead (app/storage/readahead.py); the first line is
    its floor on this store, the second that of a read whose lease has run out. On
    a fake that spends CPU rather than waiting (moto: one interpreter, 2 cores shared
    with the server and this client), two overlapped gets cost about as much as two in
    turn, and overlapping saves little; on a store whose round trips wait, one."""
    with ThreadPoolExecutor(1) as other:

        def one(i: int) -> None:
            backend.get(f"s{i % reads:06d}")

        def two(i: int) -> None:
            second = other.submit(one, i + 1)
            one(i)
            second.result()

        sequential(two, WARMUP)
        once, twice = interleaved(one, two, reads)
    return [("direct: one get", once), ("direct: two overlapped", twice)]


# --- output --------------------------------------------------------------------------------


def print_tables(
    results: dict[str, tuple[list[Row], list[tuple[str, Stats]]]], size: int, ops: int
) -> None:
    print(f"\nkeyvalue POST/GET of {size}-byte values, {ops} ops each "
          "(dvid = real server over loopback HTTP; direct = raw client in-process)")  # fmt: skip
    head = (
        f"{'backend':7} {'op':4} {'mode':5} | {'dvid ops/s':>10} {'MB/s':>7} {'p50 ms':>7} "
        f"{'p95 ms':>7} | {'direct ops/s':>12} {'MB/s':>7} {'p50 ms':>7} {'p95 ms':>7} "
        f"| {'ratio':>5}"
    )
    print(head)
    print("-" * len(head))
    for name, (rows, _) in results.items():
        for row in rows:
            d, r = row.dvid, row.direct
            print(
                f"{name:7} {row.op:4} {row.mode:5} | {d.ops:10.0f} {d.mb_per_s(size):7.1f} "
                f"{d.pct(50):7.2f} {d.pct(95):7.2f} | {r.ops:12.0f} {r.mb_per_s(size):7.1f} "
                f"{r.pct(50):7.2f} {r.pct(95):7.2f} | {d.ops / r.ops:5.2f}"
            )
    print("\nGET of one key through dvid (sequential) by the state of the node read, and the floor")
    head = (
        f"{'backend':7} {'node':25} | {'ops/s':>7} {'p50 ms':>7} {'p95 ms':>7} "
        f"| {'p50 vs open':>11}"
    )
    print(head)
    print("-" * len(head))
    for name, (_, versions) in results.items():
        base = versions[0][1].pct(50)
        for label, stats in versions:
            print(
                f"{name:7} {label:25} | {stats.ops:7.0f} {stats.pct(50):7.2f} "
                f"{stats.pct(95):7.2f} | {stats.pct(50) / base:11.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=300, help="operations per measurement")
    parser.add_argument("--size", type=int, default=16 * 1024, help="value size in bytes")
    parser.add_argument("--threads", type=int, default=8, help="concurrent run (0/1: skip)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="local,s3,gcs")
    parser.add_argument(
        "--s3-latency-ms",
        type=float,
        default=0.0,
        help="also S3 with every request held this long (a round trip moto lacks)",
    )
    args = parser.parse_args()
    chosen = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(BACKENDS))
    if unknown or not chosen:
        parser.error(f"unknown backends {unknown}: choose from {','.join(BACKENDS)}")
    makers = {name: MAKERS[name] for name in chosen}
    if args.s3_latency_ms > 0:
        slow = f"s3+{args.s3_latency_ms:g}ms"
        makers[slow] = functools.partial(s3_backend, latency_ms=args.s3_latency_ms)
    # A plain `kill` should still stop the servers and remove the temp dirs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    results = {}
    started = time.perf_counter()
    print(f"load average at the start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, make in makers.items():
        t = time.perf_counter()
        with (
            tempfile.TemporaryDirectory(prefix=f"kv-bench-{name}-") as tmp,
            make(Path(tmp)) as backend,
            dvid_server(backend, Path(tmp)) as url,
        ):
            results[name] = bench_backend(backend, url, args.ops, args.size, args.threads)
        print(f"{name}: measured in {time.perf_counter() - t:.1f} s", flush=True)
    print_tables(results, args.size, args.ops)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\ntotal {time.perf_counter() - started:.1f} s; load average now {load}")


if __name__ == "__main__":
    main()
