"""labelmap proofreading over HTTP: each edit's answer as DVID prints it, the reads that
follow it, the mutation log, label allocation, and refused edits that change nothing.
(Random edit sequences against a numpy model are in test_labelmap_oracle.py.)"""

from __future__ import annotations

import hashlib
import io
import re
import struct
from collections.abc import Iterator

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.datatypes.labelmap import codecs
from app.datatypes.labelmap.ingest import mode_downsample
from app.proto import labelmap_pb2 as pb
from app.server import create_app
from app.settings import Settings
from backends.memory import MemoryStore
from tests.conftest import Api

SIZE, BLOCK = 64, 32


def volume() -> np.ndarray:
    """Five supervoxels in x slabs (the last split along y), background below z=4."""
    z, y, x = np.mgrid[0:SIZE, 0:SIZE, 0:SIZE]
    vol = (1 + np.minimum(x // 16, 3)).astype(np.uint64)
    vol[(x >= 48) & (y >= 32)] = 5
    vol[z < 4] = 0
    return vol


#: Edits whose code paths are the same on every store run on the two embedded ones; merge
#: and split-supervoxel (mapping rewrites, voxel rewrites) run on every backend.
EMBEDDED = pytest.mark.parametrize("backend", ["memory", "local"], indirect=True)


def _ingest(api: Api) -> tuple[Api, str]:
    """A labelmap in a committed root holding :func:`volume`."""
    root = api.new_repo()
    api.new_instance(
        root, "labelmap", "seg", BlockSize=f"{BLOCK},{BLOCK},{BLOCK}", MaxDownresLevel="1"
    )
    r = api.c.post(url(root, f"raw/0_1_2/{SIZE}_{SIZE}_{SIZE}/0_0_0"), content=volume().tobytes())
    assert r.status_code == 200, r.text
    api.commit(root)
    return api, root


@pytest.fixture
def seg(api: Api) -> tuple[Api, str]:
    """:func:`volume` at a committed root, on every backend."""
    return _ingest(api)


@pytest.fixture
def seg_memory() -> Iterator[tuple[Api, str]]:
    """:func:`volume` at a committed root in memory: for the many refusal cases, which are
    decided before anything is stored (and a refused transaction publishes nothing,
    whatever the backend)."""
    with TestClient(create_app(Settings(), {"default": MemoryStore()})) as c:
        yield _ingest(Api(c))


def url(uuid: str, path: str) -> str:
    return f"/api/node/{uuid}/seg/{path}"


def get(c: TestClient, uuid: str, path: str, body: object = None) -> object:
    content = None if body is None else orjson.dumps(body)
    r = c.request("GET", url(uuid, path), content=content)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def raw(c: TestClient, uuid: str, scale: int = 0, **params: str) -> np.ndarray:
    n = SIZE >> scale
    r = c.get(url(uuid, f"raw/0_1_2/{n}_{n}_{n}/0_0_0"), params={"scale": scale, **params})
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, "<u8").reshape(n, n, n)


def rles(mask: np.ndarray) -> bytes:
    return codecs.encode_rles(codecs.rles_from_mask(mask))


def post(c: TestClient, uuid: str, path: str, body: bytes | object) -> dict:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    r = c.post(url(uuid, path), content=content)
    assert r.status_code == 200, (path, r.text)
    return r.json() if r.content else {}


def snapshot(c: TestClient, uuid: str) -> dict:
    """Everything an edit may change, as the API shows it."""
    listed = np.frombuffer(c.get(url(uuid, "listlabels")).content, "<u8").tolist()
    return {
        "raw": hashlib.sha256(raw(c, uuid).tobytes()).hexdigest(),
        "svs": hashlib.sha256(raw(c, uuid, supervoxels="true").tobytes()).hexdigest(),
        "scale1": hashlib.sha256(raw(c, uuid, 1, supervoxels="true").tobytes()).hexdigest(),
        "labels": listed,
        "sizes": get(c, uuid, "sizes", listed),
        "mapping": get(c, uuid, "mapping", list(range(12))),
        "mutations": get(c, uuid, "mutations"),
        "maxlabel": c.get(url(uuid, "maxlabel")).text,
    }


def test_merge_answers_like_dvid_and_every_read_follows(seg) -> None:
    api, root = seg
    child = api.newversion(root)
    r = api.c.post(url(child, "merge?u=ann&app=neu3"), content=b"[1, 2, 3]")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert re.fullmatch(rb'\{"MutationID": \d+\}', r.content), r.content
    mutid = r.json()["MutationID"]
    vol = volume()
    bodies = np.where(np.isin(vol, [2, 3]), 1, vol)
    np.testing.assert_array_equal(raw(api.c, child), bodies)
    np.testing.assert_array_equal(raw(api.c, child, supervoxels="true"), vol)
    np.testing.assert_array_equal(raw(api.c, child, 1), mode_downsample(bodies))
    blocks = api.c.get(url(child, f"blocks/{SIZE}_{SIZE}_{SIZE}/0_0_0?compression=blocks"))
    for (x, y, z), payload in codecs.read_block_stream(blocks.content):
        got = codecs.decode_block_payload(payload, "blocks", (BLOCK,) * 3)
        part = bodies[z * BLOCK : (z + 1) * BLOCK, y * BLOCK : (y + 1) * BLOCK]
        np.testing.assert_array_equal(got, part[:, :, x * BLOCK : (x + 1) * BLOCK])
    r = api.c.get(url(child, f"raw/0_1_2/{BLOCK}_{BLOCK}_{BLOCK}/0_0_{BLOCK}"),
                  params={"compression": "googlegzip"})  # fmt: skip
    first = bodies[BLOCK:, :BLOCK, :BLOCK]
    assert codecs.decode_google(r.content, first.shape).tolist() == first.tolist()
    chunk = api.c.get(url(child, f"precomputed/s0/0-{BLOCK}_0-{BLOCK}_{BLOCK}-{SIZE}"))
    assert chunk.content == codecs.encode_segmentation_chunk(first)
    assert get(api.c, child, "label/20_10_10") == {"Label": 1}
    assert get(api.c, child, "labels", [[20, 10, 10], [40, 10, 10], [60, 60, 10]]) == [1, 1, 5]
    assert get(api.c, child, "mapping", [1, 2, 3, 4]) == [1, 1, 1, 4]
    assert sorted(get(api.c, child, "supervoxels/1")) == [1, 2, 3]
    assert get(api.c, child, "size/1") == {"voxels": int((bodies == 1).sum())}
    assert get(api.c, child, "size/2?supervoxels=true") == {"voxels": int((vol == 2).sum())}
    assert api.c.get(url(child, "size/2")).status_code == 404
    assert get(api.c, child, "existing-labels") == [1, 4, 5]
    sparse = api.c.get(url(child, "sparsevol/1")).content
    mask = codecs.rles_to_mask(codecs.decode_rles(sparse), (0, 0, 0), (SIZE,) * 3)
    np.testing.assert_array_equal(mask, bodies == 1)
    last = get(api.c, child, "lastmod/1")
    assert last["mutation id"] == mutid
    assert (last["last mod user"], last["last mod app"]) == ("ann", "neu3")
    assert api.c.get(url(child, "lastmod/2")).status_code == 404
    (record,) = get(api.c, child, "mutations")
    assert record["Action"] == "merge-complete" and record["MutationID"] == mutid
    assert (record["Target"], record["Labels"], record["User"], record["App"]) == (
        1,
        [2, 3],
        "ann",
        "neu3",
    )
    assert record["UUID"] == child
    assert list(record) == sorted(record)  # Go marshals a map with sorted keys
    # the committed parent is untouched
    np.testing.assert_array_equal(raw(api.c, root), vol)
    assert get(api.c, root, "mapping", [2, 3]) == [2, 3]
    assert get(api.c, root, "mutations") == []


@EMBEDDED
def test_cleave_moves_supervoxels_to_a_new_label(seg) -> None:
    api, root = seg
    child = api.newversion(root)
    post(api.c, child, "merge", [1, 2, 3])
    before = get(api.c, child, "nextlabel")["nextlabel"]
    r = api.c.post(url(child, "cleave/1"), content=b"[3, 2]")
    assert re.fullmatch(rb'\{"CleavedLabel": \d+, "MutationID": \d+\}', r.content), r.content
    new = r.json()["CleavedLabel"]
    assert new == before
    assert get(api.c, child, "nextlabel") == {"nextlabel": new + 1}
    assert get(api.c, child, "maxlabel") == {"maxlabel": new}
    assert sorted(get(api.c, child, "supervoxels/" + str(new))) == [2, 3]
    assert get(api.c, child, "supervoxels/1") == [1]
    # the new id names a body, not a supervoxel: it maps to 0
    assert get(api.c, child, "mapping", [1, 2, 3, new]) == [1, new, new, 0]
    assert get(api.c, child, "mapping?nolookup=true", [new]) == [0]
    vol = volume()
    expected = np.where(np.isin(vol, [2, 3]), new, vol)
    np.testing.assert_array_equal(raw(api.c, child), expected)
    record = get(api.c, child, "mutations")[-1]
    assert record["Action"] == "cleave-complete"
    assert (record["OrigLabel"], record["CleavedLabel"], record["CleavedSupervoxels"]) == (
        1,
        new,
        [3, 2],
    )
    assert record["CleavedSize"] == int(np.isin(vol, [2, 3]).sum())
    assert record["RemainSize"] == int((vol == 1).sum())


@pytest.mark.parametrize("given", [False, True])
def test_split_supervoxel_retires_the_old_id(seg, given: bool) -> None:
    api, root = seg
    child = api.newversion(root)
    post(api.c, child, "merge", [4, 5])
    vol = volume()
    cut = (vol == 4) & (np.arange(SIZE)[None, None, :] >= 56)
    query = "?split=900&remain=901&downres=false" if given else ""
    r = api.c.post(url(child, f"split-supervoxel/4{query}"), content=rles(cut))
    assert re.fullmatch(
        rb'\{"SplitSupervoxel": \d+, "RemainSupervoxel": \d+, "MutationID": \d+\}', r.content
    ), r.content
    split, remain = r.json()["SplitSupervoxel"], r.json()["RemainSupervoxel"]
    if given:
        assert (split, remain) == (900, 901)
    expected = vol.copy()
    expected[cut] = split
    expected[(vol == 4) & ~cut] = remain
    np.testing.assert_array_equal(raw(api.c, child, supervoxels="true"), expected)
    np.testing.assert_array_equal(raw(api.c, child), np.where(np.isin(vol, [4, 5]), 4, vol))
    scale1 = raw(api.c, child, 1, supervoxels="true")
    # downres=false leaves the lower scale to the client
    wanted = mode_downsample(vol if given else expected)
    np.testing.assert_array_equal(scale1, wanted)
    assert get(api.c, child, "mapping", [4, split, remain]) == [0, 4, 4]
    assert get(api.c, child, f"size/{split}?supervoxels=true") == {"voxels": int(cut.sum())}
    assert api.c.get(url(child, "size/4?supervoxels=true")).status_code == 404
    assert sorted(get(api.c, child, "supervoxels/4")) == sorted([5, split, remain])
    mutid = r.json()["MutationID"]
    assert get(api.c, child, "supervoxel-splits") == [child, [[mutid, 4, remain, split]]]
    record = get(api.c, child, "mutations")[-1]
    assert record["Action"] == "split-supervoxel-complete"
    assert (record["SplitSize"], record["RemainSize"]) == (
        int(cut.sum()),
        int(((vol == 4) & ~cut).sum()),
    )
    stored = api.c.get(url(child, f"blobstore/{record['Split']}"))
    assert stored.status_code == 200 and stored.content == rles(cut)
    # a retired supervoxel cannot be split again
    assert api.c.post(url(child, "split-supervoxel/4"), content=rles(cut)).status_code == 400
    # descendants see the splits of their ancestors, nearest first
    api.commit(child)
    grandchild = api.newversion(child)
    post(api.c, grandchild, "split-supervoxel/1", rles((vol == 1) & (np.arange(SIZE) < 8)))
    splits = get(api.c, grandchild, "supervoxel-splits")
    assert splits[0] == grandchild and splits[2:] == [child, [[mutid, 4, remain, split]]]


@EMBEDDED
def test_split_moves_voxels_to_a_new_body(seg) -> None:
    api, root = seg
    child = api.newversion(root)
    post(api.c, child, "merge", [1, 2])
    vol = volume()
    x = np.arange(SIZE)[None, None, :]
    cut = np.isin(vol, [1, 2]) & (x >= 8) & (x < 24)
    r = api.c.post(url(child, "split/1"), content=rles(cut))
    assert re.fullmatch(rb'\{"label": \d+, "MutationID": \d+\}', r.content), r.content
    new = r.json()["label"]
    bodies = np.where(np.isin(vol, [1, 2]), 1, vol)
    bodies[cut] = new
    np.testing.assert_array_equal(raw(api.c, child), bodies)
    record = get(api.c, child, "mutations")[-1]
    assert record["Action"] == "split-complete" and record["NewLabel"] == new
    svsplits = {int(k): v for k, v in record["SVSplits"].items()}
    assert sorted(svsplits) == [1, 2]
    svs = raw(api.c, child, supervoxels="true")
    for old, ids in svsplits.items():
        np.testing.assert_array_equal(svs == ids["Split"], (vol == old) & cut)
        np.testing.assert_array_equal(svs == ids["Remain"], (vol == old) & ~cut)
    np.testing.assert_array_equal(raw(api.c, child, 1), mode_downsample(bodies))
    assert get(api.c, child, f"size/{new}") == {"voxels": int(cut.sum())}


@EMBEDDED
def test_renumber_moves_bodies_pairwise(seg) -> None:
    api, root = seg
    child = api.newversion(root)
    r = api.c.post(url(child, "renumber"), content=b"[100, 1, 200, 2]")
    assert r.status_code == 200 and r.content == b""
    vol = volume()
    np.testing.assert_array_equal(
        raw(api.c, child), np.select([vol == 1, vol == 2], [np.uint64(100), np.uint64(200)], vol)
    )
    assert get(api.c, child, "mapping", [1, 2, 100]) == [100, 200, 0]
    assert [m["Action"] for m in get(api.c, child, "mutations")] == ["renumber-complete"] * 2
    assert get(api.c, child, "maxlabel") == {"maxlabel": 200}


@EMBEDDED
def test_history_and_mutations_range(seg) -> None:
    api, root = seg
    child = api.newversion(root)
    post(api.c, child, "merge", [1, 2])
    cleaved = post(api.c, child, "cleave/1", [2])["CleavedLabel"]
    post(api.c, child, "merge", [4, 5])
    api.commit(child)
    grandchild = api.newversion(child)
    post(api.c, grandchild, "merge", [1, 3])
    got = api.c.get(url(grandchild, f"history/1/{root}/{grandchild}")).content
    assert got == (
        b'{"Action":"merge","Target":1,"Labels":[2]}'
        b'{"Action":"cleave","OrigLabel":1,"CleavedLabel":%d,"CleavedSupervoxels":[2]}'
        b'{"Action":"merge","Target":1,"Labels":[3]}' % cleaved
    )
    ranged = get(api.c, grandchild, f"mutations-range/{child}/{grandchild}")
    assert [m["Action"] for m in ranged] == ["merge-complete", "cleave-complete"] + [
        "merge-complete"
    ] * 2
    assert get(api.c, grandchild, f"mutations-range/{grandchild}/{grandchild}") == ranged[-1:]
    assert api.c.get(url(child, f"mutations-range/{grandchild}/{child}")).status_code == 400
    assert get(api.c, child, "mutations?userid=nobody") == []


@EMBEDDED
def test_next_label_start_and_ceiling(seg) -> None:
    api, root = seg
    child = api.newversion(root)
    assert api.c.post(url(child, "set-nextlabel/1000?ceiling=1003")).status_code == 200
    assert get(api.c, child, "nextlabel") == {"nextlabel": 1001}
    assert post(api.c, child, "nextlabel/2", b"") == {"start": 1001, "end": 1002}
    assert post(api.c, child, "merge", [4, 5])["MutationID"] > 0
    assert post(api.c, child, "cleave/4", [5])["CleavedLabel"] == 1003
    assert api.c.post(url(child, "nextlabel/1")).status_code == 400
    ext = get(api.c, child, "info")["Extended"]
    assert (ext["NextLabel"], ext["NextLabelCeiling"]) == (1003, 1003)
    assert api.c.post(url(child, "set-nextlabel/1003?ceiling=0")).status_code == 200
    assert post(api.c, child, "nextlabel/1", b"") == {"start": 1004, "end": 1004}
    assert "NextLabelCeiling" not in get(api.c, child, "info")["Extended"]
    assert api.c.post(url(child, "set-nextlabel/10?ceiling=5")).status_code == 400


@EMBEDDED
def test_indices_compressed_and_pseudocolor(seg) -> None:
    api, root = seg
    r = api.c.request("GET", url(root, "indices-compressed"), content=b"[2, 77]")
    assert r.status_code == 200
    size, label = struct.unpack_from("<QQ", r.content)
    index = pb.LabelIndex()
    index.ParseFromString(codecs.decompress_index(r.content[16 : 16 + size]))
    assert label == 2 and index.label == 2
    assert sum(sum(e.counts.values()) for e in index.blocks.values()) == (volume() == 2).sum()
    assert r.content[16 + size :] == struct.pack("<QQ", 0, 77)
    png = api.c.get(url(root, f"pseudocolor/xy/{SIZE}_{SIZE}/0_0_10"))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB")).reshape(-1, 3)
    labels = volume()[10].ravel()
    colours = {tuple(p) for p in pixels[labels == 4]}
    assert len(colours) == 1 and colours != {tuple(p) for p in pixels[labels == 5]}
    below = api.c.get(url(root, f"pseudocolor/xy/{SIZE}_{SIZE}/0_0_0"))
    assert not np.asarray(Image.open(io.BytesIO(below.content)).convert("RGB")).any()


BAD_EDITS = [
    ("merge", b"[0, 1]"),
    ("merge", b"[1, 0]"),
    ("merge", b"[1, 1]"),
    ("merge", b"[1, 2, 1]"),
    ("merge", b"[1, 999]"),
    ("merge", b"[999, 1]"),
    ("merge", b"[1]"),
    ("merge", b"[1, 2"),
    ("merge", b'{"target": 1}'),
    ("merge", b'[1, "2"]'),
    ("merge", b"[1, -2]"),
    ("cleave/0", b"[1]"),
    ("cleave/1", b"[2]"),
    ("cleave/1", b"[1]"),
    ("cleave/1", b"[]"),
    ("cleave/1", b"[0]"),
    ("cleave/999", b"[1]"),
    ("cleave/1", b"not json"),
    ("split-supervoxel/0", b""),
    ("split-supervoxel/999", b""),
    ("split-supervoxel/2", b"garbage"),
    ("split-supervoxel/2", codecs.encode_rles(np.empty((0, 4), np.int32))),
    ("split-supervoxel/2", codecs.encode_rles(np.array([[0, 10, 10, 5]], np.int32))),
    ("split-supervoxel/2", codecs.encode_rles(np.array([[14, 10, 10, 4]], np.int32))),
    ("split-supervoxel/2", codecs.encode_rles(np.array([[16, 10, 10, -4]], np.int32))),
    ("split-supervoxel/2?split=7&remain=7", codecs.encode_rles(np.array([[16, 10, 10, 4]]))),
    ("split-supervoxel/2?split=-1", codecs.encode_rles(np.array([[16, 10, 10, 4]]))),
    ("split-supervoxel/2?split=5", codecs.encode_rles(np.array([[16, 10, 10, 4]]))),
    ("split-supervoxel/2?remain=1", codecs.encode_rles(np.array([[16, 10, 10, 4]]))),
    ("split/1", codecs.encode_rles(np.array([[10, 10, 10, 10]], np.int32))),
    ("split/1", codecs.encode_rles(np.array([[0, 10, 0, 4]], np.int32))),
    ("split/1", b"\x00\x03\x00\x00"),
    ("renumber", b"[10, 1, 20]"),
    ("renumber", b"[2, 1]"),
    ("renumber", b"[10, 999]"),
    ("renumber", b"[10, 1, 11, 998]"),
    ("renumber", b"[0, 1]"),
]


@pytest.mark.parametrize(("path", "body"), BAD_EDITS)
def test_bad_edits_get_400_and_change_nothing(seg_memory, path: str, body: bytes) -> None:
    api, root = seg_memory
    child = api.newversion(root)
    before = snapshot(api.c, child)
    nextlabel = get(api.c, child, "nextlabel")
    r = api.c.post(url(child, path), content=body)
    assert r.status_code == 400, (path, body, r.status_code, r.text)
    assert r.text.strip(), "a refusal names the problem"
    assert snapshot(api.c, child) == before
    assert get(api.c, child, "nextlabel") == nextlabel


@EMBEDDED
def test_a_whole_supervoxel_cannot_be_split_off(seg) -> None:
    api, root = seg
    child = api.newversion(root)
    before = snapshot(api.c, child)
    whole = rles(volume() == 2)
    assert api.c.post(url(child, "split-supervoxel/2"), content=whole).status_code == 400
    assert api.c.post(url(child, "split/2"), content=whole).status_code == 400
    assert snapshot(api.c, child) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("merge", b"[1, 2]"),
        ("cleave/1", b"[1]"),
        ("split-supervoxel/2", codecs.encode_rles(np.array([[16, 10, 10, 4]]))),
        ("split/2", codecs.encode_rles(np.array([[16, 10, 10, 4]]))),
        ("renumber", b"[10, 1]"),
        ("set-nextlabel/50", b""),
    ],
)
def test_edits_at_a_locked_node_are_refused(seg_memory, path: str, body: bytes) -> None:
    api, root = seg_memory
    before = snapshot(api.c, root)
    r = api.c.post(url(root, path), content=body)
    assert r.status_code == 400 and "locked" in r.text, r.text
    assert snapshot(api.c, root) == before


