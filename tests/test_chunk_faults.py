"""Store faults on chunk I/O (tensorstore), through a real server on S3 behind a fault proxy.

A real ``dvid-cloud serve`` process stores its data on moto through
:class:`tests.fault_proxy.FaultProxy`, so boto3 (metadata) and tensorstore (chunk arrays,
its own HTTP stack) both reach the store through the proxy. Faults are injected only on
zarr chunk keys (``.../c/<i>/<j>/<k>``), i.e. on tensorstore's chunk reads (GET) and
writes (PUT), of each kind: 500/503 answers, lost responses (forwarded, then 503), stalls
past the client's timeout, connection resets.

The HTTP contract checked, for a uint8blk and a labelmap instance:

* a GET raw answers 503 (DVID's plain-text error) or 200 with exactly the stored voxels
  (when tensorstore's own retries absorbed the faults); never 500, never a hang;
* a POST raw answers 503 or 200; after the proxy heals, everything acknowledged reads back
  exactly, and a request that got 503 is retried until 200 and then reads back exactly.

The server runs in its own process so that tensorstore's stall timeout (an environment
variable read once per process) and its retry bounds can be set short for the test:
3 attempts per chunk request, 20-100 ms apart, a stalled transfer aborted after 1 s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from backends import StoreUnavailable
from tests import fixtures_stores
from tests.dvid_process import DvidServer
from tests.fault_proxy import KINDS, FaultProxy
from tests.fixtures_stores import (
    make_s3_store,
    proxied_s3_server,
)

# The shared moto fixture, bound here so this module also runs without a conftest.
s3_endpoint = fixtures_stores.s3_endpoint

#: zarr v3 chunk keys (default chunk key encoding), wherever the array lives.
CHUNK_KEY = r"/c/\d+/\d+/\d+$"
#: The proxy holds a stalled connection this long; tensorstore gives up on a silent
#: transfer after STALL_SECONDS (reads), or sees the proxy drop it (writes).
PROXY_DELAY = 1.5
STALL_SECONDS = "1"
#: Kinds for the random phases: stalls cost seconds each, so they are exercised by the
#: deterministic phases only (every kind is, on reads and on writes).
QUICK_KINDS = tuple(k for k in KINDS if k != "timeout")
#: No request may take longer (the server bounds retries and stalls far below this).
CLIENT_TIMEOUT = 30.0
BLOCK = 64
SEED = 20261202

pytestmark = pytest.mark.timeout(120)

TYPES = {
    "uint8blk": np.dtype("<u1"),
    "labelmap": np.dtype("<u8"),
}


@dataclass
class Rig:
    url: str
    proxy: FaultProxy
    client: httpx.Client
    log: Path

    def log_tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-3000:]


@pytest.fixture(scope="module")
def rig(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("chunk-faults")
    store = make_s3_store(s3_endpoint)  # a fresh bucket, made directly on moto
    with FaultProxy(s3_endpoint, seed=SEED, delay=PROXY_DELAY) as proxy:
        config, env = proxied_s3_server(tmp, store.bucket, proxy.url, "2", STALL_SECONDS)
        log = tmp / "server.log"
        server = DvidServer(log, env, config=config).start()
        try:
            with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
                yield Rig(server.url, proxy, client, log)
        finally:
            proxy.heal()
            server.stop()
            store.close()


# --- helpers -----------------------------------------------------------------------------


def xyz(values: tuple[int, int, int]) -> str:
    return "_".join(str(int(v)) for v in values)


def new_instance(rig: Rig, typename: str) -> tuple[str, str]:
    """A fresh repo with one ``typename`` instance of 64³ blocks; (root uuid, name)."""
    r = rig.client.post("/api/repos", json={})
    assert r.status_code == 200, r.text
    root = r.json()["root"]
    body = {"typename": typename, "dataname": "vol", "BlockSize": f"{BLOCK},{BLOCK},{BLOCK}"}
    r = rig.client.post(f"/api/repo/{root}/instance", json=body)
    assert r.status_code == 200, r.text
    return root, "vol"


def volume(typename: str, shape_zyx: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = TYPES[typename]
    if typename == "labelmap":  # a few labels, as segmentation has
        return rng.integers(1, 6, size=shape_zyx, dtype=dtype) * 1_000_003
    return rng.integers(1, 255, size=shape_zyx, dtype=dtype, endpoint=True)


def post_raw(rig: Rig, uuid: str, name: str, offset, vol: np.ndarray) -> httpx.Response:
    nz, ny, nx = vol.shape
    path = f"/api/node/{uuid}/{name}/raw/0_1_2/{nx}_{ny}_{nz}/{xyz(offset)}"
    return rig.client.post(path, content=vol.tobytes())


def get_raw(rig: Rig, uuid: str, name: str, offset, size_xyz) -> httpx.Response:
    return rig.client.get(f"/api/node/{uuid}/{name}/raw/0_1_2/{xyz(size_xyz)}/{xyz(offset)}")


def as_array(r: httpx.Response, typename: str, size_xyz) -> np.ndarray:
    nx, ny, nz = size_xyz
    return np.frombuffer(r.content, dtype=TYPES[typename]).reshape(nz, ny, nx)


def assert_unavailable(r: httpx.Response, what: str, rig: Rig) -> None:
    """A 503 in DVID's plain-text form (not a 500, not some other error)."""
    assert r.status_code == 503, f"{what}: {r.status_code} {r.text[:300]}\n{rig.log_tail()}"
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    assert "unavailable" in r.text, r.text


