"""Load: 64 concurrent clients mix reads and writes for a minute against ``serve --workers 2``.

The server runs on a local folder with two worker processes (each a replica of the other).
Sixty-four client threads, each with its own keep-alive connection, pick requests from a
weighted mix of endpoint classes for ``DVID_TEST_LOAD_SECONDS`` (60):

* voxel reads (``GET raw`` of a 64³ grayscale block, a labelmap ``GET label`` at a point),
* voxel writes (``POST raw`` of a 64³ grayscale block, each client its own block),
* keyvalue reads and writes (each client its own keys),
* annotation writes and reads (elements at client-owned points, ``GET tag``),
* neuronjson writes and reads (each client its own body ids).

Every answer must be 2xx: zero errors, not a tolerated error rate. The test prints, per
endpoint class, the request count and p50/p99 latency, and the server processes' peak RSS,
sampled every 0.2 s; each worker must stay within its configured cache bounds (chunk,
kept-answer and proxy caches, each set explicitly) plus 300 MiB.
Afterwards every client's last acknowledged keyvalue value is read back through the
server. Figures are printed, never asserted on.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from tests import live_http as live
from tests.dvid_process import DvidServer

CLIENTS = 64
SECONDS = float(os.environ.get("DVID_TEST_LOAD_SECONDS", "60"))
#: Each worker's caches: values of locked keys, decoded chunks of locked versions, kept
#: answers (app/immutable.py), proxied volumes, kept body buffers (app/buffers.py).
CACHES = {
    "DVID_CLOUD_CACHE_BYTES": 64 << 20,
    "DVID_CLOUD_CHUNK_CACHE_BYTES": 64 << 20,
    "DVID_CLOUD_RESPONSE_CACHE_BYTES": 64 << 20,
    "DVID_CLOUD_PROXY_CACHE_BYTES": 0,
    "DVID_CLOUD_BODY_BUFFER_BYTES": 64 << 20,
}
RSS_BOUND = sum(CACHES.values()) + (300 << 20)
BLOCK = 64
VOLUME = 256  # grayscale and labels are VOLUME³, written once before the load


@dataclass
class Tally:
    """Latencies and unexpected answers by endpoint class, shared by the client threads."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, seconds: float, problem: str | None) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            if problem is not None:
                self.errors.append(f"{kind}: {problem}")


@dataclass
class Target:
    url: str
    root: str


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DvidServer]:
    env = {
        **os.environ,
        "DVID_CLOUD_WORKERS": "2",
        **{name: str(value) for name, value in CACHES.items()},
    }
    with DvidServer(tmp_path / "server.log", env, data_dir=tmp_path / "data") as running:
        yield running


