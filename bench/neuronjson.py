"""neuronjson at Clio scale over loopback HTTP: a real ``dvid-cloud serve`` process per store.

The issue's workload: 200,000 bodies with about 10 fields each (a Clio-sized
``segmentation_annotations``), loaded by ``POST keyvalues`` at the root, which is then
committed (the commit writes the version's table snapshot); a child version then
rewrites 1% of the bodies. Timed, in interleaved rounds (a, b, c, a, b, c...) so the
load of a shared machine falls on all alike, at the committed root and at the open child:

* ``query`` by one field value (``{"type": ...}``, about 0.1% of bodies match) and by a
  regular expression (``{"instance": "re/^T4"}``, about 2%), whole documents returned;
* ``all?fields=type,instance`` (every body, uncompressed: the client sends no
  ``Accept-Encoding``);
* one key ``POST`` (open child only: a committed version refuses writes);

beside baselines measured in the same run: ``GET key`` of a keyvalue record of the same
size at the same node (the cost of any request), and a numpy scan comparing 200,000
int32 codes (the floor of a query that touches every body). Then the first query of a
fresh server process at the committed root (its table read from the snapshot) and at
the open child. DVID keeps the HEAD version in memory (memstore.go); here only locked
versions' tables are kept (an LRU), and an open version is its parent's table plus its
own records, revalidated per request by one small read.

    python -m bench.neuronjson [--quick] [--bodies N] [--s3-bodies N] [--stores local,s3]

On S3 the store is a moto server on the same 2 cores, which serves about 150 requests/s:
loading 200,000 bodies there (two requests a body) would take most of an hour, so S3
loads ``--s3-bodies`` (default 20,000) unless told otherwise; its figures are per-request
costs at that size, and the local run shows how they grow to 200,000.

Timed requests go through a keep-alive ``http.client`` connection. Times are medians;
progress bars go to stderr, figures to stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from app.proto import keyvalue_pb2 as pb
from bench.annotations import Progress
from bench.imageblk import Lean, medians, ok
from bench.kv_throughput import Backend, dvid_server, local_backend, s3_backend

BATCH = 5_000
TYPES = 1_000  # distinct cell types; each has instances _L and _R
EDIT_SHARE = 0.01
NAME = "segmentation_annotations"
STATUSES = ["Traced", "Roughly traced", "Prelim Roughly traced", "Anchor", "Orphan"]


def document(rng: random.Random, bodyid: int) -> dict:
    """About 10 fields, as Clio's annotations have (types drawn from TYPES, ``T4a`` ...)."""
    kind = rng.randrange(TYPES)
    type_ = f"T{kind % 9}{chr(97 + kind // 9 % 26)}{kind // 234}"
    side = rng.choice("LR")
    return {
        "bodyid": bodyid,
        "type": type_,
        "instance": f"{type_}_{side}",
        "status": rng.choice(STATUSES),
        "class": rng.choice(["ascending neuron", "descending neuron", "intrinsic", "sensory"]),
        "group": rng.randrange(10**4, 10**5),
        "soma_side": side,
        "position": [rng.randrange(40_000) for _ in range(3)],
        "hemilineage": rng.choice(["0A", "0B", "1A", "12B", "19A", "TBD"]),
        "description": f"traced by proofreader {rng.randrange(60)}",
    }


def post_batches(http: httpx.Client, node: str, docs: list[dict], label: str) -> float:
    progress = Progress(label, len(docs))
    t = time.perf_counter()
    for i in range(0, len(docs), BATCH):
        kvs = pb.KeyValues()
        for doc in docs[i : i + BATCH]:
            kvs.kvs.add(key=str(doc["bodyid"]), value=json.dumps(doc).encode())
        ok(
            http.post(
                f"/api/node/{node}/{NAME}/keyvalues",
                content=kvs.SerializeToString(),
                params={"u": "loader"},
            )
        )
        progress.advance(len(docs[i : i + BATCH]))
    progress.close()
    return time.perf_counter() - t


def numpy_scan(n: int) -> Callable[[], object]:
    codes = np.random.default_rng(0).integers(0, TYPES, n).astype(np.int32)
    return lambda: np.flatnonzero(codes == 7)


def run_store(kind: str, folder: Path, bodies: int, reps: int) -> None:
    work = folder / kind
    work.mkdir()
    maker = {"local": local_backend, "s3": s3_backend}[kind]
    rng = random.Random(1)
    docs = [document(rng, 10**6 + 7 * i) for i in range(bodies)]
    with maker(work) as backend:
        root, child, by_value = measure(kind, backend, work, docs, reps)
        # A fresh process: the committed root's table comes from its snapshot (one read).
        with dvid_server(backend, work) as url:
            lean = Lean(url)
            firsts = {}
            for label, node in (("committed root", root), ("open child", child)):
                t = time.perf_counter()
                lean.post(f"/api/node/{node}/{NAME}/query", by_value)
                firsts[label] = time.perf_counter() - t
            lean.close()
    print(
        f"  fresh server process, first query: at the committed root "
        f"{firsts['committed root'] * 1000:.0f} ms (table from its snapshot), then at the "
        f"open child {firsts['open child'] * 1000:.0f} ms"
    )