def assert_only_chunk_faults(proxy: FaultProxy, method: str) -> None:
    """Every fault injected since the last reset hit a chunk key with ``method``."""
    for kind, m, path in proxy.log:
        assert m == method and re.search(CHUNK_KEY, path), (kind, m, path)


def write_until_acknowledged(rig: Rig, uuid: str, name: str, offset, vol: np.ndarray) -> int:
    """POST until 200 (on a healed store); returns how many attempts it took."""
    for attempt in range(1, 6):
        r = post_raw(rig, uuid, name, offset, vol)
        assert r.status_code in (200, 503), f"{r.status_code} {r.text[:300]}"
        if r.status_code == 200:
            return attempt
    raise AssertionError(f"POST at {offset} never succeeded:\n{rig.log_tail()}")


# --- reads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("typename", list(TYPES))
def test_chunk_read_faults_answer_503_never_500(rig: Rig, typename: str) -> None:
    proxy = rig.proxy
    uuid, name = new_instance(rig, typename)
    size = (2 * BLOCK, BLOCK, BLOCK)  # x, y, z: two chunks
    stored = volume(typename, (BLOCK, BLOCK, 2 * BLOCK), seed=1)
    r = post_raw(rig, uuid, name, (0, 0, 0), stored)
    assert r.status_code == 200, r.text
    proxy.reset_counters()

    # Every attempt at every chunk read fails: tensorstore gives up, the server says 503.
    for kind in KINDS:
        with proxy.failing(rate=1.0, kinds=(kind,), methods=("GET",), path_regex=CHUNK_KEY):
            r = get_raw(rig, uuid, name, (0, 0, 0), size)
        assert_unavailable(r, f"GET with every chunk read failing ({kind})", rig)
        assert proxy.count(kind, "GET") >= 3, proxy.injected  # all of tensorstore's attempts

    # Two faults, whatever their kind, cannot exhaust the 3 attempts at any chunk:
    # tensorstore's retries absorb them and the answer is exact.
    before = proxy.count()
    with proxy.failing(rate=1.0, kinds=KINDS, methods=("GET",), path_regex=CHUNK_KEY, limit=2):
        r = get_raw(rig, uuid, name, (0, 0, 0), size)
    assert proxy.count() == before + 2, proxy.log[-3:]
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    np.testing.assert_array_equal(as_array(r, typename, size), stored)

    # Many reads fail: each answer is 503 or the exact voxels.
    statuses = []
    with proxy.failing(
        rate=0.5, kinds=QUICK_KINDS, methods=("GET",), path_regex=CHUNK_KEY, seed=SEED
    ):
        for _ in range(4):
            r = get_raw(rig, uuid, name, (0, 0, 0), size)
            statuses.append(r.status_code)
            if r.status_code == 200:
                np.testing.assert_array_equal(as_array(r, typename, size), stored)
            else:
                assert_unavailable(r, "GET with some chunk reads failing", rig)

    r = get_raw(rig, uuid, name, (0, 0, 0), size)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(as_array(r, typename, size), stored)
    assert_only_chunk_faults(proxy, "GET")
    print(f"\n{typename} reads: statuses {statuses}, injected {dict(proxy.injected)}")


# --- writes --------------------------------------------------------------------------------