def prepare(url: str) -> Target:
    """A repo with grayscale and labels written, and empty keyvalue, annotation and
    neuronjson instances."""
    root = live.post(f"{url}/api/repos", json={"alias": "load"}).json()["root"]
    for typename, name in [
        ("uint8blk", "gray"),
        ("labelmap", "seg"),
        ("keyvalue", "kv"),
        ("annotation", "syn"),
        ("neuronjson", "bodies"),
    ]:
        created = live.post(
            f"{url}/api/repo/{root}/instance", json={"typename": typename, "dataname": name}
        )
        assert created.status_code == 200, created.text
    shape = (VOLUME, VOLUME, VOLUME)
    gray = np.random.default_rng(1).integers(0, 255, shape, dtype=np.uint8)
    path = f"raw/0_1_2/{VOLUME}_{VOLUME}_{VOLUME}/0_0_0"
    assert live.post(f"{url}/api/node/{root}/gray/{path}", content=gray.tobytes()).is_success
    labels = (np.indices(shape).sum(axis=0) // 50 + 1).astype("<u8")
    assert live.post(f"{url}/api/node/{root}/seg/{path}", content=labels.tobytes()).is_success
    return Target(url, root)


def request_mix(target: Target, client_id: int) -> list[tuple[str, int, Callable]]:
    """(endpoint class, weight, call) for one client; writes touch only its own keys,
    blocks and points, so that every acknowledged write has one expected value."""
    node = f"/api/node/{target.root}"
    own_block = (client_id % 4) * BLOCK, (client_id // 4 % 4) * BLOCK, (client_id // 16) * BLOCK
    block_path = f"raw/0_1_2/{BLOCK}_{BLOCK}_{BLOCK}/{'_'.join(map(str, own_block))}"
    rng = random.Random(client_id)

    def grid_point() -> str:
        return "_".join(str(rng.randrange(VOLUME)) for _ in range(3))

    def read_block(c: httpx.Client) -> httpx.Response:
        x, y, z = (rng.randrange(VOLUME // BLOCK) * BLOCK for _ in range(3))
        return c.get(f"{node}/gray/raw/0_1_2/{BLOCK}_{BLOCK}_{BLOCK}/{x}_{y}_{z}")

    def write_block(c: httpx.Client) -> httpx.Response:
        voxels = np.full((BLOCK,) * 3, rng.randrange(256), dtype=np.uint8)
        return c.post(f"{node}/gray/{block_path}", content=voxels.tobytes())

    def write_element(c: httpx.Client) -> httpx.Response:
        x, y = client_id * 3, rng.randrange(VOLUME)
        element = {
            "Pos": [x, y, rng.randrange(VOLUME)],
            "Kind": "PreSyn",
            "Tags": [f"c{client_id}"],
        }
        return c.post(f"{node}/syn/elements", json=[element])

    def write_body(c: httpx.Client) -> httpx.Response:
        body = 1000 * (client_id + 1) + rng.randrange(10)
        doc = {"bodyid": body, "status": rng.choice(["Traced", "Orphan"]), "client": client_id}
        return c.post(f"{node}/bodies/key/{body}", params={"u": f"client{client_id}"}, json=doc)

    return [
        ("voxel read", 6, read_block),
        ("label read", 4, lambda c: c.get(f"{node}/seg/label/{grid_point()}")),
        ("voxel write", 1, write_block),
        ("keyvalue read", 4, lambda c: c.get(f"{node}/kv/key/c{client_id}-{rng.randrange(8)}")),
        ("keyvalue write", 2, None),  # the client loop writes and remembers the value
        ("annotation write", 1, write_element),
        ("annotation read", 2, lambda c: c.get(f"{node}/syn/tag/c{client_id}")),
        ("neuronjson write", 1, write_body),
        ("neuronjson read", 2, lambda c: c.get(f"{node}/bodies/keys")),
    ]


def run_client(target: Target, client_id: int, until: float, tally: Tally, last: dict) -> None:
    """Requests from the mix until ``until``; the last acknowledged value of each of the
    client's keyvalue keys goes into ``last``."""
    mix = request_mix(target, client_id)
    rng = random.Random(client_id + 1000)
    kinds = [kind for kind, weight, _ in mix for _ in range(weight)]
    calls = {kind: call for kind, _, call in mix}
    written = 0
    with httpx.Client(base_url=target.url, timeout=live.TIMEOUT) as client:
        while time.monotonic() < until:
            kind = rng.choice(kinds)
            started = time.perf_counter()
            try:
                if calls[kind] is None:
                    key, written = f"c{client_id}-{written % 8}", written + 1
                    value = f"{client_id}:{written}".encode()
                    response = client.post(f"/api/node/{target.root}/kv/key/{key}", content=value)
                    if response.is_success:
                        last[key] = value
                else:
                    response = calls[kind](client)
            except httpx.HTTPError as e:
                tally.record(kind, time.perf_counter() - started, f"{type(e).__name__}: {e}")
                continue
            # A never-written key or body is a legitimate 404; everything else must succeed.
            fine = response.is_success or (response.status_code == 404 and kind.endswith("read"))
            problem = None if fine else f"{response.status_code} {response.text[:200]}"
            tally.record(kind, time.perf_counter() - started, problem)


def sample_rss(pid: int, stop: threading.Event, peaks: dict[int, int]) -> None:
    """The peak RSS of the server's supervisor and of each worker, every 0.2 s."""
    parent = psutil.Process(pid)
    while not stop.wait(0.2):
        try:
            processes = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in processes:
            try:
                rss = process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            peaks[process.pid] = max(peaks.get(process.pid, 0), rss)


@pytest.mark.reliability
@pytest.mark.timeout(SECONDS + 900)
def test_64_clients_for_a_minute_get_no_errors(server: DvidServer) -> None:
    assert server.proc is not None
    target = prepare(server.url)
    tally, last = Tally(), {}
    peaks: dict[int, int] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(server.proc.pid, stop, peaks))
    sampler.start()
    until = time.monotonic() + SECONDS
    clients = [
        threading.Thread(target=run_client, args=(target, i, until, tally, last))
        for i in range(CLIENTS)
    ]
    try:
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
    finally:
        stop.set()
        sampler.join()

    total = sum(len(v) for v in tally.latencies.values())
    print(f"\n{CLIENTS} clients, {SECONDS:.0f} s, {total} requests ({total / SECONDS:.0f}/s)")
    for kind, latencies in sorted(tally.latencies.items()):
        ms = sorted(1000 * t for t in latencies)
        p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
        print(
            f"  {kind:<17} {len(ms):6d} requests  p50 {statistics.median(ms):7.1f} ms"
            f"  p99 {p99:7.1f} ms"
        )
    rss = {pid: peak >> 20 for pid, peak in peaks.items()}
    print(f"  peak RSS by process (MiB): {rss}; bound per worker {RSS_BOUND >> 20} MiB")

    assert not tally.errors, f"{len(tally.errors)} errors, first: {tally.errors[:5]}"
    assert len(peaks) >= 3, peaks  # the supervisor and its two workers were sampled
    assert all(peak <= RSS_BOUND for peak in peaks.values()), rss
    for key, value in last.items():
        got = live.get(f"{server.url}/api/node/{target.root}/kv/key/{key}")
        assert got.content == value, (key, got.status_code)
    assert live.get(f"{server.url}/api/heartbeat").text == "OK"