@pytest.mark.parametrize(
    "path",
    [
        f"raw/0_1_2/{BLOCK}_{BLOCK}_{BLOCK}/0_0_0",
        f"raw/xy/{BLOCK}_{BLOCK}/0_0_0",
        f"isotropic/0_1_2/{BLOCK}_{BLOCK}_{BLOCK}/0_0_0",
        f"blocks/{BLOCK}_{BLOCK}_{BLOCK}/0_0_0",
        "specificblocks?blocks=0,0,0",
        "sparsevol/1",
        "sparsevol/999",
        "sparsevol-by-point/20_20_20",
    ],
)
def test_unknown_compression_is_refused_on_every_read(seg_memory, path: str) -> None:
    api, root = seg_memory
    joiner = "&" if "?" in path else "?"
    r = api.c.get(url(root, f"{path}{joiner}compression=bogus"))
    assert r.status_code == 400 and "bogus" in r.text, (path, r.status_code, r.text)


def test_unknown_compression_is_refused_on_post_raw(seg) -> None:
    api, root = seg
    child = api.newversion(root)
    block = np.zeros((BLOCK,) * 3, np.uint64).tobytes()
    r = api.c.post(
        url(child, f"raw/0_1_2/{BLOCK}_{BLOCK}_{BLOCK}/0_0_0?compression=bogus"), content=block
    )
    assert r.status_code == 400 and "bogus" in r.text