@pytest.mark.parametrize("typename", list(TYPES))
def test_chunk_write_faults_lose_no_acknowledged_data(rig: Rig, typename: str) -> None:
    proxy = rig.proxy
    uuid, name = new_instance(rig, typename)
    proxy.reset_counters()
    # Each write owns one chunk along x. For uint8blk odd ones are partial (unaligned), so
    # tensorstore reads, modifies and writes the chunk; labelmap takes aligned boxes only.
    writes: list[tuple[tuple[int, int, int], np.ndarray]] = []
    for i in range(len(KINDS) + 5):
        if i % 2 and typename != "labelmap":
            offset, shape = (i * BLOCK + 8, 4, 12), (40, 50, 30)  # z, y, x sizes
        else:
            offset, shape = (i * BLOCK, 0, 0), (BLOCK, BLOCK, BLOCK)
        writes.append((offset, volume(typename, shape, seed=100 + i)))
    status: list[int] = []

    # Every attempt at every chunk write fails: 503.
    for kind, (offset, vol) in zip(KINDS, writes, strict=False):
        with proxy.failing(rate=1.0, kinds=(kind,), methods=("PUT",), path_regex=CHUNK_KEY):
            r = post_raw(rig, uuid, name, offset, vol)
        assert_unavailable(r, f"POST with every chunk write failing ({kind})", rig)
        assert proxy.count(kind, "PUT") >= 3, proxy.injected
        status.append(r.status_code)

    # Two faults cannot exhaust tensorstore's 3 attempts at a chunk: acknowledged.
    offset, vol = writes[len(KINDS)]
    before = proxy.count()
    with proxy.failing(rate=1.0, kinds=KINDS, methods=("PUT",), path_regex=CHUNK_KEY, limit=2):
        r = post_raw(rig, uuid, name, offset, vol)
    assert proxy.count() == before + 2, proxy.log[-3:]
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    status.append(r.status_code)

    # Many chunk writes fail: 503 or 200.
    with proxy.failing(
        rate=0.5, kinds=QUICK_KINDS, methods=("PUT",), path_regex=CHUNK_KEY, seed=SEED
    ):
        for offset, vol in writes[len(KINDS) + 1 :]:
            r = post_raw(rig, uuid, name, offset, vol)
            assert r.status_code in (200, 503), f"{r.status_code} {r.text[:300]}"
            if r.status_code == 503:
                assert_unavailable(r, "POST with some chunk writes failing", rig)
            status.append(r.status_code)

    # Healed: what got 503 is retried until acknowledged; then everything reads back.
    for (offset, vol), code in zip(writes, status, strict=True):
        if code == 503:
            write_until_acknowledged(rig, uuid, name, offset, vol)
    for i, (offset, vol) in enumerate(writes):
        column = (i * BLOCK, 0, 0)
        r = get_raw(rig, uuid, name, column, (BLOCK, BLOCK, BLOCK))
        assert r.status_code == 200, r.text
        expected = np.zeros((BLOCK, BLOCK, BLOCK), dtype=TYPES[typename])
        (x, y, z), (nz, ny, nx) = offset, vol.shape
        x -= column[0]
        expected[z : z + nz, y : y + ny, x : x + nx] = vol
        np.testing.assert_array_equal(
            as_array(r, typename, (BLOCK, BLOCK, BLOCK)), expected, err_msg=f"write {i}"
        )
    assert_only_chunk_faults(proxy, "PUT")
    for kind in KINDS:
        assert proxy.count(kind, "PUT") > 0, proxy.injected
    print(f"\n{typename} writes: statuses {status}, injected {dict(proxy.injected)}")


# --- the proxy itself ---------------------------------------------------------------------


