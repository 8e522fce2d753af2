"""Issue 18's diff and merge dry-run figures, each beside a baseline of the same run.

1. Diff of two versions of a 1024³ uint8 volume (64³ chunks: 4096) that differ in 1 % of
   chunks, in milliseconds; then how that grows with the number of changed chunks (fixed
   1024³) versus the volume size (fixed 1 %). A diff reads only chunk ownership bitmaps,
   so the versions' bitmaps are written in the store's real format
   (:meth:`ChunkOwnership.add`) rather than a GiB of voxels. Warm: the locked versions'
   bitmaps in memory, as a running server keeps them; cold: read from the store. Baseline:
   loading the two bitmaps from the store and a numpy set difference of the two versions'
   chunk ids (the I/O and compute floor of a diff that starts from written-chunk lists).
2. Merge dry-run of two branches that each changed 10⁵ keys of a keyvalue instance, 1 %
   of them on both sides (half to the same bytes). Baseline: loading both sides' key
   indexes and intersecting their key sets in Python (what finding both-side candidates
   costs at least), plus reading the candidates' values.

Everything runs in process (service layer: ``app.repo_diff``), then once through the HTTP
app for the 1 % case. Figures are printed, never asserted.

    python -m bench.diff [--store local|memory] [--keys 100000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from pyroaring import BitMap64

from app import repo_diff
from app.cache import LRUCache
from app.datatypes import bind
from app.datatypes.imageblk import Uint8Blk
from app.datatypes.keyvalue import KeyValue
from app.server import create_app
from app.services import Services
from app.settings import Settings
from app.volumes import keys as volume_keys
from app.volumes.geometry import pack
from backends import ObjectStore
from backends.local import LocalStore
from backends.memory import MemoryStore

CHUNK = 64


def median_ms(
    fn: Callable[[], object], runs: int, before: Callable[[], object] = lambda: None
) -> float:
    fn()
    samples = []
    for _ in range(runs):
        before()
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


class World:
    """An app on one store, driven through HTTP for repo and version bookkeeping."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.client = TestClient(create_app(Settings(), {"default": store}))
        self.services: Services = self.client.app.state.services

    def post(self, path: str, json: dict) -> dict:
        r = self.client.post(path, json=json)
        assert r.status_code == 200, r.text
        return r.json() if r.content else {}

    def repo(self) -> str:
        return self.post("/api/repos", json={})["root"]

    def instance(self, root: str, typename: str, name: str, **settings: str) -> None:
        self.post(
            f"/api/repo/{root}/instance",
            json={"typename": typename, "dataname": name, **settings},
        )

    def commit(self, uuid: str) -> None:
        self.post(f"/api/node/{uuid}/commit", json={})

    def child(self, uuid: str, branch: str | None = None) -> str:
        if branch:
            return self.post(f"/api/node/{uuid}/branch", json={"branch": branch})["child"]
        return self.post(f"/api/node/{uuid}/newversion", json={})["child"]

    def bound(self, uuid: str, name: str) -> object:
        repo, node = self.services.catalog.resolve(uuid)
        return bind(self.services, repo, node.uuid, repo.instance(name))


def chunk_ids(side: int, rng: np.random.Generator, count: int | None = None) -> np.ndarray:
    """The chunk ids of a side³-voxel volume, or ``count`` of them at random."""
    n = side // CHUNK
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    ids = pack(grid)
    if count is None:
        return ids
    return np.sort(rng.choice(ids, size=count, replace=False))


def volume_pair(world: World, side: int, changed: int, rng: np.random.Generator) -> tuple:
    """A root that wrote every chunk of a side³ volume and a committed child that
    rewrote ``changed`` of them (bitmaps only)."""
    root = world.repo()
    world.instance(root, "uint8blk", "img", BlockSize=f"{CHUNK},{CHUNK},{CHUNK}")
    data = world.bound(root, "img")
    assert isinstance(data, Uint8Blk)
    data.ownership().add(chunk_ids(side, rng))
    world.commit(root)
    child = world.child(root)
    touched = chunk_ids(side, rng, changed)
    later = world.bound(child, "img")
    assert isinstance(later, Uint8Blk)
    later.ownership().add(touched)
    world.commit(child)
    return root, child, data, touched


def diff_ms(world: World, root: str, child: str, runs: int) -> tuple[float, float]:
    """Warm (the locked versions' bitmaps in memory, as a running server keeps them) and
    cold (every bitmap read from the store) medians."""
    services = world.services
    repo, was = services.catalog.resolve(root)
    now = repo.dag.node(child)

    def run() -> None:
        answer = repo_diff.diff(services, repo, was, now)
        assert answer["instances"]

    def forget() -> None:
        services.bitmap_cache = LRUCache(world.services.settings.index_cache_entries)

    return median_ms(run, runs), median_ms(run, runs, forget)


