"""labelmap's write path against plain oracles: the 2x2x2 mode, per-block label counts,
mapping partitions read without ``np.load``, background writes, and what a sequence of
overlapping ``POST raw`` leaves (label index, lower scales) against a recomputation from
the scale-0 voxels alone."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter

import numpy as np
import pytest

from app.datatypes.labelmap import codecs, ingest
from app.datatypes.labelmap.ingest import mode_downsample, supervoxel_counts
from app.proto import labelmap_pb2 as pb
from app.storage import idmap, parallel
from tests.conftest import Api

BLOCK = 16
BIG = np.uint64(2**63 + 5)


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def dvid_mode(volume: np.ndarray) -> np.ndarray:
    """DVID's rule, one cell at a time: the most frequent non-zero label, the smallest on
    a tie, 0 only for eight zeros."""
    nz, ny, nx = volume.shape
    out = np.zeros((nz // 2, ny // 2, nx // 2), np.uint64)
    for z, y, x in np.ndindex(*out.shape):
        cell = volume[2 * z : 2 * z + 2, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].ravel().tolist()
        counts = Counter(v for v in cell if v != 0)
        if counts:
            top = max(counts.values())
            out[z, y, x] = min(v for v, n in counts.items() if n == top)
    return out


def labels(rng: np.random.Generator, shape: tuple[int, ...], choices: list[int]) -> np.ndarray:
    return np.array(choices, np.uint64)[rng.integers(0, len(choices), size=shape)]


@pytest.mark.parametrize("seed", range(6))
def test_mode_downsample_is_dvids_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    few = labels(rng, (8, 6, 10), [0, 3, 4, 9])  # ties and zeros everywhere
    wide = labels(rng, (4, 4, 4), [0, 1, int(BIG), 2**64 - 1])  # ids past int64
    runs = np.repeat(labels(rng, (6, 8, 3), [0, 7, 8]), 4, axis=2)  # mostly uniform cells
    for volume in (few, wide, runs, np.zeros((2, 2, 2), np.uint64)):
        got = mode_downsample(volume)
        assert got.dtype == np.uint64
        np.testing.assert_array_equal(got, dvid_mode(volume))


@pytest.mark.parametrize(
    "voxels",
    [
        np.repeat(np.arange(5, dtype=np.uint64), 40).reshape(5, 4, 10),
        np.random.default_rng(1).integers(0, 2**64 - 1, size=(4, 5, 6), dtype=np.uint64),
        np.full((3, 3, 3), BIG),
        np.array([[[2, 2, 0, 2, 1, 1, 2**64 - 1]]], np.uint64),
    ],
    ids=["runs", "noise", "uniform", "repeats"],
)
def test_supervoxel_counts_is_unique_with_counts(voxels: np.ndarray) -> None:
    svs, counts = supervoxel_counts(voxels)
    want_svs, want_counts = np.unique(voxels, return_counts=True)
    np.testing.assert_array_equal(svs, want_svs)
    np.testing.assert_array_equal(counts, want_counts)
    assert svs.dtype == np.uint64


def npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


@pytest.mark.parametrize("n", [0, 1, 7, 5000])
def test_partitions_parse_without_np_load(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    keys_ = np.sort(np.random.default_rng(n).integers(0, 2**64 - 1, size=n, dtype=np.uint64))
    values = keys_ ^ np.uint64(12345)

    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("np.load used for a partition this module wrote")

    monkeypatch.setattr(idmap.np, "load", refuse)
    got_keys, got_values = idmap._parse_partition(npz(sv=keys_, body=values))
    np.testing.assert_array_equal(got_keys, keys_)
    np.testing.assert_array_equal(got_values, values)
    assert got_keys.dtype == got_values.dtype == np.dtype("<u8")


@pytest.mark.parametrize(
    "arrays",
    [
        {"sv": np.arange(4, dtype=np.int64), "body": np.arange(4, dtype=np.int64)},
        {"sv": np.arange(4, dtype=">u8"), "body": np.arange(4, dtype=">u8")},
        {"sv": np.arange(6, dtype=np.uint64).reshape(2, 3), "body": np.arange(6, dtype=np.uint64)},
    ],
    ids=["int64", "big-endian", "2-d"],
)
def test_other_partition_forms_go_through_np_load(arrays: dict[str, np.ndarray]) -> None:
    got_keys, got_values = idmap._parse_partition(npz(**arrays))
    np.testing.assert_array_equal(got_keys, arrays["sv"])
    np.testing.assert_array_equal(got_values, arrays["body"])


def test_background_waits_for_every_call_even_when_the_body_fails() -> None:
    finished: list[int] = []
    release = threading.Event()

    def slow(i: int) -> None:
        release.wait(5)
        finished.append(i)

    with pytest.raises(KeyError), parallel.background() as start:
        for i in range(3):
            start(lambda i=i: slow(i))
        release.set()
        raise KeyError("the body failed")
    assert sorted(finished) == [0, 1, 2]


def test_background_raises_a_calls_error_after_the_others() -> None:
    finished: list[str] = []

    def fail() -> None:
        raise ValueError("a write failed")

    def later() -> None:
        time.sleep(0.05)
        finished.append("later")

    with pytest.raises(ValueError, match="a write failed"), parallel.background() as start:
        start(fail)
        start(later)
    assert finished == ["later"]


# --- the whole write path over HTTP --------------------------------------------------------


def post_raw(api: Api, node: str, offset: tuple[int, int, int], voxels: np.ndarray) -> None:
    nz, ny, nx = voxels.shape
    path = f"/api/node/{node}/seg/raw/0_1_2/{nx}_{ny}_{nz}/{'_'.join(map(str, offset))}"
    r = api.c.post(path, content=voxels.tobytes())
    assert r.status_code == 200, r.text


def read(api: Api, node: str, edge: int, scale: int, supervoxels: bool = True) -> np.ndarray:
    query = f"scale={scale}" + ("&supervoxels=true" if supervoxels else "")
    r = api.c.get(f"/api/node/{node}/seg/raw/0_1_2/{edge}_{edge}_{edge}/0_0_0?{query}")
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, "<u8").reshape(edge, edge, edge)


def test_overlapping_writes_leave_the_index_and_scales_of_the_final_voxels(api: Api) -> None:
    """Whole-parent writes (no lower-scale read), partial ones (the untouched octants
    kept), rewrites that drop supervoxels from blocks, under a mapping that folds two
    supervoxels into one body: every label index and lower scale must be what the final
    scale-0 voxels alone say."""
    root = api.new_repo()
    api.new_instance(
        root, "labelmap", "seg", BlockSize=f"{BLOCK},{BLOCK},{BLOCK}", MaxDownresLevel="2"
    )
    merged = {11: 900, 13: 900}
    ops = pb.MappingOps()
    ops.mappings.add(mapped=900, original=[11, 13])
    assert api.c.post(f"/api/node/{root}/seg/mappings", content=ops.SerializeToString()).is_success
    rng = np.random.default_rng(3)
    ids = [0, 11, 12, 13, int(BIG), 2**40 + 1]
    edge = 4 * BLOCK
    # piecewise constant along x (runs) with noise, as segmentations are
    post_raw(api, root, (0, 0, 0), np.repeat(labels(rng, (edge, edge, edge // 4), ids), 4, axis=2))
    post_raw(api, root, (BLOCK, 0, BLOCK), labels(rng, (BLOCK, BLOCK, BLOCK), ids))
    post_raw(api, root, (0, 2 * BLOCK, 0), np.full((2 * BLOCK,) * 3, 12, np.uint64))
    post_raw(api, root, (3 * BLOCK, 3 * BLOCK, 3 * BLOCK), labels(rng, (BLOCK,) * 3, [0, 11, 14]))

    voxels = read(api, root, edge, 0)
    expected = voxels
    for scale in (1, 2):
        expected = dvid_mode(expected)
        np.testing.assert_array_equal(read(api, root, edge >> scale, scale), expected)

    bodies = bodies_in(voxels, merged)
    for body in sorted(set(np.unique(bodies).tolist()) - {0}):
        r = api.c.get(f"/api/node/{root}/seg/index/{body}")
        assert r.status_code == 200, (body, r.text)
        index = pb.LabelIndex()
        index.ParseFromString(r.content)
        got = {
            codecs.decode_block_key(key): dict(entry.counts) for key, entry in index.blocks.items()
        }
        want: dict[tuple[int, int, int], dict[int, int]] = {}
        for z, y, x in np.ndindex(4, 4, 4):
            block = voxels[z * BLOCK : (z + 1) * BLOCK, y * BLOCK : (y + 1) * BLOCK]
            block = block[:, :, x * BLOCK : (x + 1) * BLOCK]
            svs, counts = np.unique(block[bodies_in(block, merged) == body], return_counts=True)
            if svs.size:
                want[(x, y, z)] = dict(zip(svs.tolist(), counts.tolist(), strict=True))
        assert got == want, body
    assert api.c.get(f"/api/node/{root}/seg/index/12345").status_code == 404


def bodies_in(block: np.ndarray, merged: dict[int, int]) -> np.ndarray:
    return np.vectorize(lambda v: merged.get(int(v), int(v)), otypes=[np.uint64])(block)


def test_a_failed_lower_scale_fails_the_write_after_the_index_is_done(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lower scales are computed on their own thread: their failure is the POST's,
    raised only once the index work is over, and the transaction publishes nothing."""
    root = api.new_repo()
    api.new_instance(
        root, "labelmap", "seg", BlockSize=f"{BLOCK},{BLOCK},{BLOCK}", MaxDownresLevel="1"
    )
    before = np.full((BLOCK,) * 3, 7, np.uint64)
    post_raw(api, root, (0, 0, 0), before)
    finished: list[str] = []
    update = ingest._update_indices

    def slow_index(*args: object, **kwargs: object) -> None:
        time.sleep(0.2)
        update(*args, **kwargs)  # type: ignore[arg-type]
        finished.append("index")

    def fail(*_args: object, **_kwargs: object) -> None:
        raise ValueError("lower scale failed")

    monkeypatch.setattr(ingest, "_update_indices", slow_index)
    monkeypatch.setattr(ingest, "downres_blocks", fail)
    path = f"/api/node/{root}/seg/raw/0_1_2/{BLOCK}_{BLOCK}_{BLOCK}/0_0_0"
    with pytest.raises(ValueError, match="lower scale failed"):
        api.c.post(path, content=np.full((BLOCK,) * 3, 9, np.uint64).tobytes())
    assert finished == ["index"]
    monkeypatch.undo()
    np.testing.assert_array_equal(read(api, root, BLOCK, 0), before)
    r = api.c.get(f"/api/node/{root}/seg/index/9")
    assert r.status_code == 404, r.text