def test_fault_proxy_forwards_and_counts(s3_endpoint: str) -> None:
    """boto3 through the proxy: faithful forwarding (HEAD keeps its Content-Length), seeded
    faults counted by kind and method, ``limit`` healing, and boto3's retries on top."""
    with FaultProxy(s3_endpoint, seed=1, delay=0.5) as proxy:
        store = make_s3_store(proxy.url, max_attempts=3)
        store.put("a/b", b"x" * 1000)
        head = store.client.head_object(Bucket=store.bucket, Key="a/b")
        assert head["ContentLength"] == 1000
        assert store.get("a/b").data == b"x" * 1000  # type: ignore[union-attr]
        for kind in KINDS:  # one fault, then healed: boto3's retry succeeds
            proxy.fail(rate=1.0, kinds=(kind,), methods=("GET",), path_contains="a/b", limit=1)
            assert store.get("a/b").data == b"x" * 1000  # type: ignore[union-attr]
            assert proxy.count(kind, "GET") == 1, proxy.injected
        proxy.fail(rate=1.0, kinds=("error",), methods=("PUT",))
        with pytest.raises(StoreUnavailable):
            store.put("a/c", b"y")
        assert proxy.count("error", "PUT") == 3  # every one of boto3's attempts
        proxy.heal()
        assert store.get("a/c") is None
        assert all(path.startswith(f"/{store.bucket}/") for _, _, path in proxy.log)
        store.close()


# --- classification (no server) ------------------------------------------------------------

#: Messages tensorstore 0.1.86 really produced against moto behind the proxy.
STORE_FAILURES = [
    'ABORTED: Error reading "p/c/0/0": All 2 retry attempts failed: ServiceUnavailable: x',
    'ABORTED: Error writing "p/c/0/0": All 2 retry attempts failed: CURL error Server returned '
    "nothing (no headers, no data): Empty reply from server [curl_code='52']",
    'ABORTED: Error reading "p/c/0/0": All 2 retry attempts failed: CURL error Timeout was '
    "reached: Operation too slow. [curl_code='28']",
    'ABORTED: Error opening "zarr3" driver: Error reading "p/zarr.json": All 2 retry attempts '
    "failed: Unknown [http_response_code='502']",
    "UNAVAILABLE: connection refused",
    "DEADLINE_EXCEEDED: deadline exceeded",
    "RESOURCE_EXHAUSTED: too many requests",
    "UNKNOWN: Error reading \"p/c/0/0\": Unknown [http_response_code='500']",
    "INTERNAL: CURL error Failure when receiving data from the peer [curl_code='56']",
]
GENUINE_ERRORS = [
    'FAILED_PRECONDITION: Error opening "zarr3" driver: Expected "shape" of [256,256] but '
    "received: [128,128]",
    'FAILED_PRECONDITION: Error reading "p/c/1/1": Not enough data: expected at least 4096',
    'DATA_LOSS: Error opening "zarr3" driver: Error reading "p/zarr.json": Invalid JSON',
    'NOT_FOUND: Error opening "zarr3" driver: Metadata at "p/zarr.json" does not exist',
    "PERMISSION_DENIED: Error reading \"p/c/0/0\": AccessDenied: m [http_response_code='403']",
    "OUT_OF_RANGE: Propagated bounds [0, 128), with size=128, for dimension 0 are incompatible",
    "Error aligning dimensions: source dimension 0 [0, 32) mismatch with target dimension 0",
    "Error reading \"p/c/0/0\": BadRequest: m [http_response_code='400']",
    "INTERNAL: assertion failed in codec",
]


def test_store_failures_are_told_from_genuine_errors() -> None:
    from backends.tensorstore_errors import is_store_failure, store_io

    for message in STORE_FAILURES:
        assert is_store_failure(ValueError(message)), message
        with pytest.raises(StoreUnavailable), store_io():
            raise ValueError(message)
    for message in GENUINE_ERRORS:
        assert not is_store_failure(ValueError(message)), message
        with pytest.raises(ValueError, match=re.escape(message[:30])), store_io():
            raise ValueError(message)
    assert is_store_failure(TimeoutError())
    # Subclasses of ValueError are never tensorstore's.
    assert not is_store_failure(UnicodeDecodeError("utf-8", b"\xff", 0, 1, STORE_FAILURES[0]))
    assert not is_store_failure(RuntimeError(STORE_FAILURES[0]))


def test_server_answers_503_for_store_failures_and_500_for_bugs() -> None:
    from fastapi.testclient import TestClient

    from app.server import create_app
    from app.settings import Settings
    from backends.memory import MemoryStore

    app = create_app(Settings(), {"default": MemoryStore()})

    def boom(message: str) -> None:
        raise ValueError(message)

    app.add_api_route("/test-only/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/test-only/boom", params={"message": STORE_FAILURES[1]})
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("text/plain")
        assert "unavailable" in r.text and "(/test-only/boom)" in r.text
        r = client.get("/test-only/boom", params={"message": GENUINE_ERRORS[0]})
        assert r.status_code == 500, r.text
