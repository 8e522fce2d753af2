"""Block-aligned ``POST raw`` bodies staged slab by slab as they arrive
(:meth:`app.volumes.base.VolumeData.receive_staged`), for labelmap and imageblk: a body
sent in small pieces writes what the whole body says, and a body of the wrong length is
refused after its slabs were staged, leaving the voxels as they were."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from app.proto import labelmap_pb2 as pb
from tests.conftest import Api

BLOCK = 16
SHAPE = (3 * BLOCK, 2 * BLOCK, 2 * BLOCK)  # z, y, x: three slabs of blocks along z
OFFSET = (BLOCK, 0, 2 * BLOCK)  # x, y, z


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest) -> str:
    """The staging is the same on every store; the cloud ones add only minutes."""
    return request.param


def pieces(body: bytes, size: int = 1000) -> Iterator[bytes]:
    """The body as a slow client sends it: many pieces, none aligned to a slab."""
    for at in range(0, len(body), size):
        yield body[at : at + size]


def path(root: str, kind: str = "raw") -> str:
    nz, ny, nx = SHAPE
    return f"/api/node/{root}/v/{kind}/0_1_2/{nx}_{ny}_{nz}/{'_'.join(map(str, OFFSET))}"


def read(api: Api, root: str, dtype: type) -> np.ndarray:
    r = api.c.get(path(root) + ("?supervoxels=true" if dtype is np.uint64 else ""))
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, dtype).reshape(SHAPE)


@pytest.mark.parametrize("typename", ["labelmap", "uint8blk"])
def test_streamed_bodies_are_staged_whole_or_refused(api: Api, typename: str) -> None:
    dtype = np.uint64 if typename == "labelmap" else np.uint8
    root = api.new_repo()
    api.new_instance(root, typename, "v", BlockSize=f"{BLOCK},{BLOCK},{BLOCK}")
    rng = np.random.default_rng(7)
    old = np.repeat(rng.integers(1, 200, (*SHAPE[:2], SHAPE[2] // 4)), 4, axis=2).astype(dtype)
    r = api.c.post(path(root), content=pieces(old.tobytes()))
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(read(api, root, dtype), old)

    new = old + dtype(1)
    body = new.tobytes()
    for bad in (body[:-8], body + bytes(8), body[: len(body) // 2]):
        r = api.c.post(path(root), content=pieces(bad))
        assert r.status_code == 400, r.text
        assert "bytes" in r.text
        np.testing.assert_array_equal(read(api, root, dtype), old)

    r = api.c.post(path(root), content=pieces(body, 4096))
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(read(api, root, dtype), new)
    if typename == "labelmap":  # the index counts the staged voxels, not the refused
        for label in {int(new[0, 0, 0]), int(new[-1, -1, -1])}:
            r = api.c.get(f"/api/node/{root}/v/index/{label}")
            assert r.status_code == 200, r.text
            index = pb.LabelIndex()
            index.ParseFromString(r.content)
            counted = sum(n for entry in index.blocks.values() for n in entry.counts.values())
            assert counted == int((new == label).sum())
