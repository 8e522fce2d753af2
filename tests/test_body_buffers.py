"""Body buffers (app/buffers.py): request bodies are received into kept arrays, and a kept
array is handed out again only once nothing refers to it."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from app.buffers import BodyBuffers, advise_huge_pages
from app.server import create_app
from app.settings import Settings

MiB = 1 << 20


def _owner(array: np.ndarray) -> np.ndarray:
    return array if array.base is None else array.base


def _kept(array: np.ndarray) -> weakref.ref[np.ndarray]:
    """The buffer under ``array``, named without holding it (the pool would see it used)."""
    return weakref.ref(_owner(array))


def test_a_buffer_is_handed_out_again_once_dropped() -> None:
    pool = BodyBuffers(4 * MiB)
    first = pool.take(MiB)
    kept = _kept(first)
    del first
    assert _owner(pool.take(MiB)) is kept()


def test_a_buffer_with_a_live_view_is_not_handed_out() -> None:
    """A view of a view (as blocks of a received body are) still holds the buffer."""
    pool = BodyBuffers(4 * MiB)
    body = pool.take(MiB)
    body[:] = 1
    kept = _kept(body)
    block = body.view(np.uint64).reshape(64, 64, 32)[:32, :32]
    del body
    other = pool.take(MiB)
    assert _owner(other) is not kept()
    other[:] = 7
    assert (block == np.uint64(0x0101010101010101)).all()
    del block
    assert _owner(pool.take(MiB)) is kept()


def test_a_smaller_body_reuses_a_larger_free_buffer() -> None:
    pool = BodyBuffers(4 * MiB)
    kept = pool.take(2 * MiB)
    del kept
    small = pool.take(MiB)
    assert small.size == MiB
    assert small.base is not None and small.base.size == 2 * MiB
    assert pool.held == 2 * MiB


def test_what_is_kept_stays_within_the_capacity() -> None:
    pool = BodyBuffers(3 * MiB)
    big = pool.take(4 * MiB)  # over the capacity: its own, not kept
    assert pool.held == 0
    one = pool.take(MiB)
    two = pool.take(2 * MiB)
    assert pool.held == 3 * MiB
    del big, one, two
    three = pool.take(3 * MiB)  # the free ones are too small: dropped to make room
    assert pool.held == 3 * MiB
    assert _owner(pool.take(MiB)) is not _owner(three)  # in use: not handed out
    assert pool.held == 3 * MiB  # nor dropped for the new one


def test_consecutive_posts_reuse_one_buffer_and_keep_their_voxels(tmp_path: Path) -> None:
    """Two 64³ POSTs of a uint8blk are received into the same kept buffer; the first's
    voxels were stored before the second overwrote it."""
    app = create_app(Settings(data_dir=tmp_path))
    with TestClient(app) as client:
        root = client.post("/api/repos", json={}).json()["root"]
        created = client.post(
            f"/api/repo/{root}/instance",
            json={"typename": "uint8blk", "dataname": "em", "BlockSize": "32,32,32"},
        )
        assert created.status_code == 200, created.text
        rng = np.random.default_rng(5)
        volumes = [rng.integers(1, 255, (64, 64, 64), dtype=np.uint8) for _ in range(2)]
        for i, voxels in enumerate(volumes):
            path = f"/api/node/{root}/em/raw/0_1_2/64_64_64/{64 * i}_0_0"
            posted = client.post(path, content=voxels.tobytes())
            assert posted.status_code == 200, posted.text
        assert app.state.services.buffers.held == 64**3
        for i, voxels in enumerate(volumes):
            got = client.get(f"/api/node/{root}/em/raw/0_1_2/64_64_64/{64 * i}_0_0")
            assert got.content == voxels.tobytes()


def _numpy_advises_huge_pages() -> bool:
    was = advise_huge_pages(True)
    advise_huge_pages(was)
    return was


def test_the_huge_pages_setting_is_numpys_advice(tmp_path: Path) -> None:
    """numpy advises huge pages for large arrays only where ``huge_pages`` says so (off by
    default: fresh huge pages are slow on a VM that returns freed memory to its host)."""
    try:
        for settings in (Settings(data_dir=tmp_path, huge_pages=True), Settings(data_dir=tmp_path)):
            with TestClient(create_app(settings)):
                assert _numpy_advises_huge_pages() is settings.huge_pages
    finally:
        advise_huge_pages(False)
