"""Serving figures of the performance issue, each beside a baseline measured in the same run.

The workload is built through the REST API of a real ``dvid-cloud serve`` process on a
local folder: a repo whose root holds a uint8blk ``grayscale`` 256³ (BlockSize 64, EM-like
voxels) and a labelmap ``seg`` 256³ (BlockSize 64, MaxDownresLevel 3; warped Voronoi-like
cells, several hundred supervoxels agglomerated into bodies by ``POST /mappings``),
committed; and an open child version in which 4 chunks of each were rewritten. Then it is
served by fresh ``dvid-cloud serve --workers 1`` and ``--workers 2`` processes (each with
``--log-level warning``; cache bounds from the environment or the defaults, passed
explicitly) and, as the floor, by a minimal ASGI app: a plain ASGI callable (no framework)
run by ``uvicorn --http httptools --loop uvloop --workers 1`` that holds every answer the
bench asks for (body and the headers dvid-cloud sent, but ``date`` and ``server``, which
uvicorn adds to both) in a dict keyed by path and query.

The load generator is one separate process (``multiprocessing``, spawn): asyncio on uvloop,
16 keep-alive HTTP/1.1 connections on raw sockets (an ``asyncio.Protocol`` that writes a
prepared request, parses the status line and ``Content-Length`` and counts body bytes),
each connection cycling over all the paths of a load from its own starting point; it
reports req/s, MB/s, p50 and p99 latency and its own CPU. It drives dvid-cloud and the
minimal app alike. Loads run in interleaved rounds (a, b, c, a, b, c...) so that the load
of a shared machine falls on all alike; every ratio is between two figures of one run.

1. ``GET raw/0_1_2/256_256_256/0_0_0`` of the uint8blk over HTTP (a keep-alive
   ``http.client`` connection, one request at a time) ÷ tensorstore reading the same 64
   chunks in-process from the root's zarr3 array: ratio of MB/s (goal ≥ 0.8). At the
   committed root (the answer is kept in memory, app/immutable.py) and at the open child
   (kept too, until the next write there), for ``--workers 1`` and ``--workers 2``; also,
   without a goal, the open child read afresh (each GET with a query never seen before,
   ``?read=n``, which the server ignores: nothing kept serves it).
2. 64³ chunk loads, 16 clients, over the 64 chunk paths
   ``/api/node/{uuid}/{name}/raw/0_1_2/64_64_64/{x}_{y}_{z}``: req/s of dvid-cloud ÷ req/s
   of the minimal app serving the same bodies under the same paths, for raw uint8 chunks
   (256 KiB) at the committed root (goal ≥ 0.5) and at the open child (≥ 0.25), and for
   labelmap ``?compression=googlegzip`` chunks at the committed root (≥ 0.4). googlegzip
   at the open child ÷ the rate of one core encoding in-process
   (``app.datatypes.labelmap.codecs.encode_googlegzip`` of a 64³ block of mapped labels,
   timed between the rounds; goal ≥ 1.5). With each: the server's CPU (all its processes)
   per request, and the load generator's cores.
3. The server's peak RSS under those chunk loads (VmHWM of each process, reset through
   ``/proc/<pid>/clear_refs`` just before them) beside its configured cache bounds
   (``DVID_CLOUD_CACHE_BYTES`` + ``DVID_CLOUD_CHUNK_CACHE_BYTES`` +
   ``DVID_CLOUD_RESPONSE_CACHE_BYTES`` + ``DVID_CLOUD_PROXY_CACHE_BYTES`` +
   ``DVID_CLOUD_BODY_BUFFER_BYTES``, held by each server process; goal ≤ bound + 300 MiB
   per process), and the minimal app's for scale.
4. Cost grows with the work, not the data: a 64³ ``GET raw`` at the open leaf of a chain
   of 100 versions of a 4096³ uint8blk holding ~10^5 written chunks (each version POSTs
   4 aligned slabs of 16x16x1 chunks, two at a time, to the ``--workers 2`` server; the
   root also writes the far corner chunk) ÷ the same read from a 256³ uint8blk with one
   (open) version (goal ≤ 1.1). Read by the ``--workers 1`` server, one request at a
   time, each GET afresh as in figure 1 (so it times resolving and reading the chunk, not
   a kept answer); the chunk read in both was written at the root with the same EM-like
   voxels (the rest of the data is constant per version, to keep the build fast and small).
   Also shown: a chunk written by the leaf itself, and one no version wrote.
5. Start-up: process spawn to the first 200 of ``GET raw`` 64³ at the committed root,
   polled every 5 ms with new connections, on the folder of figures 1-4 (goal < 1 s);
   baseline the minimal app's spawn to its first 200; with the CPU used by then.

    python -m bench.serving [--quick] [--only read,chunks,scale,startup]

``--quick`` (about 2 minutes on a quiet machine) uses shorter loads, fewer repetitions,
one start per server, and 12,800 chunks (2 slabs of 8x8x1 per version) in figure 4.
``--only`` runs some figures alone (``read``: 1; ``chunks``: 2 and 3; ``scale``: 4;
``startup``: 5); the workload is built all the same.
With figure 2, each ``--workers 1`` load also shows how the server's kept answers did
during it (hits and misses of its ``answers`` cache, from ``/metrics`` before and after):
a load whose answers are missed or thrown away shows misses there.
Progress goes to stderr, figures to stdout. MB are 10^6 bytes, MiB 2^20; times are
medians unless said otherwise.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import functools
import gzip
import http.client
import itertools
import os
import pickle
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import tensorstore as ts

from app.datatypes.labelmap.codecs import decode_google, encode_googlegzip
from app.proto import labelmap_pb2 as pb
from app.settings import Settings

CLI = shutil.which("dvid-cloud", path=str(Path(sys.executable).parent)) or "dvid-cloud"
HOST = "127.0.0.1"
MB = 1e6
MiB = 1 << 20
EDGE = 256
BLOCK = 64
CLIENTS = 16
CHANGED = 4  # chunks of each instance rewritten at the open child
CACHE_VARS = {
    "DVID_CLOUD_CACHE_BYTES": "cache_bytes",
    "DVID_CLOUD_CHUNK_CACHE_BYTES": "chunk_cache_bytes",
    "DVID_CLOUD_RESPONSE_CACHE_BYTES": "response_cache_bytes",
    "DVID_CLOUD_PROXY_CACHE_BYTES": "proxy_cache_bytes",
    "DVID_CLOUD_BODY_BUFFER_BYTES": "body_buffer_bytes",
}
RSS_SLACK = 300 * MiB


def note(message: str) -> None:
    """Progress, to stderr."""
    print(message, file=sys.stderr, flush=True)


# --- small helpers (as in bench/imageblk.py and bench/labelmap.py) ------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def ok(response: httpx.Response) -> httpx.Response:
    if response.status_code != 200:
        raise RuntimeError(
            f"{response.request.method} {response.url}: {response.status_code} "
            f"{response.text[:300]}"
        )
    return response


class Lean:
    """A keep-alive ``http.client`` connection for timed sequential requests (httpx spends
    milliseconds of its own on a 16 MB body)."""

    def __init__(self, url: str) -> None:
        self.conn = http.client.HTTPConnection(HOST, int(url.rsplit(":", 1)[1]), timeout=600)

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


def em_like(edge: int, seed: int = 0) -> np.ndarray:
    """A ZYX uint8 volume with smooth structure plus noise (lz4 treats it roughly like EM
    grayscale, unlike uniform noise)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:edge, :edge, :edge]
    smooth = 60 * np.sin(x / 7.0) * np.cos(y / 11.0) + 30 * np.sin(z / 5.0 + x / 13.0)
    noise = rng.normal(0, 12, (edge, edge, edge)).astype(np.float32)
    return np.clip(128 + smooth + noise, 0, 255).astype(np.uint8)


