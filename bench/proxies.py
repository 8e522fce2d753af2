"""Proxy instances over BOSS: read throughput through ``dvid-cloud serve``, cold and warm,
beside reading the remote directly.

A fake BOSS (tests/fakes/boss.py, on threads of this process, token required) holds a
512x512x256 uint8 channel (EM-like: smooth structure plus noise, stored in BOSS's
512x512x16 cuboids; a copy of it under another name for figure 2) and a 256x256x128
uint64 channel (blocks of 64-bit labels). Three ``dvid-cloud serve`` processes,
configured by a TOML ``[proxy.boss]`` section, read them through proxy instances
(``uint8blk`` and ``labelmap``, 64³ blocks). A server keeps two
caches in front of the remote: the remote's voxels by block (``proxy_cache_bytes``) and
whole encoded answers (``response_cache_bytes``, which holds a proxy's reads at every
version). Each read is timed on a server in one state:

* cold, fresh server: the first read of each box (or chunk) by a server just started
  with the voxel cache only (its answer cache off);
* warm, voxel cache: that server's later reads: the proxy's own path, blocks from the
  cache assembled and encoded;
* cold, caches off: a server with both caches at 0 bytes, so every read goes to BOSS;
* warm, kept answers: a server with both caches on, its answers already kept.

Measured in one run:

1. ``GET raw/0_1_2`` of 3-D boxes (256³ uint8, 128³ uint64: 16.8 MB of voxels each; the
   four aligned boxes of each volume, read in turn), MB/s, beside ``BossVolume.read`` of
   the same box in this process (the proxy's own client, blosc decoding included) and a
   raw httpx GET of the same cutout (the transfer alone, still blosc-compressed).
2. neuroglancer's unit, 64³ chunks (``raw/0_1_2/64_64_64``) from ``--threads`` client
   threads, chunks/s: all 256 chunks of the uint8 volume (``--quick``: the 64 of its
   first slab), beside the same threads calling ``BossVolume.read`` and GETting raw
   cutouts of the same chunks.

With each figure: BOSS requests per proxied read (the fake counts them, showing how a
read is split and what the caches save) and the server's CPU time per read.

The point is what the proxy costs over the remote itself: ratios proxy / direct are of
figures from the same run, timed in interleaved rounds (a, b, c, a, b, c...) so that the
load of a shared machine falls on all alike. Every client is httpx, as is the server's
client of BOSS. The fake BOSS shares this process, and its GIL, with the clients: a
direct read pays for the fake's Python too, as the proxy's does. MB are 10^6 bytes of
voxels; times are medians.

    python -m bench.proxies [--quick] [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import numpy as np

from backends.remote import BossConfig
from backends.remote.boss import BossVolume
from tests.fakes.boss import FakeBoss, FakeChannel
from tests.fixtures_stores import isolated_server_env
from tests.servers import free_port, wait_for_heartbeat

CLI = shutil.which("dvid-cloud", path=str(Path(sys.executable).parent)) or "dvid-cloud"
MB = 1e6
TOKEN = "bench-boss-token"
COLLECTION = "bench"
#: instance name -> (typename, experiment, channel, voxels ZYX, dtype). ``em2`` holds the
#: voxels of ``em`` under another channel: figure 2 reads it, so that its first reads are
#: cold on the server whose cache figure 1 filled with all of ``em``.
VOLUMES: dict[str, tuple[str, str, str, tuple[int, int, int], str]] = {
    "em": ("uint8blk", "em", "img", (256, 512, 512), "uint8"),
    "seg": ("labelmap", "seg", "labels", (128, 256, 256), "uint64"),
    "em2": ("uint8blk", "em", "img2", (256, 512, 512), "uint8"),
}
#: figure 1's volumes and the edge of their boxes: 16.8 MB of voxels for either
BOX = {"em": 256, "seg": 128}
#: figure 2's volume
CHUNKED = "em2"
CHUNK = 64
START_ATTEMPTS = 3
#: Servers' caches, by the env vars bounding them (see the module docstring).
NO_CACHES = {"DVID_CLOUD_PROXY_CACHE_BYTES": "0", "DVID_CLOUD_RESPONSE_CACHE_BYTES": "0"}
VOXEL_CACHE = {"DVID_CLOUD_RESPONSE_CACHE_BYTES": "0"}
ALL_CACHES: dict[str, str] = {}
#: The servers, by name: one per cache state.
SERVERS = {"cold": NO_CACHES, "kept": ALL_CACHES, "fresh": VOXEL_CACHE}
#: the reads each figure times
FIRST = "proxy, cold: fresh server, 1st read"
COLD = "proxy, cold: caches off"
WARM = "proxy, warm: voxel cache"
KEPT = "proxy, warm: kept answers"
DIRECT = "direct: BossVolume.read"
CUTOUT = "direct: httpx GET cutout (no decode)"

Vec = tuple[int, int, int]


def em_like(shape: Vec, seed: int = 0) -> np.ndarray:
    """ZYX uint8 with smooth structure plus noise, so that compression does about as
    badly as on EM, unlike on a constant or a ramp."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    smooth = 60 * np.sin(x / 7.0) * np.cos(y / 11.0) + 30 * np.sin(z / 5.0 + x / 13.0)
    noise = rng.normal(0, 12, shape).astype(np.float32)
    return np.clip(128 + smooth + noise, 0, 255).astype(np.uint8)


