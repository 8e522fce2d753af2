"""Mapping partitions of an open node are kept parsed between requests (a write looks up
hundreds of them) and checked with a conditional read: unchanged ones are neither read
nor parsed again, and what another replica or the transaction itself wrote is seen."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.datatypes.labelmap import codecs
from app.proto import labelmap_pb2 as pb
from app.storage import idmap
from app.storage.journal import BufferedStore
from backends.base import UNCHANGED
from backends.memory import MemoryStore
from tests.conftest import Api

BLOCK = 16


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many mapping partitions were parsed (read whole) since the last clear."""
    seen: list[int] = []
    parse = idmap._parse_partition

    def counted(data: bytes) -> tuple[np.ndarray, np.ndarray]:
        seen.append(len(data))
        return parse(data)

    monkeypatch.setattr(idmap, "_parse_partition", counted)
    yield seen


def post_mappings(api: Api, node: str, body: int, svs: list[int]) -> None:
    ops = pb.MappingOps()
    ops.mappings.add(mapped=body, original=svs)
    r = api.c.post(f"/api/node/{node}/seg/mappings", content=ops.SerializeToString())
    assert r.status_code == 200, r.text


def post_raw(api: Api, node: str, voxels: np.ndarray) -> None:
    r = api.c.post(f"/api/node/{node}/seg/raw/0_1_2/16_16_16/0_0_0", content=voxels.tobytes())
    assert r.status_code == 200, r.text


def index_of(api: Api, node: str, body: int) -> dict[int, int]:
    """Body ``body``'s supervoxel counts in block (0, 0, 0), from its label index."""
    r = api.c.get(f"/api/node/{node}/seg/index/{body}")
    if r.status_code == 404:
        return {}
    assert r.status_code == 200, r.text
    index = pb.LabelIndex()
    index.ParseFromString(r.content)
    return dict(index.blocks[codecs.encode_block_key(0, 0, 0)].counts)


def test_an_open_nodes_partitions_are_parsed_once_and_another_replicas_mappings_seen(
    make_client: Callable[..., TestClient], parses: list[int]
) -> None:
    first, second = Api(make_client()), Api(make_client())
    root = first.new_repo()
    first.new_instance(root, "labelmap", "seg", BlockSize=f"{BLOCK},{BLOCK},{BLOCK}")
    svs = [11, 12, 13, 2**40 + 7, 2**63 + 5]
    post_mappings(first, root, 900, svs[:2])
    voxels = np.array(svs, np.uint64)[np.arange(BLOCK**3).reshape((BLOCK,) * 3) % len(svs)]
    post_raw(first, root, voxels)
    assert index_of(first, root, 900) == {11: 820, 12: 819}

    parses.clear()
    post_raw(first, root, voxels)
    assert parses == [], "unchanged partitions of the open node were read and parsed again"

    # the other replica maps 13 into body 900 too: the first sees it on its next write
    post_mappings(second, root, 900, [13])
    parses.clear()
    post_raw(first, root, voxels[::-1].copy())
    assert len(parses) == 1, "exactly the partition the other replica rewrote is read again"
    assert index_of(first, root, 900) == {11: 820, 12: 819, 13: 819}


def test_a_transactions_own_writes_are_never_taken_for_the_cached_object() -> None:
    inner = MemoryStore()
    token = inner.put("k", b"before")
    buffered = BufferedStore(inner)
    assert buffered.get_if_changed("k", token) is UNCHANGED
    mine = buffered.put("k", b"mine")
    assert mine != token
    changed = buffered.get_if_changed("k", token)
    assert changed is not UNCHANGED and changed is not None and changed.data == b"mine"
    assert buffered.get_if_changed("k", mine) is UNCHANGED
    again = buffered.put("k", b"mine again")
    assert again != mine
    blob = buffered.get("k")
    assert blob is not None and blob.token == again
    # the next transaction (or a read outside one) never hands a buffered token on to
    # the store, which would not understand it (GCS generations are numbers)
    later = BufferedStore(inner).get_if_changed("k", again)
    assert later is not UNCHANGED and later is not None and later.data == b"before"
    buffered.delete("k")
    assert buffered.get_if_changed("k", again) is None
