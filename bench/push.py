"""Push of one new version that changed 1 % of a volume: bytes sent ÷ bytes changed.

Issue 18's goal is ≤ 1.1. Builds a uint8blk volume on a local-folder store (random
voxels, so compression cannot hide anything), commits it, pushes it to a second folder,
then writes 1 % of its blocks (whole blocks at random places) in a committed child and
pushes that child. Prints, beside each other, from the same run:

* the push of the child: objects and bytes sent, seconds;
* bytes changed: the stored chunks the child wrote (what any transfer must send), and
  the raw voxel bytes they hold;
* baselines: copying just those chunk objects (the ideal), and copying the whole source
  store (what a transfer without versions would send).

    python -m bench.push [--size 256] [--block 16] [--changed 0.01]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from fastapi.testclient import TestClient

from app.server import create_app
from app.settings import Settings
from app.transfer import engine
from app.transfer.cli import open_end


def ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code < 300, response.text
    return response


def build(
    client: TestClient, size: int, block: int, changed: float, seed: int
) -> tuple[str, str, int]:
    """Root with the whole volume, committed child with ``changed`` of its blocks
    rewritten; returns (root, child, raw bytes changed)."""
    rng = np.random.default_rng(seed)
    root = ok(client.post("/api/repos", json={})).json()["root"]
    ok(
        client.post(
            f"/api/repo/{root}/instance",
            json={
                "typename": "uint8blk",
                "dataname": "grey",
                "BlockSize": f"{block},{block},{block}",
            },
        )
    )
    slab = max(block, 64)
    for z in range(0, size, slab):
        data = rng.integers(0, 256, (slab, size, size), dtype=np.uint8)
        ok(
            client.post(
                f"/api/node/{root}/grey/raw/0_1_2/{size}_{size}_{slab}/0_0_{z}",
                content=data.tobytes(),
            )
        )
    ok(client.post(f"/api/node/{root}/commit", json={}))
    child = ok(client.post(f"/api/node/{root}/newversion", json={})).json()["child"]
    per_axis = size // block
    count = max(1, round(changed * per_axis**3))
    picks = rng.choice(per_axis**3, size=count, replace=False)
    for pick in picks:
        bz, rem = divmod(int(pick), per_axis * per_axis)
        by, bx = divmod(rem, per_axis)
        data = rng.integers(0, 256, (block, block, block), dtype=np.uint8)
        offset = f"{bx * block}_{by * block}_{bz * block}"
        ok(
            client.post(
                f"/api/node/{child}/grey/raw/0_1_2/{block}_{block}_{block}/{offset}",
                content=data.tobytes(),
            )
        )
    ok(client.post(f"/api/node/{child}/commit", json={}))
    return root, child, count * block**3


def push(source: str, dest: str, uuid: str) -> tuple[engine.Plan, float]:
    src, dst = open_end(source, None), open_end(dest, None)
    t = time.perf_counter()
    planned = engine.plan(src, dst, uuid)
    dst.prepare()
    engine.copy(src, dst, planned.items, lambda n: None)
    engine.finish(src, dst, planned)
    return planned, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="Edge of the cubic volume.")
    parser.add_argument("--block", type=int, default=16, help="Block (chunk) edge.")
    parser.add_argument("--changed", type=float, default=0.01, help="Fraction of blocks.")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a, b, ideal, whole = (str(Path(tmp) / n) for n in ("a", "b", "ideal", "whole"))
        with TestClient(create_app(Settings(data_dir=a))) as client:
            root, child, raw_changed = build(client, args.size, args.block, args.changed, args.seed)
        push(a, b, root)
        planned, seconds = push(a, b, child)
        chunks = [p for p in Path(a).rglob(f"s0/{child}/c/**/*") if p.is_file()]
        stored_changed = sum(p.stat().st_size for p in chunks)
        t = time.perf_counter()
        for p in chunks:
            target = Path(ideal) / p.relative_to(a)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
        ideal_seconds = time.perf_counter() - t
        t = time.perf_counter()
        shutil.copytree(a, whole)
        whole_seconds = time.perf_counter() - t
        whole_bytes = sum(p.stat().st_size for p in Path(whole).rglob("*") if p.is_file())

    print(
        f"volume {args.size}³ uint8, blocks {args.block}³, child rewrote {len(chunks)} blocks "
        f"({args.changed:.1%})"
    )
    print(f"{'':34}{'objects':>9}{'bytes':>13}{'seconds':>9}")
    print(f"{'push of the child':34}{len(planned.items):>9}{planned.nbytes:>13}{seconds:>9.3f}")
    label = "baseline: copy changed chunks"
    print(f"{label:34}{len(chunks):>9}{stored_changed:>13}{ideal_seconds:>9.3f}")
    print(f"{'baseline: copy whole store':34}{'':>9}{whole_bytes:>13}{whole_seconds:>9.3f}")
    ratio = planned.nbytes / stored_changed
    print(f"bytes sent ÷ bytes changed (stored chunks): {ratio:.4f}  (goal ≤ 1.1)")
    print(f"bytes sent ÷ raw voxel bytes changed:       {planned.nbytes / raw_changed:.4f}")


if __name__ == "__main__":
    main()