def measure(
    kind: str, backend: Backend, work: Path, docs: list[dict], reps: int
) -> tuple[str, str, bytes]:
    """Load, commit, edit at a child, then the timed figures; returns the nodes."""
    bodies = len(docs)
    rng = random.Random(2)
    wanted_type = docs[0]["type"]
    with (
        dvid_server(backend, work) as url,
        httpx.Client(base_url=url, timeout=3600) as http,
    ):
        root = ok(http.post("/api/repos", json={})).json()["root"]
        for typename, name in (("neuronjson", NAME), ("keyvalue", "kv")):
            body = {"typename": typename, "dataname": name}
            ok(http.post(f"/api/repo/{root}/instance", json=body))
        size = len(json.dumps(docs[0]))
        ok(http.post(f"/api/node/{root}/kv/key/probe", content=b"x" * size))
        load = post_batches(http, root, docs, f"{kind}: load {bodies:,} bodies")
        t = time.perf_counter()
        ok(http.post(f"/api/node/{root}/commit", json={"note": "loaded"}))
        commit = time.perf_counter() - t
        child = ok(http.post(f"/api/node/{root}/newversion", json={})).json()["child"]
        edits = [dict(d, status="Anchor") for d in rng.sample(docs, int(bodies * EDIT_SHARE))]
        post_batches(http, child, edits, f"{kind}: edit {len(edits):,} at child")
        print(
            f"\n{kind}: {bodies:,} bodies loaded by POST keyvalues ({BATCH:,} per request) in "
            f"{load:.1f} s ({bodies / load:,.0f} bodies/s); commit (writes the snapshot) "
            f"{commit:.1f} s; {len(edits):,} bodies rewritten at the open child"
        )
        lean = Lean(url)
        by_value = json.dumps({"type": wanted_type}).encode()
        by_regex = json.dumps({"instance": "re/^T4"}).encode()
        counts = {}
        for label, node in (("committed root", root), ("open child", child)):
            base = f"/api/node/{node}/{NAME}"
            n_value = len(json.loads(lean.post(f"{base}/query", by_value)))
            n_regex = len(json.loads(lean.post(f"{base}/query", by_regex)))
            counts[label] = (n_value, n_regex)
        for label, node in (("committed root", root), ("open child", child)):
            base = f"/api/node/{node}/{NAME}"
            post_doc = json.dumps(dict(docs[1], status="Traced")).encode()
            fns: dict[str, Callable[[], object]] = {
                "baseline: keyvalue GET key": lambda n=node: lean.get(
                    f"/api/node/{n}/kv/key/probe"
                ),
                "baseline: numpy scan": numpy_scan(bodies),
                "query by value": lambda b=base: lean.post(f"{b}/query", by_value),
                "query by regex": lambda b=base: lean.post(f"{b}/query", by_regex),
                "all?fields=type,instance": lambda b=base: lean.get(
                    f"{b}/all?fields=type,instance"
                ),
            }
            if node == child:
                key = f"{base}/key/{docs[1]['bodyid']}?u=bench"
                fns["POST key (one body)"] = lambda k=key, d=post_doc: lean.post(k, d)
            times = medians(fns, reps)
            n_value, n_regex = counts[label]
            print(f"  at the {label}:")
            for name, secs in times.items():
                extra = {"query by value": f"{n_value:,} matches", "query by regex":
                         f"{n_regex:,} matches", "all?fields=type,instance":
                         f"{bodies:,} bodies"}.get(name, "")  # fmt: skip
                ratio = secs / times["baseline: keyvalue GET key"]
                print(f"    {name:<28} {secs * 1000:9.2f} ms  {ratio:7.1f}x GET key   {extra}")
        lean.close()
    return root, child, by_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 bodies, fewer rounds")
    parser.add_argument("--bodies", type=int, default=None)
    parser.add_argument("--stores", default="local,s3")
    parser.add_argument("--s3-bodies", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args()
    bodies = args.bodies or (20_000 if args.quick else 200_000)
    reps = args.reps or (5 if args.quick else 15)
    print(f"neuronjson: bodies of ~10 fields, medians of {reps} interleaved rounds")
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.stores.split(","):
            n = (args.s3_bodies or min(bodies, 20_000)) if kind == "s3" else bodies
            run_store(kind, Path(folder), n, reps)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