def labels_like(shape: Vec) -> np.ndarray:
    """ZYX uint64: 16³ blocks of distinct labels above 2**40 (all 64 bits in use)."""
    z, y, x = np.indices(shape, dtype=np.uint64)
    n = np.uint64(1 << 12)
    return (x // 16) + n * (y // 16) + n * n * (z // 16) + np.uint64(1 << 40)


def fake_boss() -> FakeBoss:
    """The remote: :data:`VOLUMES`' channels, 8 nm voxels, BOSS's default cuboids."""
    channels = {}
    made: dict[tuple[str, Vec], np.ndarray] = {}
    for typename, experiment, channel, shape, _ in VOLUMES.values():
        image = typename == "uint8blk"
        if (typename, shape) not in made:
            made[typename, shape] = em_like(shape) if image else labels_like(shape)
        channels[(COLLECTION, experiment, channel)] = FakeChannel(
            made[typename, shape],
            voxel_size=(8.0, 8.0, 8.0),
            channel_type="image" if image else "annotation",
        )
    return FakeBoss(channels, token=TOKEN)


# --- the dvid-cloud servers ------------------------------------------------------------------


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def dvid_server(
    work: Path, name: str, boss: FakeBoss, caches: dict[str, str]
) -> Iterator[tuple[str, int]]:
    """``dvid-cloud serve --config`` with ``[proxy.boss]`` pointing at ``boss`` and the
    ``caches`` env vars, on a free port until the block ends; yields the URL and pid. One
    worker process, so that the caches and the CPU time measured are all of the server's.

    The port is chosen before the child binds it, so a lost race is retried on a new port.
    """
    config = work / f"{name}.toml"
    log_path = work / f"{name}-server.log"
    env = isolated_server_env(work) | caches
    with open(log_path, "wb") as log:
        for _ in range(START_ATTEMPTS):
            port = free_port()
            config.write_text(
                f'[server]\nhost = "127.0.0.1"\nport = {port}\nworkers = 1\n\n'
                "[proxy]\ntimeout = 60\nattempts = 2\n\n"
                f'[proxy.boss]\nendpoint = "{boss.url}"\ntoken = "{TOKEN}"\n'
            )
            proc = subprocess.Popen(
                [CLI, "serve", "--config", str(config), "--data-dir", str(work / name)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            url = f"http://127.0.0.1:{port}"
            if wait_for_heartbeat(url, proc, 120):
                break
            _stop(proc)
        else:
            tail = log_path.read_bytes()[-2000:].decode(errors="replace")
            raise RuntimeError(f"dvid-cloud serve did not start; its output ends with:\n{tail}")
        try:
            yield url, proc.pid
        finally:
            _stop(proc)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ok(response: httpx.Response) -> httpx.Response:
    if response.status_code != 200:
        raise RuntimeError(
            f"{response.request.method} {response.url}: {response.status_code} "
            f"{response.text[:300]}"
        )
    return response


@dataclass
class Proxy:
    """One server's repo of proxy instances, and the client reading it."""

    pid: int
    uuid: str
    http: httpx.Client

    def path(self, name: str, offset: Vec, size: Vec) -> str:
        return (
            f"/api/node/{self.uuid}/{name}/raw/0_1_2/{'_'.join(map(str, size))}/"
            f"{'_'.join(map(str, offset))}"
        )

    def read(self, name: str, offset: Vec, size: Vec) -> bytes:
        return ok(self.http.get(self.path(name, offset, size))).content


@contextmanager
def proxy_server(
    work: Path, name: str, boss: FakeBoss, caches: dict[str, str], threads: int
) -> Iterator[Proxy]:
    """A fresh server (see :func:`dvid_server`) with a repo holding a proxy instance of
    each of :data:`VOLUMES`, and a client for ``threads`` concurrent requests."""
    with (
        dvid_server(work, name, boss, caches) as (url, pid),
        httpx.Client(
            base_url=url,
            timeout=120,
            limits=httpx.Limits(max_connections=threads, max_keepalive_connections=threads),
        ) as http,
    ):
        uuid = str(ok(http.post("/api/repos", json={"alias": "proxies"})).json()["root"])
        for data, (typename, experiment, channel, _, _) in VOLUMES.items():
            body = {
                "typename": typename,
                "dataname": data,
                "proxy": f"boss://{COLLECTION}/{experiment}/{channel}",
                "BlockSize": f"{CHUNK},{CHUNK},{CHUNK}",
            }
            ok(http.post(f"/api/repo/{uuid}/instance", json=body))
        yield Proxy(pid, uuid, http)


@contextmanager
def proxy_servers(
    work: Path, boss: FakeBoss, caches: dict[str, dict[str, str]], threads: int
) -> Iterator[dict[str, Proxy]]:
    """:func:`proxy_server` for each name in ``caches``, started side by side: each spends
    seconds importing before it answers."""
    with ExitStack() as stack:

        def start(name: str) -> tuple[str, Proxy]:
            server = proxy_server(work, name, boss, caches[name], threads)
            return name, stack.enter_context(server)

        with ThreadPoolExecutor(len(caches)) as pool:
            servers = dict(pool.map(start, caches))
        yield servers


# --- the direct clients --------------------------------------------------------------------


class Direct:
    """The remote read without dvid-cloud: ``BossVolume`` (decoded voxels) and raw httpx
    GETs of cutouts (blosc bytes, not decoded)."""

    def __init__(self, boss: FakeBoss, threads: int) -> None:
        self.boss = boss
        config = BossConfig(boss.url, TOKEN)
        self.volumes = {
            name: BossVolume.from_url(f"boss://{COLLECTION}/{exp}/{ch}", config)
            for name, (_, exp, ch, _, _) in VOLUMES.items()
        }
        self.http = httpx.Client(
            timeout=120,
            headers={"Accept": "application/blosc", "Authorization": f"Token {TOKEN}"},
            limits=httpx.Limits(max_connections=threads, max_keepalive_connections=threads),
        )

    def read(self, name: str, offset: Vec, size: Vec) -> np.ndarray:
        return self.volumes[name].read(0, offset, size)

    def cutout(self, name: str, offset: Vec, size: Vec) -> bytes:
        _, experiment, channel, _, _ = VOLUMES[name]
        ranges = "/".join(f"{a}:{a + n}" for a, n in zip(offset, size, strict=True))
        url = f"{self.boss.url}/v1/cutout/{COLLECTION}/{experiment}/{channel}/0/{ranges}/"
        return ok(self.http.get(url)).content

    def __enter__(self) -> Direct:
        return self

    def __exit__(self, *exc: object) -> None:
        for volume in self.volumes.values():
            volume.close()
        self.http.close()


# --- timing --------------------------------------------------------------------------------


@dataclass
class Timed:
    """Median seconds per run of a callable, the server CPU seconds per run (if it ran on
    a server) and the BOSS requests per run."""

    seconds: float
    cpu: float | None
    cutouts: float


Sample = tuple[float, float | None, int]
"""One run: seconds, the server's CPU seconds (None for a direct read), BOSS requests."""


def measure(boss: FakeBoss, fn: Callable[[], object], pid: int | None) -> Sample:
    """Run ``fn`` once, watching the server ``pid`` (if any) and the fake's cutouts."""
    cutouts = boss.count("cutout")
    cpu = cpu_seconds(pid) if pid is not None else 0.0
    t = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t
    used = cpu_seconds(pid) - cpu if pid is not None else None
    return seconds, used, boss.count("cutout") - cutouts


def summary(samples: list[Sample]) -> Timed:
    """Medians of the runs (requests: their mean, which shows a fraction hitting BOSS)."""
    cpus = [c for _, c, _ in samples if c is not None]
    return Timed(
        statistics.median(s for s, _, _ in samples),
        statistics.median(cpus) if cpus else None,
        statistics.mean(n for _, _, n in samples),
    )


def interleaved(
    boss: FakeBoss, runs: dict[str, tuple[Callable[[], object], int | None]], reps: int
) -> dict[str, Timed]:
    """Each callable (with the pid of the server it loads, if any) timed ``reps`` times in
    interleaved rounds, after one untimed run each."""
    for fn, _ in runs.values():
        fn()
    samples: dict[str, list[Sample]] = {label: [] for label in runs}
    for _ in range(reps):
        for label, (fn, pid) in runs.items():
            samples[label].append(measure(boss, fn, pid))
    return {label: summary(s) for label, s in samples.items()}


def cycle(fns: list[Callable[[], object]]) -> Callable[[], object]:
    """A callable running the next of ``fns`` each time (round robin)."""
    state = [0]

    def run() -> object:
        fn = fns[state[0] % len(fns)]
        state[0] += 1
        return fn()

    return run


def progress(message: str) -> None:
    """Progress goes to stderr, stamped, so that stdout holds the figures alone."""
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# --- figure 1: 3-D boxes -------------------------------------------------------------------


def boxes_of(name: str) -> list[Vec]:
    """The corners of the volume's aligned boxes of edge BOX[name], x, y, z."""
    nz, ny, nx = VOLUMES[name][3]
    edge = BOX[name]
    return [
        (x, y, z)
        for z in range(0, nz, edge)
        for y in range(0, ny, edge)
        for x in range(0, nx, edge)
    ]


def check_box(boss: FakeBoss, name: str, offset: Vec, got: bytes | np.ndarray) -> None:
    """Raise unless ``got`` is the box of ``name`` at ``offset`` as the fake holds it."""
    _, experiment, channel, _, dtype = VOLUMES[name]
    edge = BOX[name]
    x, y, z = offset
    want = boss.level((COLLECTION, experiment, channel), 0)[
        z : z + edge, y : y + edge, x : x + edge
    ]
    data = got if isinstance(got, bytes) else got.tobytes()
    if data != want.astype(np.dtype(dtype).newbyteorder("<")).tobytes():
        raise RuntimeError(f"{name} box at {offset} read wrong voxels")


Reader = Callable[[str, Vec, Vec], object]
"""A read of (instance name, offset, size)."""


@dataclass
class Readers:
    """What a figure reads through (see the module docstring for the servers' caches)."""

    boss: FakeBoss
    fresh: Proxy
    cold: Proxy
    kept: Proxy
    direct: Direct

    def timed(self, reads: Callable[[Reader], Callable[[], object]], reps: int) -> dict[str, Timed]:
        """``reads(reader)``, a figure's reads through one reader, timed through each in
        interleaved rounds; the fresh server's first reads are the caller's to time."""
        return interleaved(
            self.boss,
            {
                COLD: (reads(self.cold.read), self.cold.pid),
                WARM: (reads(self.fresh.read), self.fresh.pid),
                KEPT: (reads(self.kept.read), self.kept.pid),
                DIRECT: (reads(self.direct.read), None),
                CUTOUT: (reads(self.direct.cutout), None),
            },
            reps,
        )


def boxes_figure(readers: Readers, reps: int) -> None:
    print("\n1. GET raw/0_1_2 of one 3-D box, sequential, one client (the four boxes in turn)")
    head = (
        f"   {'volume':<13} {'read':<38} {'ms':>8} {'MB/s':>7} {'BOSS req/read':>14} "
        f"{'server CPU ms':>14}"
    )
    print(head)
    print("   " + "-" * (len(head) - 3))
    boss, fresh = readers.boss, readers.fresh
    for name, edge in BOX.items():
        typename, _, _, _, dtype = VOLUMES[name]
        size = (edge, edge, edge)
        corners = boxes_of(name)
        progress(f"boxes: {name} ({typename}), {len(corners)} boxes of {edge}³")
        first = [measure(boss, partial(fresh.read, name, at, size), fresh.pid) for at in corners]
        for at in corners:  # checked, and the kept answers made
            for reader in (fresh, readers.kept, readers.cold, readers.direct):
                check_box(boss, name, at, reader.read(name, at, size))

        def each_box(read: Reader, name: str = name, size: Vec = size) -> Callable[[], object]:
            return cycle([partial(read, name, at, size) for at in boxes_of(name)])

        times = {FIRST: summary(first)} | readers.timed(each_box, reps)
        nbytes = edge**3 * np.dtype(dtype).itemsize
        wire = len(readers.direct.cutout(name, corners[0], size))
        label = f"{typename} {edge}³"
        for read, t in times.items():
            cpu = "" if t.cpu is None else f"{t.cpu * 1e3:14.0f}"
            print(
                f"   {label:<13} {read:<38} {t.seconds * 1e3:8.1f} "
                f"{nbytes / t.seconds / MB:7.0f} {t.cutouts:14.1f} {cpu}"
            )
        print(f"   {label:<13} {ratios(times)}")
        print(
            f"   {label:<13} BOSS's blosc body: {wire / MB:.2f} MB for {nbytes / MB:.1f} MB "
            "of voxels; the proxy's raw answer is the voxels"
        )


def ratios(times: dict[str, Timed]) -> str:
    """Proxy / direct ``BossVolume`` throughput, cold and warm."""
    base = times[DIRECT].seconds
    return (
        f"proxy / direct BossVolume, as throughput: cold {base / times[COLD].seconds:.2f} "
        f"(fresh server {base / times[FIRST].seconds:.2f}), "
        f"warm {base / times[WARM].seconds:.2f} (kept answers {base / times[KEPT].seconds:.2f})"
    )


# --- figure 2: 64³ chunks from several threads ---------------------------------------------


def chunks_figure(readers: Readers, threads: int, slabs: int, reps: int) -> None:
    """Figure 2 over the first ``slabs`` z-slabs of chunks of the uint8 volume."""
    name = CHUNKED
    nz, ny, nx = VOLUMES[name][3]
    depth = min(nz, slabs * CHUNK)
    corners = [
        (x, y, z)
        for z in range(0, depth, CHUNK)
        for y in range(0, ny, CHUNK)
        for x in range(0, nx, CHUNK)
    ]
    size = (CHUNK, CHUNK, CHUNK)
    print(
        f"\n2. {len(corners)} uint8 chunks of {CHUNK}³ (raw/0_1_2/64_64_64, z < {depth} of "
        f"{nz}) from {threads} client threads"
    )
    progress(f"chunks: {len(corners)} of {CHUNK}³ from {threads} threads")
    with ThreadPoolExecutor(threads) as pool:

        def all_chunks(read: Reader) -> Callable[[], object]:
            return lambda: list(pool.map(lambda at: read(name, at, size), corners))

        first = measure(readers.boss, all_chunks(readers.fresh.read), readers.fresh.pid)
        all_chunks(readers.kept.read)()  # the kept answers made
        times = {FIRST: summary([first])} | readers.timed(all_chunks, reps)
    head = (
        f"   {'read':<38} {'chunks/s':>9} {'MB/s':>7} {'BOSS req/chunk':>15} "
        f"{'server CPU ms/chunk':>20}"
    )
    print(head)
    print("   " + "-" * (len(head) - 3))
    n = len(corners)
    for read, t in times.items():
        cpu = "" if t.cpu is None else f"{t.cpu / n * 1e3:20.2f}"
        print(
            f"   {read:<38} {n / t.seconds:9.0f} {n * CHUNK**3 / t.seconds / MB:7.1f} "
            f"{t.cutouts / n:15.2f} {cpu}"
        )
    print(f"   {ratios(times)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (under a minute)")
    parser.add_argument("--threads", type=int, default=8, help="client threads for figure 2")
    args = parser.parse_args()
    reps = 2 if args.quick else 11
    slabs = 1 if args.quick else VOLUMES[CHUNKED][3][0] // CHUNK
    started = time.perf_counter()
    progress("making the fake BOSS's volumes")
    with (
        tempfile.TemporaryDirectory(prefix="bench-proxies-") as tmp,
        fake_boss() as boss,
        proxy_servers(Path(tmp), boss, SERVERS, args.threads) as servers,
        Direct(boss, args.threads) as direct,
    ):
        progress("servers up")
        print(
            f"fake BOSS on {boss.url} (in this process), dvid-cloud serve processes of "
            f"one uvicorn worker each; {os.cpu_count()} cores"
        )
        readers = Readers(boss, servers["fresh"], servers["cold"], servers["kept"], direct)
        boxes_figure(readers, reps)
        chunks_figure(readers, args.threads, slabs, reps)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