class Segmentation:
    """A ZYX uint64 volume of warped irregular cells (random cut planes per axis, displaced
    by smooth sinusoids), with random 40-bit supervoxel ids (5% of the cells background),
    agglomerated into bodies of 3x3x3 neighbouring cells. ``svs`` (sorted) are the ids
    present, ``bodies`` their bodies."""

    def __init__(self, edge: int, seed: int = 0, cell: int = 32) -> None:
        rng = np.random.default_rng(seed)
        pad = 16  # room for the warp on both sides
        span = edge + 2 * pad
        luts = []
        for _ in range(3):
            cuts = np.sort(rng.choice(np.arange(1, span), size=span // cell, replace=False))
            luts.append(np.searchsorted(cuts, np.arange(span), side="right").astype(np.int32))
        nx, ny, nz = (int(lut[-1]) + 1 for lut in luts)
        cells = nx * ny * nz
        k = np.arange(cells, dtype=np.uint64)
        ids = (k * np.uint64(0x9E3779B1) + np.uint64(12345)) % np.uint64(1 << 40) + np.uint64(1)
        ids[rng.random(cells) < 0.05] = 0
        phase = rng.uniform(0, 2 * np.pi, size=6)
        a = np.arange(edge, dtype=np.float32)

        def warp(p: float, q: float) -> np.ndarray:
            w = pad + 6 * np.sin(a[:, None] / 13 + p) + 5 * np.sin(a[None, :] / 17 + q)
            return np.rint(w).astype(np.int32)

        dx, dy, dz = warp(phase[0], phase[1]), warp(phase[2], phase[3]), warp(phase[4], phase[5])
        self.volume = np.empty((edge,) * 3, np.uint64)
        seen = np.zeros(cells, bool)
        ar = np.arange(edge, dtype=np.int32)
        for z in range(edge):
            cx = luts[0][ar[None, :] + dx[z][:, None]]
            cy = luts[1][ar[:, None] + dy[z][None, :]]
            cz = luts[2][z + dz]
            index = (cz * ny + cy) * nx + cx
            self.volume[z] = ids[index]
            seen[index] = True
        present = seen & (ids != 0)
        iz, iy, ix = np.unravel_index(np.arange(cells), (nz, ny, nx))
        group = ((iz // 3) * (ny // 3 + 1) + iy // 3) * (nx // 3 + 1) + ix // 3
        body_of_cell = (1 << 41) + 2 * group.astype(np.uint64) + 1
        order = np.argsort(ids[present])
        self.svs = ids[present][order]
        self.bodies = body_of_cell[present][order]

    def to_bodies(self, labels: np.ndarray) -> np.ndarray:
        """Mapped labels (0 stays 0; every label must be one of ``svs``)."""
        labels = np.asarray(labels, dtype=np.uint64)
        pos = np.clip(np.searchsorted(self.svs, labels), 0, self.svs.size - 1)
        return np.where(labels == 0, np.uint64(0), self.bodies[pos])

    def mapping_ops(self) -> bytes:
        """Serialized ``MappingOps``: one op per body, its supervoxels as ``original``."""
        order = np.argsort(self.bodies, kind="stable")
        bodies, svs = self.bodies[order], self.svs[order]
        starts = np.flatnonzero(np.r_[True, bodies[1:] != bodies[:-1]])
        ops = pb.MappingOps()
        for body, group in zip(bodies[starts].tolist(), np.split(svs, starts[1:]), strict=True):
            ops.mappings.add(mapped=body, original=group.tolist())
        return bytes(ops.SerializeToString())


# --- processes ---------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (through every thread's ``children`` list)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [
                    int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()
                ]
        except OSError:
            pass
    return found


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    return sum(cpu_of(p) for p in tree(pid))


def status_bytes(pid: int, field: str) -> int:
    """A ``kB`` line of ``/proc/<pid>/status`` (VmRSS, VmHWM), in bytes (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def role(pid: int, server_pid: int, workers: int) -> str:
    """What a process of a server's tree is: the server itself (one worker) or the
    supervisor (several), a worker, or multiprocessing's resource tracker."""
    if pid == server_pid:
        return "supervisor" if workers > 1 else "server"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "gone"
    return "resource tracker" if b"resource_tracker" in cmdline else "worker"


def reset_peak(pid: int) -> bool:
    """Reset VmHWM of ``pid`` and its descendants to their current RSS (Linux
    ``clear_refs`` 5); False where that is not allowed."""
    done = True
    for p in tree(pid):
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            done = False
    return done


def first_200(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float) -> float:
    """``time.perf_counter()`` at the first 200 answer to ``GET path``, polled every 5 ms
    with new connections."""
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return time.perf_counter()
        except OSError:
            pass
        finally:
            conn.close()
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no 200 for GET {path} within {timeout} s")
        time.sleep(0.005)


def cache_bounds() -> dict[str, int]:
    """The server's cache bounds: from the environment, else the settings' defaults."""
    fields = Settings.model_fields
    return {
        var: int(os.environ.get(var) or cast(int, fields[name].default))
        for var, name in CACHE_VARS.items()
    }


class Server:
    """``dvid-cloud serve --data-dir folder --workers N --log-level warning`` on a free
    port; ``startup`` is the time from spawn to the first 200 of ``GET ready_path``.
    With ``settle``, also waits until every worker process has finished starting."""

    def __init__(
        self,
        data_dir: Path,
        workers: int,
        log: Path,
        ready_path: str = "/api/heartbeat",
        settle: bool = True,
    ) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.workers = workers
        self.log = log
        env = {**os.environ, **{k: str(v) for k, v in cache_bounds().items()}}
        cmd = [CLI, "serve", "--data-dir", str(data_dir), "--port", str(self.port)]
        cmd += ["--workers", str(workers), "--log-level", "warning"]
        with open(log, "ab") as out:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.pid = self.proc.pid
        try:
            self.startup = first_200(self.port, ready_path, self.proc, 120) - t0
            self.startup_cpu = tree_cpu(self.pid)
            if settle and workers > 1:
                self._settle()
        except Exception:
            self.stop()
            self.dump_log()
            raise

    def _settle(self) -> None:
        """Wait until ``workers`` worker processes exist and each has gone quiet after
        its start (an idle worker uses no CPU): the listening socket is shared, so an
        answer says nothing about the worker that has not started yet. Workers are forked
        from a supervisor that has imported the server, so a ready one may have used only
        a few tens of ms of CPU: quiet, not CPU used, is the sign."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            kids = tree(self.pid)[1:]
            before = {p: cpu_of(p) for p in kids}
            time.sleep(0.5)
            after = {p: cpu_of(p) for p in kids}
            busy = [p for p in kids if after[p] - before[p] > 0.03]
            if len(kids) >= self.workers and len(kids) - len(busy) >= self.workers:
                return
        note(f"   (workers of {self.url} did not all settle within 120 s)")

    def dump_log(self) -> None:
        tail = self.log.read_text(errors="replace").splitlines()[-15:]
        print("server log, last lines:", *tail, sep="\n   ", file=sys.stderr)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


MINIMAL_APP = '''"""The floor: a plain ASGI callable answering kept bodies from a dict, by path."""
import os
import pickle

with open(os.environ["BENCH_SERVING_ANSWERS"], "rb") as f:
    ANSWERS = pickle.load(f)
MISSING = [(b"content-type", b"text/plain"), (b"content-length", b"9")]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    query = scope["query_string"]
    key = scope["path"] + "?" + query.decode("latin-1") if query else scope["path"]
    answer = ANSWERS.get(key)
    if answer is None:
        await send({"type": "http.response.start", "status": 404, "headers": MISSING})
        await send({"type": "http.response.body", "body": b"not found"})
        return
    headers, body = answer
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
'''

Answers = dict[str, tuple[list[tuple[bytes, bytes]], bytes]]


class MinimalApp:
    """The minimal ASGI app in a ``uvicorn --http httptools --loop uvloop --workers 1``
    subprocess, holding ``answers``; ``startup`` as for :class:`Server`."""

    def __init__(self, folder: Path, answers: Answers, log: Path) -> None:
        folder.mkdir(exist_ok=True)
        (folder / "minimal_app.py").write_text(MINIMAL_APP)
        kept = folder / "answers.pickle"
        kept.write_bytes(pickle.dumps(answers))
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        cmd = [sys.executable, "-m", "uvicorn", "minimal_app:app", "--app-dir", str(folder)]
        cmd += ["--host", HOST, "--port", str(self.port), "--http", "httptools"]
        cmd += ["--loop", "uvloop", "--workers", "1", "--lifespan", "off"]
        cmd += ["--no-access-log", "--log-level", "warning"]
        env = {**os.environ, "BENCH_SERVING_ANSWERS": str(kept)}
        with open(log, "ab") as out:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.pid = self.proc.pid
        try:
            self.startup = first_200(self.port, next(iter(answers)), self.proc, 60) - t0
            self.startup_cpu = tree_cpu(self.pid)
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- the load generator (runs in its own process) ----------------------------------------


class _Tally:
    """What the connections of one load have seen."""

    def __init__(self, done: asyncio.Future[None], clients: int) -> None:
        self.done = done
        self.open = clients
        self.deadline = 0.0
        self.last = 0.0
        self.latencies = array.array("d")
        self.nbytes = 0
        self.clients: list[_Client] = []

    def finished(self, now: float) -> None:
        self.last = max(self.last, now)
        self.open -= 1
        if self.open == 0 and not self.done.done():
            self.done.set_result(None)

    def fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(why))
        for client in self.clients:
            client.close()


class _Client(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: sends the next GET when the previous answer's
    ``Content-Length`` bytes have arrived, until the deadline (and ``min_requests``)."""

    def __init__(self, requests: list[bytes], start: int, min_requests: int, tally: _Tally) -> None:
        self.requests = requests
        self.i = start % len(requests)
        self.min_requests = min_requests
        self.tally = tally
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.remaining = -1  # body bytes still to come; -1 while reading the head
        self.length = 0
        self.status = 0
        self.sent = 0.0
        self.count = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def send(self) -> None:
        assert self.transport is not None
        self.head.clear()
        self.remaining = -1
        self.sent = time.perf_counter()
        self.transport.write(self.requests[self.i])
        self.i = (self.i + 1) % len(self.requests)

    def data_received(self, data: bytes) -> None:
        if self.remaining < 0:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.head[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self.tally.fail(f"an answer without Content-Length: {head[:300]!r}")
                return
            stop = head.find(b"\r\n", at + 2)
            self.length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            self.remaining = self.length - (len(self.head) - end - 4)
        else:
            self.remaining -= len(data)
        if self.remaining == 0:
            self._answered()
        elif self.remaining < 0:
            self.tally.fail("more bytes than Content-Length (pipelining is not used)")

    def _answered(self) -> None:
        now = time.perf_counter()
        tally = self.tally
        if self.status != 200:
            request = self.requests[(self.i - 1) % len(self.requests)].split(b"\r\n")[0]
            tally.fail(f"{request.decode()}: status {self.status}")
            return
        tally.latencies.append(now - self.sent)
        tally.nbytes += self.length
        self.count += 1
        if now < tally.deadline or self.count < self.min_requests:
            self.send()
        else:
            self.close()
            tally.finished(now)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.tally.fail(f"the server closed a connection ({exc!r})")


async def _load(
    port: int, paths: list[str], clients: int, seconds: float, min_per_conn: int
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    requests = [
        f"GET {p} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: bench-serving\r\n"
        f"Accept: */*\r\n\r\n".encode()
        for p in paths
    ]
    tally = _Tally(loop.create_future(), clients)
    for k in range(clients):
        start = k * len(requests) // clients
        make = functools.partial(_Client, requests, start, min_per_conn, tally)
        _, client = await loop.create_connection(make, HOST, port)
        tally.clients.append(client)
    cpu, t0 = time.process_time(), time.perf_counter()
    tally.deadline = t0 + seconds
    for client in tally.clients:
        client.send()
    await asyncio.wait_for(tally.done, seconds + 300)
    return {
        "requests": len(tally.latencies),
        "nbytes": tally.nbytes,
        "seconds": tally.last - t0,
        "latencies": tally.latencies.tobytes(),
        "client_cpu": time.process_time() - cpu,
    }


def _load_main(conn: Connection) -> None:
    """The load generator process: runs the loads it is sent, one at a time."""
    import uvloop

    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                result = runner.run(_load(**job))
        except Exception as e:  # reported to the parent, which raises
            result = {"error": f"{type(e).__name__}: {e}"}
        conn.send(result)


@dataclass
class LoadResult:
    requests: int
    nbytes: int
    seconds: float
    latencies: np.ndarray  # seconds
    client_cpu: float
    server_cpu: float

    @staticmethod
    def merge(results: list[LoadResult]) -> LoadResult:
        return LoadResult(
            sum(r.requests for r in results),
            sum(r.nbytes for r in results),
            sum(r.seconds for r in results),
            np.concatenate([r.latencies for r in results]),
            sum(r.client_cpu for r in results),
            sum(r.server_cpu for r in results),
        )

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1e3


class LoadGen:
    """The load generator's process and the pipe to it."""

    def __init__(self) -> None:
        ctx = get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_load_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def run(
        self, port: int, pid: int, paths: list[str], seconds: float, min_per_conn: int = 0
    ) -> LoadResult:
        """``CLIENTS`` connections to ``port`` for ``seconds``; the CPU of process ``pid``
        and its descendants is measured around it."""
        cpu = tree_cpu(pid)
        job = {"port": port, "paths": paths, "clients": CLIENTS, "seconds": seconds}
        self.conn.send({**job, "min_per_conn": min_per_conn})
        r = self.conn.recv()
        server_cpu = tree_cpu(pid) - cpu
        if "error" in r:
            raise RuntimeError(f"load on port {port}: {r['error']}")
        latencies = np.frombuffer(r["latencies"], dtype=np.float64)
        return LoadResult(
            r["requests"], r["nbytes"], r["seconds"], latencies, r["client_cpu"], server_cpu
        )

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()


# --- helpers -----------------------------------------------------------------------------


def raw_path(node: str, name: str, size: int, at: tuple[int, int, int], query: str = "") -> str:
    path = f"/api/node/{node}/{name}/raw/0_1_2/{size}_{size}_{size}/{'_'.join(map(str, at))}"
    return f"{path}?{query}" if query else path


def block_origins(edge: int) -> list[tuple[int, int, int]]:
    r = range(0, edge, BLOCK)
    return [(x, y, z) for z in r for y in r for x in r]


def fetch(url: str, path: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """One GET on a new connection: the answer's headers (but ``date`` and ``server``)
    and body; 200 required."""
    conn = http.client.HTTPConnection(HOST, int(url.rsplit(":", 1)[1]), timeout=120)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
        headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in response.getheaders()
            if k.lower() not in ("date", "server")
        ]
        return headers, body
    finally:
        conn.close()


def kept_answers(url: str) -> tuple[int, int]:
    """Hits and misses of the server's ``answers`` cache (one process: ``--workers 1``)."""
    counts = {"hits": 0, "misses": 0}
    for line in fetch(url, "/metrics")[1].decode().splitlines():
        for what in counts:
            if line.startswith(f'dvid_cache_{what}_total{{cache="answers"}}'):
                counts[what] = int(float(line.rsplit(" ", 1)[1]))
    return counts["hits"], counts["misses"]


#: A figure for the summary: (value, comparison with the goal, goal).
Figure = tuple[float, str, float]


def meets(value: float, sign: str, target: float) -> bool:
    return {"≥": value >= target, "≤": value <= target, "<": value < target}[sign]


def goal(met: bool) -> str:
    return "met" if met else "NOT met"


@contextmanager
def stopping(*processes: Server | MinimalApp) -> Iterator[None]:
    try:
        yield
    finally:
        for p in processes:
            p.stop()


# --- the workload ----------------------------------------------------------------------------


@dataclass
class Workload:
    root: str
    child: str
    gray: np.ndarray  # ZYX uint8, at the root
    gray_child: np.ndarray  # at the child
    seg: Segmentation
    changed: list[int]  # block indices rewritten at the child


def build(url: str, seed: int = 0) -> Workload:
    """The repo of figures 1-4, through the REST API of the server at ``url``."""
    gray = em_like(EDGE, seed)
    t = time.perf_counter()
    seg = Segmentation(EDGE, seed)
    note(
        f"   segmentation: {seg.svs.size} supervoxels in {np.unique(seg.bodies).size} bodies "
        f"({time.perf_counter() - t:.1f} s)"
    )
    lean = Lean(url)
    with httpx.Client(base_url=url, timeout=600) as http:
        root = ok(http.post("/api/repos", json={})).json()["root"]
        body = {"typename": "uint8blk", "dataname": "grayscale", "BlockSize": "64,64,64"}
        ok(http.post(f"/api/repo/{root}/instance", json=body))
        body = {
            "typename": "labelmap",
            "dataname": "seg",
            "BlockSize": "64,64,64",
            "MaxDownresLevel": "3",
        }
        ok(http.post(f"/api/repo/{root}/instance", json=body))
        ok(http.post(f"/api/node/{root}/seg/mappings", content=seg.mapping_ops()))
        t = time.perf_counter()
        lean.post(raw_path(root, "grayscale", EDGE, (0, 0, 0)), gray.tobytes())
        lean.post(raw_path(root, "seg", EDGE, (0, 0, 0)), seg.volume.tobytes())
        note(f"   POST raw 256³ uint8 + uint64: {time.perf_counter() - t:.1f} s")
        lean.post(f"/api/node/{root}/commit", b"{}")
        child = ok(http.post(f"/api/node/{root}/newversion", json={})).json()["child"]
    origins = block_origins(EDGE)
    changed = [int(k) for k in np.random.default_rng(seed).choice(len(origins), CHANGED, False)]
    gray_child = gray.copy()
    for i, k in enumerate(changed):
        x, y, z = origins[k]
        part = (gray[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK] + 17).astype(np.uint8)
        gray_child[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK] = part
        lean.post(raw_path(child, "grayscale", BLOCK, (x, y, z)), part.tobytes())
        labels = seg.volume[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK].copy()
        labels[16:48, 16:48, 16:48] = (1 << 42) + i  # a new supervoxel (its own body)
        lean.post(raw_path(child, "seg", BLOCK, (x, y, z)), labels.tobytes())
    lean.close()
    return Workload(root, child, gray, gray_child, seg, changed)


def load_paths(w: Workload) -> dict[str, list[str]]:
    """The chunk loads of figure 2: label -> the 64 paths it cycles over."""
    origins = block_origins(EDGE)
    gg = "compression=googlegzip"
    return {
        "raw, committed": [raw_path(w.root, "grayscale", BLOCK, o) for o in origins],
        "raw, open": [raw_path(w.child, "grayscale", BLOCK, o) for o in origins],
        "googlegzip, committed": [raw_path(w.root, "seg", BLOCK, o, gg) for o in origins],
        "googlegzip, open": [raw_path(w.child, "seg", BLOCK, o, gg) for o in origins],
    }


def check_answers(w: Workload, answers: Answers, paths: dict[str, list[str]]) -> None:
    """The bodies kept for the minimal app are the right voxels."""
    origins = block_origins(EDGE)
    for k in (0, w.changed[0]):
        x, y, z = origins[k]
        for label, volume in (("raw, committed", w.gray), ("raw, open", w.gray_child)):
            if (
                answers[paths[label][k]][1]
                != volume[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK].tobytes()
            ):
                raise RuntimeError(f"{label}: wrong voxels at {x}_{y}_{z}")
    x, y, z = origins[0]
    block = w.seg.volume[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK]
    headers, body = answers[paths["googlegzip, committed"][0]]
    if (b"content-encoding", b"gzip") not in headers:
        raise RuntimeError("googlegzip answered without Content-Encoding: gzip")
    got = decode_google(gzip.decompress(body), block.shape)
    if not np.array_equal(got, w.seg.to_bodies(block)):
        raise RuntimeError("googlegzip: wrong labels")


# --- figure 1 ---------------------------------------------------------------------------------


#: Figure 1's reads: a repeated GET at each version, and one the server has never seen.
READ_KINDS = {
    "committed": "committed root (answer kept)",
    "open": "open child (kept till a write)",
    "afresh": "open child, read afresh",
}
_fresh = itertools.count()


def afresh(lean: Lean, path: str) -> bytes:
    """GET ``path`` with a query no request had before (``read=n``, which the server
    ignores): no answer kept in memory (app/immutable.py) can serve it, so the chunks are
    read and assembled."""
    return lean.get(f"{path}?read={next(_fresh)}")


def read_figure(servers: list[Server], w: Workload, data_dir: Path, reps: int) -> dict[str, Figure]:
    """Figure 1; returns label -> (ratio, goal) for the summary."""
    nbytes = w.gray.nbytes
    print(
        f"\n1. GET raw {EDGE}³ uint8 ({nbytes / MB:.1f} MB, {(EDGE // BLOCK) ** 3} chunks of "
        f"{BLOCK}³, blosc lz4) over HTTP, one request at a time (keep-alive http.client), "
        f"÷ tensorstore reading the same chunks in-process; {reps} interleaved rounds"
    )
    with httpx.Client(base_url=servers[0].url, timeout=120) as http:
        info = ok(http.get(f"/api/node/{w.root}/grayscale/info")).json()
    array_dir = data_dir / "data" / info["Base"]["DataUUID"] / "s0" / w.root
    offsets = [-(-(1 << 30) // b) * b for b in reversed(info["Extended"]["BlockSize"])]
    region = tuple(slice(o, o + EDGE) for o in offsets)  # z, y, x
    kvstore = {"driver": "file", "path": f"{array_dir}/"}
    store = ts.open({"driver": "zarr3", "kvstore": kvstore}, open=True).result()
    if not np.array_equal(store[region].read().result(), w.gray):
        raise RuntimeError("the root's zarr3 array does not hold the voxels")
    readers: dict[str, Callable[[], object]] = {
        "tensorstore": lambda: store[region].read().result(),
    }
    leans = []
    for s in servers:
        lean = Lean(s.url)
        leans.append(lean)
        for node, volume, when in ((w.root, w.gray, "committed"), (w.child, w.gray_child, "open")):
            path = raw_path(node, "grayscale", EDGE, (0, 0, 0))
            if lean.get(path) != volume.tobytes():
                raise RuntimeError(f"GET {path} at --workers {s.workers}: wrong voxels")
            readers[f"{when}|{s.workers}"] = functools.partial(lean.get, path)
        readers[f"afresh|{s.workers}"] = functools.partial(afresh, lean, path)
    times = medians(readers, reps)
    for lean in leans:
        lean.close()
    base = times.pop("tensorstore")
    print(
        f"   baseline: tensorstore in-process, root array       {base * 1e3:7.1f} ms "
        f"{nbytes / base / MB:6.0f} MB/s"
    )
    summary = {}
    for key, secs in times.items():
        when, workers = key.split("|")
        what = READ_KINDS[when]
        ratio = base / secs
        verdict = f"goal ≥ 0.8: {goal(ratio >= 0.8)}" if when != "afresh" else "no goal"
        print(
            f"   --workers {workers}, {what:<30} {secs * 1e3:7.1f} ms {nbytes / secs / MB:6.0f} "
            f"MB/s   ÷ tensorstore {ratio:5.2f}  ({verdict})"
        )
        if when != "afresh":
            summary[f"256³ GET raw ÷ tensorstore, {when}, --workers {workers}"] = (ratio, "≥", 0.8)
    return summary


# --- figures 2 and 3 ----------------------------------------------------------------------------


def chunk_figures(
    gen: LoadGen,
    minimal: MinimalApp,
    servers: list[Server],
    w: Workload,
    paths: dict[str, list[str]],
    seconds: float,
    rounds: int,
) -> dict[str, Figure]:
    """Figures 2 and 3; returns label -> (ratio, goal) for the summary."""
    targets: dict[str, tuple[int, int]] = {"minimal app": (minimal.port, minimal.pid)}
    for s in servers:
        targets[f"--workers {s.workers}"] = (s.port, s.pid)
    print(
        f"\n2. {BLOCK}³ chunks, {CLIENTS} keep-alive connections (asyncio + uvloop load "
        f"generator, its own process), each cycling over the {len(paths['raw, open'])} "
        f"chunk paths; {rounds} rounds of {seconds:g} s per load and server, interleaved"
    )
    note("figure 2: warming (every connection asks every path once, so each worker keeps them)")
    for p in paths.values():
        for port, pid in targets.values():
            gen.run(port, pid, p, 0.3, min_per_conn=len(p))
    mapped = [
        w.seg.to_bodies(w.seg.volume[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK])
        for x, y, z in block_origins(EDGE)
    ]
    encode_googlegzip(mapped[0], 6)  # warm
    encodes: list[float] = []
    peaks_reset = all([reset_peak(s.pid) for s in servers] + [reset_peak(minimal.pid)])
    runs: dict[str, dict[str, list[LoadResult]]] = {
        label: {t: [] for t in targets} for label in paths
    }
    single = next(s for s in servers if s.workers == 1)
    kept: dict[str, list[int]] = {label: [0, 0] for label in paths}
    for r in range(rounds):
        note(f"figure 2: round {r + 1}/{rounds}")
        for label, p in paths.items():
            for target, (port, pid) in targets.items():
                before = kept_answers(single.url) if port == single.port else None
                runs[label][target].append(gen.run(port, pid, p, seconds))
                if before is not None:
                    after = kept_answers(single.url)
                    hits, misses = kept[label]
                    kept[label] = [hits + after[0] - before[0], misses + after[1] - before[1]]
        stop, i = time.perf_counter() + min(1.0, seconds / 2), r * 17
        while time.perf_counter() < stop or len(encodes) < 5 * (r + 1):
            block = mapped[i % len(mapped)]
            i += 1
            t = time.perf_counter()
            encode_googlegzip(block, 6)
            encodes.append(time.perf_counter() - t)
    print(
        f"   {'load':<22} {'server':<12} {'req/s':>7} {'MB/s':>7} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'server cores':>12} {'CPU ms/req':>10} {'client cores':>12}"
    )
    merged = {
        label: {t: LoadResult.merge(rs) for t, rs in per.items()} for label, per in runs.items()
    }
    for label, per in merged.items():
        for target, m in per.items():
            print(
                f"   {label:<22} {target:<12} {m.rate:7.0f} {m.nbytes / m.seconds / MB:7.1f} "
                f"{m.percentile_ms(50):7.2f} {m.percentile_ms(99):7.2f} "
                f"{m.server_cpu / m.seconds:12.2f} {m.server_cpu / m.requests * 1e3:10.3f} "
                f"{m.client_cpu / m.seconds:12.2f}"
            )
    print(
        "   kept answers during the --workers 1 loads (its answers cache, from /metrics): "
        + "; ".join(f"{label} {h} hits, {m} misses" for label, (h, m) in kept.items())
    )
    encode_s = statistics.median(encodes)
    sizes = [len(fetch(minimal.url, p)[1]) for p in paths["googlegzip, open"][:8]]
    print(
        f"   baseline for googlegzip at the open version: one core running encode_googlegzip "
        f"(level 6) of 64³ mapped-label blocks, {1 / encode_s:.0f} /s ({encode_s * 1e3:.2f} ms "
        f"each, {len(encodes)} timed between the rounds; answers "
        f"~{statistics.mean(sizes) / 1024:.0f} KiB)"
    )
    summary = {}
    print("   figures:")
    goals = {"raw, committed": 0.5, "raw, open": 0.25, "googlegzip, committed": 0.4}
    for label, g in goals.items():
        base = merged[label]["minimal app"].rate
        for s in servers:
            ratio = merged[label][f"--workers {s.workers}"].rate / base
            print(
                f"   {label + ' ÷ minimal app':<36} --workers {s.workers}: "
                f"{merged[label][f'--workers {s.workers}'].rate:6.0f} ÷ {base:6.0f} req/s = "
                f"{ratio:5.2f}  (goal ≥ {g}: {goal(ratio >= g)})"
            )
            summary[f"{label} chunks ÷ minimal app, --workers {s.workers}"] = (ratio, "≥", g)
    for s in servers:
        rate = merged["googlegzip, open"][f"--workers {s.workers}"].rate
        ratio = rate * encode_s
        print(
            f"   {'googlegzip, open ÷ one core encoding':<36} --workers {s.workers}: "
            f"{rate:6.0f} ÷ {1 / encode_s:6.0f} /s    = {ratio:5.2f}  (goal ≥ 1.5: "
            f"{goal(ratio >= 1.5)})"
        )
        summary[f"googlegzip, open ÷ one core encoding, --workers {s.workers}"] = (ratio, "≥", 1.5)
    summary.update(memory_figure(servers, minimal, peaks_reset))
    return summary


def memory_figure(
    servers: list[Server], minimal: MinimalApp, peaks_reset: bool
) -> dict[str, Figure]:
    bounds = cache_bounds()
    bound = sum(bounds.values())
    limit = bound + RSS_SLACK
    since = "the chunk loads of figure 2" if peaks_reset else "start (clear_refs refused)"
    print(f"\n3. Peak RSS (VmHWM) of the server's processes since {since}")
    print(
        "   baseline: cache bounds per server process "
        + " + ".join(f"{k.removeprefix('DVID_CLOUD_')} {v / MiB:.0f}" for k, v in bounds.items())
        + f" = {bound / MiB:.0f} MiB; goal ≤ bound + 300 MiB = {limit / MiB:.0f} MiB per process"
    )
    summary = {}
    for s in servers:
        pids = tree(s.pid)
        peaks = {p: status_bytes(p, "VmHWM") for p in pids}
        roles = {p: role(p, s.pid, s.workers) for p in pids}
        parts = ", ".join(f"{roles[p]} {peaks[p] / MiB:.0f}" for p in pids)
        top = max(peaks[p] for p in pids if roles[p] in ("server", "worker"))
        print(
            f"   --workers {s.workers}: {parts} MiB (total {sum(peaks.values()) / MiB:.0f} MiB); "
            f"largest ÷ (bound + 300 MiB) = {top / limit:.2f}  (goal ≤ 1: {goal(top <= limit)})"
        )
        summary[f"peak RSS ÷ (cache bounds + 300 MiB), --workers {s.workers}"] = (
            top / limit,
            "≤",
            1.0,
        )
    print(
        f"   (the minimal app holding all the answers in memory: "
        f"{status_bytes(minimal.pid, 'VmHWM') / MiB:.0f} MiB)"
    )
    return summary


# --- figure 4 ---------------------------------------------------------------------------------


def slab_origin(k: int, side: int) -> tuple[int, int, int]:
    """Origin (x, y, z) of the ``k``-th slab of ``side``x``side``x1 chunks in a 4096³
    volume: rows of slabs fill one chunk layer (z) after another."""
    per_row = 64 // side
    layer, t = divmod(k, per_row * per_row)
    return (t % per_row) * side * BLOCK, (t // per_row) * side * BLOCK, layer * BLOCK


def scale_figure(
    build_server: Server, read_server: Server, versions: int, side: int, slabs: int, reps: int
) -> Figure:
    """Figure 4; returns the summary's figure."""
    big_edge = 4096
    chunks = versions * slabs * side * side
    if (versions * slabs - 1) // (64 // side) ** 2 >= 63:
        raise ValueError("too many slabs for a 4096³ volume")
    em = em_like(BLOCK, seed=5)
    slab_bytes = (side * BLOCK) ** 2 * BLOCK
    print(
        f"\n4. Cost grows with the work, not the data: GET raw 64³ at the open leaf of "
        f"{versions} versions of a {big_edge}³ uint8blk holding {chunks:,} written chunks "
        f"({slabs} slabs of {side}x{side}x1 chunks per version) ÷ the same GET from a "
        f"{EDGE}³ uint8blk with one (open) version"
    )
    note(f"figure 4: writing {chunks:,} chunks ({chunks * BLOCK**3 / 1e9:.1f} GB of voxels)")
    local = threading.local()
    leans: list[Lean] = []

    def post(path: str, body: bytes) -> None:
        if not hasattr(local, "lean"):
            local.lean = Lean(build_server.url)
            leans.append(local.lean)
        local.lean.post(path, body)

    try:
        with (
            httpx.Client(base_url=build_server.url, timeout=600) as http,
            ThreadPoolExecutor(2) as pool,
        ):
            spec = {"typename": "uint8blk", "BlockSize": "64,64,64"}
            big_root = ok(http.post("/api/repos", json={})).json()["root"]
            ok(http.post(f"/api/repo/{big_root}/instance", json={**spec, "dataname": "big"}))
            node = big_root
            t0 = time.perf_counter()
            for v in range(versions):
                if v:
                    ok(http.post(f"/api/node/{node}/commit", json={}))
                    node = ok(http.post(f"/api/node/{node}/newversion", json={})).json()["child"]
                body = bytes([v % 255 + 1]) * slab_bytes
                size = f"{side * BLOCK}_{side * BLOCK}_{BLOCK}"
                futures = [
                    pool.submit(
                        post,
                        f"/api/node/{node}/big/raw/0_1_2/{size}/"
                        + "_".join(map(str, slab_origin(v * slabs + j, side))),
                        body,
                    )
                    for j in range(slabs)
                ]
                for f in futures:
                    f.result()
                if v == 0:  # the far corner (the volume is 4096³) and the chunk read
                    corner = big_edge - BLOCK
                    post(raw_path(node, "big", BLOCK, (corner,) * 3), body[: BLOCK**3])
                    post(raw_path(node, "big", BLOCK, (0, 0, 0)), em.tobytes())
                if (v + 1) % max(1, versions // 10) == 0:
                    secs = time.perf_counter() - t0
                    note(
                        f"   {v + 1} versions in {secs:.0f} s "
                        f"({(v + 1) * slabs * slab_bytes / secs / MB:.0f} MB/s)"
                    )
            leaf = node
            leaf_chunk = slab_origin((versions - 1) * slabs, side)
            post(raw_path(leaf, "big", BLOCK, leaf_chunk), em.tobytes())
            built = time.perf_counter() - t0
            small_root = ok(http.post("/api/repos", json={})).json()["root"]
            ok(http.post(f"/api/repo/{small_root}/instance", json={**spec, "dataname": "small"}))
            post(raw_path(small_root, "small", EDGE, (0, 0, 0)), bytes([1]) * EDGE**3)
            post(raw_path(small_root, "small", BLOCK, (0, 0, 0)), em.tobytes())
    finally:
        for lean in leans:
            lean.close()
    print(
        f"   built through the API in {built:.0f} s "
        f"({versions * slabs * slab_bytes / built / MB:.0f} MB/s of POST raw, 2 at a time, "
        "to --workers 2; commit + newversion per version; read back by --workers 1)"
    )
    lean = Lean(read_server.url)
    try:
        unwritten = (0, 0, big_edge - BLOCK)
        paths = {
            "small": raw_path(small_root, "small", BLOCK, (0, 0, 0)),
            "root": raw_path(leaf, "big", BLOCK, (0, 0, 0)),
            "leaf": raw_path(leaf, "big", BLOCK, leaf_chunk),
            "none": raw_path(leaf, "big", BLOCK, unwritten),
        }
        for key in ("small", "root", "leaf"):
            if lean.get(paths[key]) != em.tobytes():
                raise RuntimeError(f"figure 4: wrong voxels at {paths[key]}")
        if lean.get(paths["none"]) != bytes(BLOCK**3):
            raise RuntimeError("figure 4: an unwritten chunk is not zeros")
        times = medians({k: functools.partial(afresh, lean, p) for k, p in paths.items()}, reps)
    finally:
        lean.close()
    base = times["small"]
    print(
        f"   {'baseline: ' + str(EDGE) + '³, chunk 0_0_0 of its one (open) version':<62} "
        f"{base * 1e3:6.2f} ms  (--workers 1, {reps} interleaved rounds)"
    )
    what = {
        "root": f"chunk 0_0_0, written at the root ({versions - 1} versions up)",
        "leaf": f"chunk {'_'.join(map(str, leaf_chunk))}, written at the leaf",
        "none": f"chunk {'_'.join(map(str, unwritten))}, written by no version",
    }
    for key, label in what.items():
        ratio = times[key] / base
        note_goal = f"  (goal ≤ 1.1: {goal(ratio <= 1.1)})" if key == "root" else ""
        print(
            f"   {str(big_edge) + '³, ' + label:<62} {times[key] * 1e3:6.2f} ms  ÷ baseline "
            f"{ratio:5.2f}{note_goal}"
        )
    return times["root"] / base, "≤", 1.1


# --- figure 5 --------------------------------------------------------------------------------


def startup_figure(
    data_dir: Path, folder: Path, w: Workload, answers: Answers, tries: int
) -> dict[str, Figure]:
    path = raw_path(w.root, "grayscale", BLOCK, (0, 0, 0))
    print(
        f"\n5. Start-up: process spawn -> first 200 of GET {path.split('/grayscale/')[1]} "
        f"(committed root), polled every 5 ms, on the folder of figures 1-4; median of "
        f"{tries} starts, interleaved; with the CPU the processes had used by then"
    )
    times: dict[str, list[tuple[float, float]]] = {
        "minimal app": [],
        "--workers 1": [],
        "--workers 2": [],
    }
    for i in range(tries):
        note(f"figure 5: start {i + 1}/{tries}")
        m = MinimalApp(folder / "minimal", answers, folder / "minimal.log")
        times["minimal app"].append((m.startup, m.startup_cpu))
        m.stop()
        for workers in (1, 2):
            s = Server(data_dir, workers, folder / "startup.log", ready_path=path, settle=False)
            times[f"--workers {workers}"].append((s.startup, s.startup_cpu))
            s.stop()
    floor = times.pop("minimal app")
    base = statistics.median(t for t, _ in floor)
    print(
        f"   baseline: the minimal app (uvicorn, answers from a pickle) {base * 1e3:6.0f} ms, "
        f"{statistics.median(c for _, c in floor):.2f} s CPU"
    )
    summary = {}
    for label, samples in times.items():
        secs = statistics.median(t for t, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        print(
            f"   {label}: {secs * 1e3:6.0f} ms (range {min(t for t, _ in samples) * 1e3:.0f}-"
            f"{max(t for t, _ in samples) * 1e3:.0f}), {cpu:.2f} s CPU; ÷ minimal app "
            f"{secs / base:.2f}  (goal < 1 s: {goal(secs < 1)})"
        )
        summary[f"start-up to first chunk (s), {label}"] = (secs, "<", 1.0)
    return summary


# --- main ------------------------------------------------------------------------------------


#: The figures ``--only`` can pick.
FIGURES = ("read", "chunks", "scale", "startup")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter loads, 10^4 chunks (~2 min)")
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=set(FIGURES),
        help=f"comma-separated figures to run, of {','.join(FIGURES)} (default: all)",
    )
    args = parser.parse_args()
    if args.only - set(FIGURES):
        parser.error(f"--only takes {','.join(FIGURES)}")
    reps = 5 if args.quick else 15
    seconds = 1.0 if args.quick else 3.0
    rounds = 2 if args.quick else 3
    tries = 1 if args.quick else 3
    # figure 4: 100 versions x slabs x side² chunks (12,800 or 102,400)
    side, slabs = (8, 2) if args.quick else (16, 4)
    read_reps = 51 if args.quick else 201
    started = time.perf_counter()
    gen = LoadGen()  # spawned first: its own process, sharing nothing with this one
    summary: dict[str, Figure] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
            folder = Path(tmp)
            data_dir = folder / "data"
            note("setup: building the repo through the API (--workers 1)")
            setup = Server(data_dir, 1, folder / "setup.log")
            with stopping(setup):
                w = build(setup.url)
            servers = [Server(data_dir, n, folder / f"server-{n}.log") for n in (1, 2)]
            with stopping(*servers):
                paths = load_paths(w)
                answers: Answers = {}
                for p in paths.values():
                    for path in p:
                        answers[path] = fetch(servers[0].url, path)
                check_answers(w, answers, paths)
                minimal = MinimalApp(folder / "minimal", answers, folder / "minimal.log")
                with stopping(minimal):
                    bounds = cache_bounds()
                    print(
                        f"dvid-cloud serve --workers 1 and --workers 2 (--log-level warning, "
                        f"caches {sum(bounds.values()) / MiB:.0f} MiB per process), local "
                        f"folder store; minimal app: uvicorn --http httptools --loop uvloop "
                        f"--workers 1; {os.cpu_count()} cores, load average "
                        f"{os.getloadavg()[0]:.1f} at the start"
                    )
                    if "read" in args.only:
                        note("figure 1")
                        summary.update(read_figure(servers, w, data_dir, reps))
                    if "chunks" in args.only:
                        summary.update(
                            chunk_figures(gen, minimal, servers, w, paths, seconds, rounds)
                        )
                if "scale" in args.only:
                    summary["64³ read, 4096³ x 100 versions ÷ 256³ x 1 version"] = scale_figure(
                        servers[1], servers[0], 100, side, slabs, read_reps
                    )
            if "startup" in args.only:
                summary.update(startup_figure(data_dir, folder, w, answers, tries))
    finally:
        gen.close()
    print("\nSummary (figure: measured, goal)")
    for label, (value, sign, target) in summary.items():
        print(
            f"   {label:<62} {value:6.2f}  (goal {sign} {target:g}: "
            f"{goal(meets(value, sign, target))})"
        )
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
