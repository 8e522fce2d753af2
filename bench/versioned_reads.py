"""Does a read cost the same at DAG depth 1 and depth 100?

Builds a chain of committed versions on a local-folder store, each writing one key of its
own, with the key under test written only at the root. Then times reading that key at a leaf of
depth 1, 10 and 100, in the service layer (UUID resolution, repo metadata, versioned
lookup) and through the HTTP app (in-process test client, whose own overhead dominates),
against a baseline measured in the same run: reading the stored record straight from
the store.

    python -m bench.versioned_reads [--depth 100] [--reads 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from fastapi.testclient import TestClient

from app.api.instances import resolve
from app.datatypes.keyvalue import KeyValue
from app.server import create_app
from app.settings import Settings
from backends.local import LocalStore


def chain(client: TestClient, depth: int) -> tuple[str, list[str]]:
    root = client.post("/api/repos", json={}).json()["root"]
    client.post(f"/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "kv"})
    client.post(f"/api/node/{root}/kv/key/target", content=b"x" * 4096)
    nodes = [root]
    for i in range(depth):
        client.post(f"/api/node/{nodes[-1]}/commit", json={})
        child = client.post(f"/api/node/{nodes[-1]}/newversion", json={}).json()["child"]
        client.post(f"/api/node/{child}/kv/key/filler-{i:04d}", content=b"y" * 64)
        nodes.append(child)
    return root, nodes


def time_ms(fn, reads: int) -> float:
    fn()  # warm: loads the indices of locked ancestors once
    samples = []
    for _ in range(reads):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--reads", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = LocalStore(folder)
        client = TestClient(create_app(Settings(), {"default": store}))
        t = time.perf_counter()
        root, nodes = chain(client, args.depth)
        build = time.perf_counter() - t
        print(f"built a chain of {args.depth} committed versions in {build:.1f} s")
        obj = next(info.key for info in store.list("data/") if "/v/" + root in info.key)
        baseline = time_ms(lambda: store.get(obj), args.reads)
        print(f"baseline: store.get of the stored record          {baseline:8.3f} ms")
        services = client.app.state.services

        def service_read(node: str) -> None:
            data = resolve(services, node, "kv")
            assert isinstance(data, KeyValue)
            assert len(data.view().get("target") or b"") == 4096

        service = {}
        for depth in sorted({1, 10, args.depth}):
            service[depth] = time_ms(lambda node=nodes[depth]: service_read(node), args.reads)
            print(f"resolve + read at depth {depth:3d} (service layer)   {service[depth]:8.3f} ms")
        top = max(service)
        print(f"service-layer ratio depth {top} / depth 1: {service[top] / service[1]:.2f}")
        results = {}
        for depth in sorted({1, 10, args.depth}):
            node = nodes[depth]

            def read(node: str = node) -> None:
                r = client.get(f"/api/node/{node}/kv/key/target")
                assert r.status_code == 200 and len(r.content) == 4096

            results[depth] = time_ms(read, args.reads)
            print(f"GET /key at depth {depth:3d} (open leaf, HTTP)       {results[depth]:8.3f} ms")
        print(f"HTTP ratio depth {top} / depth 1: {results[top] / results[1]:.2f}")
        listing = time_ms(lambda: client.get(f"/api/node/{nodes[-1]}/kv/keys"), 50)
        print(f"GET /keys at depth {top} ({top + 1} keys)              {listing:8.3f} ms")


if __name__ == "__main__":
    main()
