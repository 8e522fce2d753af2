"""What do labelsz rankings and edits cost as the number of counted labels grows?

For 10^4, 10^5 and 10^6 labels with PreSyn counts (written straight into the count maps
at the root, then committed, plus one edit in an open child), on a local-folder store:

* ``top/100`` and ``threshold`` at the committed root and at the open child (cold, then
  warm from the partition cache), with the store reads each needed;
* one synced event adding one element at the open child: the time, the objects and the
  bytes it wrote (a single-element edit rewrites one partition per index type).

    python -m bench.labelsz [--labels 10000,100000,1000000] [--reads 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.datatypes import bind
from app.datatypes.labelsz import LabelSz
from app.server import create_app
from app.settings import Settings
from backends import Blob
from backends.local import LocalStore


class CountingStore(LocalStore):
    """A local folder that counts the objects read and written."""

    reads = 0
    writes = 0
    written = 0

    def get(self, key: str) -> Blob | None:
        self.reads += 1
        return super().get(key)

    def put(self, key: str, data: bytes, **kwargs: Any) -> str:
        self.writes += 1
        self.written += len(data)
        return super().put(key, data, **kwargs)

    def reset(self) -> None:
        self.reads = self.writes = self.written = 0


def labelsz_at(client: TestClient, uuid: str) -> LabelSz:
    services = cast(FastAPI, client.app).state.services
    repo, node = services.catalog.resolve(uuid)
    data = bind(services, repo, node.uuid, repo.instance("sizes"))
    assert isinstance(data, LabelSz)
    return data


def median_ms(fn: Callable[[], object], reads: int) -> float:
    samples = []
    for _ in range(reads):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def run(n_labels: int, reads: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = CountingStore(folder)
        client = TestClient(create_app(Settings(), {"default": store}))
        root = client.post("/api/repos", json={}).json()["root"]
        body = {"typename": "labelsz", "dataname": "sizes"}
        assert client.post(f"/api/repo/{root}/instance", json=body).status_code == 200
        rng = np.random.default_rng(1)
        labels = rng.choice(np.arange(1, 10 * n_labels, dtype=np.uint64), n_labels, False)
        counts = rng.zipf(1.5, n_labels).clip(1, 10**6).astype(np.uint64)
        data = labelsz_at(client, root)
        t = time.perf_counter()
        with data.transaction():
            for kind in ("PreSyn", "AllSyn"):
                data.counts().write(kind, labels, counts)
        print(f"\n{n_labels:>9,} labels: counts written in {time.perf_counter() - t:.2f} s")
        assert client.post(f"/api/node/{root}/commit", json={}).status_code == 200
        child = client.post(f"/api/node/{root}/newversion", json={}).json()["child"]

        def edit() -> None:
            data = labelsz_at(client, child)
            event = {"Action": "element-post", "Added": [[1, 2, 3, "PreSyn", int(labels[0])]]}
            with data.transaction() as txn:
                data.apply_events(txn, data.instance, [event])

        store.reset()
        took = median_ms(edit, 1)
        print(
            f"  one-element edit (open child)        {took:8.1f} ms, "
            f"{store.writes} objects / {store.written / 1024:.0f} KiB written, "
            f"{store.reads} read"
        )
        for name, node in (("committed root", root), ("open child", child)):
            for query in ("top/100/PreSyn", "threshold/1000/PreSyn?n=100"):
                path = f"/api/node/{node}/sizes/{query}"
                store.reset()
                first = median_ms(lambda path=path: client.get(path), 1)
                cold_reads = store.reads
                warm = median_ms(lambda path=path: client.get(path), reads)
                print(
                    f"  {query:28s} {name:15s} first {first:7.1f} ms "
                    f"({cold_reads} reads), then {warm:7.1f} ms "
                    f"({(store.reads - cold_reads) / reads:.0f} reads each)"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", default="10000,100000,1000000")
    parser.add_argument("--reads", type=int, default=20)
    args = parser.parse_args()
    for n in (int(v) for v in args.labels.split(",")):
        run(n, args.reads)


if __name__ == "__main__":
    main()