def test_split_can_be_switched_off() -> None:
    settings = Settings(allow_labelmap_split=False)
    with TestClient(create_app(settings, {"default": MemoryStore()})) as c:
        api = Api(c)
        root = api.new_repo()
        api.new_instance(root, "labelmap", "seg", BlockSize=f"{BLOCK},{BLOCK},{BLOCK}")
        r = c.post(url(root, f"raw/0_1_2/{SIZE}_{SIZE}_{SIZE}/0_0_0"), content=volume().tobytes())
        assert r.status_code == 200
        r = c.post(url(root, "split/2"), content=codecs.encode_rles(np.array([[16, 10, 10, 4]])))
        assert r.status_code == 400 and "deactivated" in r.text


@EMBEDDED
def test_new_labels_never_reuse_ids_loaded_without_voxels(seg) -> None:
    """Bodies loaded by POST indices + POST mappings (offline agglomeration) name
    supervoxels no voxel write announced; new labels still come after every one."""
    api, root = seg
    child = api.newversion(root)
    index = pb.LabelIndex(label=300)
    index.blocks[codecs.encode_block_key(5, 5, 5)].counts.update({400: 10, 401: 20})
    msg = pb.LabelIndices(indices=[index]).SerializeToString()
    assert api.c.post(url(child, "indices"), content=msg).status_code == 200
    ops = pb.MappingOps(mappings=[pb.MappingOp(mapped=300, original=[400, 401, 500])])
    assert api.c.post(url(child, "mappings"), content=ops.SerializeToString()).status_code == 200
    new = post(api.c, child, "cleave/300", [401])["CleavedLabel"]
    assert new > 500
    assert get(api.c, child, "mapping?nolookup=true", [400, 401, 500, new]) == [300, new, 300, 0]