def baseline_ms(world: World, data: Uint8Blk, root: str, child: str, runs: int) -> float:
    base = volume_keys.chunk_array(data.root, 0)

    def bitmap(uuid: str) -> np.ndarray:
        blob = world.store.get(volume_keys.owned(base, uuid))
        assert blob is not None
        return np.array(BitMap64.deserialize(blob.data).to_array())

    def run() -> None:
        np.setxor1d(bitmap(root), bitmap(child))

    return median_ms(run, runs)


def volumes(world: World, runs: int) -> None:
    rng = np.random.default_rng(18)
    print("diff of two versions of a volume (64³ chunks), median of", runs, "runs")
    print(
        f"{'volume':>8} {'chunks':>7} {'changed':>8} {'warm ms':>9} {'cold ms':>9}"
        f" {'baseline ms':>12}"
    )

    def row(side: int, changed: int) -> None:
        root, child, data, _ = volume_pair(world, side, changed, rng)
        warm, cold = diff_ms(world, root, child, runs)
        base = baseline_ms(world, data, root, child, runs)
        total = (side // CHUNK) ** 3
        print(f"{side:>7}³ {total:>7} {changed:>8} {warm:>9.2f} {cold:>9.2f} {base:>12.2f}")

    total = (1024 // CHUNK) ** 3
    row(1024, total // 100)
    print("-- growing the number of changed chunks, 1024³:")
    for changed in (1, 10, 100, 1000, total):
        row(1024, changed)
    print("-- growing the volume, 1 % changed:")
    for side in (256, 512, 1024, 2048):
        row(side, max(1, (side // CHUNK) ** 3 // 100))
    root, child, _, _ = volume_pair(world, 1024, total // 100, rng)
    url = f"/api/repo/{root}/diff/{root}/{child}"
    http = median_ms(lambda: world.client.get(url).raise_for_status(), runs)
    print(f"through HTTP (1024³, 1 %): {http:.2f} ms")


def dryrun(world: World, count: int, runs: int) -> None:
    rng = np.random.default_rng(18)
    root = world.repo()
    world.instance(root, "keyvalue", "kv")
    world.commit(root)
    left, right = world.child(root), world.child(root, "side")
    both = count // 100
    shared = [f"shared-{i:07d}" for i in range(both)]
    t = time.perf_counter()
    for uuid, tag in ((left, b"L"), (right, b"R")):
        data = world.bound(uuid, "kv")
        assert isinstance(data, KeyValue)
        own = [f"{tag.decode()}-{i:07d}" for i in range(count - both)]
        items = [(k, tag + rng.bytes(16)) for k in own]
        # Half the shared keys get the same bytes on both sides (no conflict).
        items += [(k, b"same" if i % 2 else tag) for i, k in enumerate(shared)]
        data.write_many(items)
        world.commit(uuid)
    print(f"\nmerge dry-run: {count} changed keys per side, {both} on both sides")
    print(f"(wrote them in {time.perf_counter() - t:.1f} s)")
    body = {"mergeType": "conflict-free", "parents": [left, right]}
    services = world.services
    repo, _ = services.catalog.resolve(root)
    parents = [repo.dag.node(left), repo.dag.node(right)]

    def report() -> None:
        found = repo_diff.merge_report(services, repo, parents)
        assert found["count"] == both // 2, found["count"]

    cold = time.perf_counter()
    report()
    print(f"dry-run, first (indexes loaded):  {(time.perf_counter() - cold) * 1000:9.1f} ms")
    print(f"dry-run, service layer:           {median_ms(report, runs):9.1f} ms")
    url = f"/api/repo/{root}/merge?dryrun=true"
    http = median_ms(lambda: world.client.post(url, json=body).raise_for_status(), runs)
    print(f"dry-run, through HTTP:            {http:9.1f} ms")
    kv = world.bound(left, "kv")
    assert isinstance(kv, KeyValue)
    keys = kv.keys()

    def floor() -> None:
        a = set(keys.index(left).records)
        b = set(keys.index(right).records)
        common = sorted(a & b)
        keys.read_values(left, common)
        keys.read_values(right, common)

    print(f"baseline: indexes, set ∩, values: {median_ms(floor, runs):9.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("local", "memory"), default="local")
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store: ObjectStore = LocalStore(Path(folder)) if args.store == "local" else MemoryStore()
        world = World(store)
        print(f"store: {args.store}")
        volumes(world, args.runs)
        dryrun(world, args.keys, args.runs)


if __name__ == "__main__":
    main()
