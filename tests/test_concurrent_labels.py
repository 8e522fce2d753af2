"""Derived records stay exact under concurrent writers: one real server, then two real
server processes on one store (a shared folder, and a moto bucket), each with 8 client
threads POSTing overlapping label writes (POST raw of 64³ boxes at 32-voxel offsets in a
volume of 32³ blocks, so concurrent writes share blocks, and POST blocks) for
``DVID_TEST_RACE_SECONDS`` (6 s).

Afterwards every label's index (blocks and counts), size and listing equal a recount of
the voxels, maxlabel is the largest label written, and scale 1 is the mode of scale 0.

Six seconds is enough to catch lost or doubled index updates: the volume has only 64
blocks and 22 labels, each raw write covers 8 of the blocks and 8 writers are always in
flight, so practically every write overlaps another on blocks and labels. A trial run
completed about 55 writes per variant on a folder and about 15 on moto (every one of them
racing 7 others); a missing lock or conditional update loses updates within a few such
overlaps. The test asserts at least one acknowledged write per thread, so a slow
machine cannot make it vacuous. Set ``DVID_TEST_RACE_SECONDS=60`` for a soak run.
"""

from __future__ import annotations

import gzip
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.datatypes.labelmap import codecs
from tests.dvid_process import DvidServer
from tests.fixtures_stores import (
    AWS_TEST_REGION,
    isolated_server_env,
    make_s3_store,
)
from tests.label_checks import index_problems, node_url

SECONDS = float(os.environ.get("DVID_TEST_RACE_SECONDS", "6"))
THREADS = 8
SIZE = 128  # the volume: 4x4x4 blocks of 32³
BLOCK = 32
LABELS = list(range(1, 23))


def _servers(tmp: Path, count: int, store: str, s3_endpoint: str | None) -> list[DvidServer]:
    env = isolated_server_env(tmp)
    if store == "folder":
        return [
            DvidServer(tmp / f"server-{i}.log", env, data_dir=tmp / "data") for i in range(count)
        ]
    assert s3_endpoint is not None
    bucket = make_s3_store(s3_endpoint)  # creates a fresh bucket
    config = tmp / "dvid.toml"
    config.write_text(
        f'[store.main]\npath = "s3://{bucket.bucket}/race"\n'
        f'endpoint = "{s3_endpoint}"\nregion = "{AWS_TEST_REGION}"\n\n'
        '[backend]\ndefault = "main"\n'
    )
    return [DvidServer(tmp / f"server-{i}.log", env, config=config) for i in range(count)]


@pytest.fixture(
    params=[(1, "folder"), (2, "folder"), (2, "s3")],
    ids=["one-server", "two-servers-folder", "two-servers-s3"],
)
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[DvidServer]]:
    count, store = request.param
    endpoint = request.getfixturevalue("s3_endpoint") if store == "s3" else None
    started = [s.start() for s in _servers(tmp_path, count, store, endpoint)]
    yield started
    for server in started:
        server.stop()


def _labels_box(rng: random.Random, shape: tuple[int, int, int]) -> np.ndarray:
    """A few slabs of different labels (segmentation-like runs, cheap to compress)."""
    out = np.empty(shape, np.uint64)
    cuts = sorted(rng.sample(range(1, shape[0]), 2))
    for lo, hi in zip([0, *cuts], [*cuts, shape[0]], strict=True):
        out[lo:hi] = rng.choice(LABELS)
    return out


def _writer(base: str, uuid: str, seed: int, until: float, tally: dict[str, int]) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < until:
            if rng.random() < 0.75:
                offset = [rng.choice((0, 32, 64)) for _ in range(3)]
                box = _labels_box(rng, (64, 64, 64))
                path = f"raw/0_1_2/64_64_64/{offset[0]}_{offset[1]}_{offset[2]}"
                body = box.tobytes()
            else:
                coord = tuple(rng.choice((0, 1, 2, 3)) for _ in range(3))
                block = _labels_box(rng, (BLOCK, BLOCK, BLOCK))
                path = "blocks?downres=true"
                body = codecs.write_block_stream(
                    [(coord, gzip.compress(codecs.encode_block(block), 1))]
                )
            r = client.post(node_url(base, uuid, "seg", path), content=body)
            key = str(r.status_code)
            tally[key] = tally.get(key, 0) + 1
            if r.status_code not in (200, 503):
                tally["error: " + r.text[:200]] = 1


def test_concurrent_label_writes_keep_records_exact(servers: list[DvidServer]) -> None:
    first = servers[0].url
    with httpx.Client(timeout=60) as client:
        r = client.post(f"{first}/api/repos", json={"alias": "race"})
        uuid = r.json()["root"]
        r = client.post(
            f"{first}/api/repo/{uuid}/instance",
            json={
                "typename": "labelmap",
                "dataname": "seg",
                "BlockSize": "32,32,32",
                "MaxDownresLevel": "1",
            },
        )
        assert r.status_code == 200, r.text
    until = time.monotonic() + SECONDS
    tallies: list[dict[str, int]] = [{} for _ in range(THREADS)]
    threads = [
        threading.Thread(
            target=_writer,
            args=(servers[i % len(servers)].url, uuid, i, until, tallies[i]),
        )
        for i in range(THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SECONDS + 120)
    total: dict[str, int] = {}
    for tally in tallies:
        for k, v in tally.items():
            total[k] = total.get(k, 0) + v
    errors = {k: v for k, v in total.items() if k not in ("200", "503")}
    assert not errors, (errors, servers[0].log_tail())
    assert total.get("200", 0) >= THREADS, total  # the race really ran
    with httpx.Client(timeout=120) as client:
        for server in servers:  # every replica sees the same, exact records
            problems = index_problems(
                client, server.url, uuid, "seg", SIZE, BLOCK, LABELS, max(LABELS), max_scale=1
            )
            assert not problems, problems[:10]