@EMBEDDED
def test_a_merged_away_id_can_name_a_body_again(seg) -> None:
    """Merge folds body 2 into 1; renumbering 3 to 2 then makes 2 a body again, while
    supervoxel 2 stays in body 1 (DVID's flat mapping: 2 -> 1, 3 -> 2)."""
    api, root = seg
    child = api.newversion(root)
    post(api.c, child, "merge", [1, 2])
    assert api.c.post(url(child, "renumber"), content=b"[2, 3]").status_code == 200
    assert get(api.c, child, "mapping", [1, 2, 3, 4]) == [1, 1, 2, 4]
    vol = volume()
    expected = np.select([np.isin(vol, [1, 2]), vol == 3], [np.uint64(1), np.uint64(2)], vol)
    np.testing.assert_array_equal(raw(api.c, child), expected)
    assert sorted(get(api.c, child, "supervoxels/1")) == [1, 2]
    assert get(api.c, child, "supervoxels/2") == [3]
    # and a later merge of the revived body carries only its own supervoxels
    post(api.c, child, "merge", [4, 2])
    assert get(api.c, child, "mapping", [1, 2, 3, 4]) == [1, 1, 4, 4]
    mappings = api.c.get(url(child, "mappings")).text.split("\n")
    assert sorted(line for line in mappings if line) == ["2 1", "3 4"]
