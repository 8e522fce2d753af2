"""Behaviour of the ``labelsz`` datatype.

The rules come from /work/shared/spec/labelsz.md, sync.md §1.2-1.3 and DVID's Go code
(datatype/labelsz: handlers, ``modifyElements``, ``resync``). Counting is driven two
ways: by synthetic annotation events handed to ``apply_events`` (the sync contract in
app/datatypes/annotation/change.py: ``Merged``, then ``Removed``, then ``Added``), and
end to end through a real annotation instance synced to a labelmap.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.datatypes import bind, capabilities
from app.datatypes.labelsz import LabelSz
from app.datatypes.labelsz.counts import rank
from tests.conftest import Api

DATA = "sizes"
#: Tables of request parsing and counting rules: the store does nothing different there,
#: so they run on the memory store only (the few all-backend tests cover storage).
MEMORY_ONLY = pytest.mark.parametrize("backend", ["memory"], indirect=True)


# --------------------------------------------------------------------------- helpers


def url(uuid: str, rest: str, data: str = DATA) -> str:
    return f"/api/node/{uuid}/{data}/{rest}"


def new_labelsz(api: Api, uuid: str | None = None, name: str = DATA, **settings: str) -> str:
    uuid = uuid or api.new_repo()
    api.new_instance(uuid, "labelsz", name, **settings)
    return uuid


def bound_labelsz(client: TestClient, uuid: str, name: str = DATA) -> LabelSz:
    services = cast(FastAPI, client.app).state.services
    repo, node = services.catalog.resolve(uuid)
    data = bind(services, repo, node.uuid, repo.instance(name))
    assert isinstance(data, LabelSz)
    return data


def apply(client: TestClient, uuid: str, *events: dict[str, Any], name: str = DATA) -> None:
    """Apply ``events`` as one batch, as a sync delivers one logged entry."""
    data = bound_labelsz(client, uuid, name)
    with data.transaction() as txn:
        data.apply_events(txn, data.instance, list(events))


def el(kind: str, label: int, pos: tuple[int, int, int] = (0, 0, 0)) -> list[Any]:
    return [*pos, kind, label]


def event(**changes: Any) -> dict[str, Any]:
    return {"Action": "element-post", "UUID": "x", "Timestamp": "t", **changes}


def get_json(client: TestClient, path: str, body: bytes | None = None) -> Any:
    r = client.request("GET", path, content=body)
    assert r.status_code == 200, r.text
    return r.json()


def get_text(client: TestClient, path: str) -> str:
    r = client.get(path)
    assert r.status_code == 200, r.text
    return r.text


def top(client: TestClient, uuid: str, n: int, kind: str, data: str = DATA) -> list[list[int]]:
    found = get_json(client, url(uuid, f"top/{n}/{kind}", data))
    return [[entry["Label"], entry["Size"]] for entry in found]


def count(client: TestClient, uuid: str, label: int, kind: str, data: str = DATA) -> int:
    return get_json(client, url(uuid, f"count/{label}/{kind}", data))[kind]


# --------------------------------------------------------------------------- all backends


def test_counts_and_rankings(client: TestClient, api: Api) -> None:
    uuid = new_labelsz(api)
    apply(
        client,
        uuid,
        event(Added=[el("PreSyn", 5)] * 3 + [el("PreSyn", 2)] * 3 + [el("PreSyn", 9)]),
        event(Added=[el("PostSyn", 7)] * 2 + [el("Note", 4), el("Gap", 9), el("PreSyn", 0)]),
    )
    # DVID's exact bytes: top and threshold say "Size", count and counts the type.
    assert get_text(client, url(uuid, "top/2/PreSyn")) == (
        '[{"Label":2,"Size":3},{"Label":5,"Size":3}]'
    )
    assert get_text(client, url(uuid, "count/5/PreSyn")) == '{"Label":5,"PreSyn":3}'
    assert get_text(client, url(uuid, "count/6/PreSyn")) == '{"Label":6,"PreSyn":0}'
    r = client.request("GET", url(uuid, "counts/AllSyn"), content=b"[9, 4, 7, 12]")
    assert r.status_code == 200, r.text
    assert r.text == (
        '[{"Label":9,"AllSyn":2},{"Label":4,"AllSyn":0},'
        '{"Label":7,"AllSyn":2},{"Label":12,"AllSyn":0}]'
    )
    assert top(client, uuid, 10, "AllSyn") == [[2, 3], [5, 3], [7, 2], [9, 2]]
    assert top(client, uuid, 10, "Note") == [[4, 1]]
    assert top(client, uuid, 10, "Gap") == [[9, 1]]
    assert top(client, uuid, 10, "Voxels") == []
    assert count(client, uuid, 0, "PreSyn") == 0  # label 0 is never counted

    # Counts that drop to 0 leave the rankings.
    apply(client, uuid, event(Removed=[el("PreSyn", 9), el("Gap", 9)]))
    assert top(client, uuid, 10, "PreSyn") == [[2, 3], [5, 3]]
    assert top(client, uuid, 10, "AllSyn") == [[2, 3], [5, 3], [7, 2]]
    assert count(client, uuid, 9, "AllSyn") == 0
    threshold = get_json(client, url(uuid, "threshold/0/AllSyn"))
    assert [e["Label"] for e in threshold] == [2, 5, 7]


def test_counts_are_versioned(client: TestClient, api: Api) -> None:
    uuid = new_labelsz(api)
    apply(client, uuid, event(Added=[el("PreSyn", 1)] * 2 + [el("PostSyn", 3)]))
    api.commit(uuid)
    child = api.newversion(uuid)
    apply(
        client,
        child,
        event(Merged={"Target": 3, "Labels": [1]}, Added=[el("PreSyn", 8)]),
    )
    assert top(client, child, 5, "AllSyn") == [[3, 3], [8, 1]]
    assert top(client, uuid, 5, "AllSyn") == [[1, 2], [3, 1]]
    assert count(client, uuid, 8, "PreSyn") == 0
    api.commit(child)
    assert top(client, child, 5, "AllSyn") == [[3, 3], [8, 1]]  # committed: read from cache
    # A locked node takes no writes.
    r = client.post(url(uuid, "reload"))
    assert r.status_code == 400
    assert "locked" in r.text


# --------------------------------------------------------------------------- counting rules


@MEMORY_ONLY
def test_merge_then_removals_then_additions(client: TestClient, api: Api) -> None:
    uuid = new_labelsz(api)
    apply(client, uuid, event(Added=[el("PreSyn", 1), el("PreSyn", 2), el("Note", 2)]))
    apply(
        client,
        uuid,
        # in one event: the fold happens first, so the removal finds the element in 10
        event(
            Merged={"Target": 10, "Labels": [1, 2, 10, 0]},
            Removed=[el("PreSyn", 10)],
            Added=[el("PostSyn", 10), el("Unknown", 10)],
        ),
        # a later event of the same batch sees the earlier ones
        event(Merged={"Target": 11, "Labels": [10]}, Added=[el("Gap", 10)]),
    )
    assert [count(client, uuid, 11, k) for k in ("PreSyn", "PostSyn", "Note", "AllSyn")] == [
        1,
        1,
        1,
        2,
    ]
    assert [count(client, uuid, 10, k) for k in ("Gap", "AllSyn", "PreSyn")] == [1, 1, 0]
    for label in (1, 2):
        assert count(client, uuid, label, "AllSyn") == 0
    assert top(client, uuid, 5, "AllSyn") == [[11, 2], [10, 1]]
    # Merging into 0 drops the counts; removing more than was counted stops at 0.
    apply(client, uuid, event(Merged={"Target": 0, "Labels": [10]}))
    apply(client, uuid, event(Removed=[el("Note", 11)] * 3))
    assert count(client, uuid, 10, "Gap") == 0
    assert count(client, uuid, 11, "Note") == 0
    # Events without element changes, and malformed ones, change nothing.
    apply(
        client,
        uuid,
        event(),
        event(Added=[[1, 2, "PreSyn", 11]]),
        event(Merged={"Target": -1, "Labels": [11]}),
    )
    assert top(client, uuid, 5, "AllSyn") == [[11, 2]]


@MEMORY_ONLY
def test_ranking_ties_and_threshold_pages(client: TestClient, api: Api) -> None:
    uuid = new_labelsz(api)
    sizes = {label: 1 + label % 7 for label in range(1, 200)}
    apply(
        client,
        uuid,
        event(Added=[el("PreSyn", label) for label, n in sizes.items() for _ in range(n)]),
    )
    expected = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))
    assert top(client, uuid, 5, "PreSyn") == [list(e) for e in expected[:5]]
    assert top(client, uuid, 0, "PreSyn") == []
    assert top(client, uuid, 1000, "PreSyn") == [list(e) for e in expected]

    def page(query: str) -> list[tuple[int, int]]:
        found = get_json(client, url(uuid, f"threshold/{query}"))
        return [(e["Label"], e["Size"]) for e in found]

    at_least_5 = [e for e in expected if e[1] >= 5]
    assert page("5/PreSyn") == at_least_5
    assert page("5/PreSyn?offset=3&n=4") == at_least_5[3:7]
    assert page("5/PreSyn?offset=1000&n=4") == []
    assert page("5/PreSyn?n=0") == at_least_5  # n=0 is the default page
    assert page("5/PreSyn?offset=-3&n=2") == at_least_5[:2]  # as DVID: ranks from 0
    assert page("100/PreSyn") == []


def test_rank_sorts_only_what_it_returns() -> None:
    rng = np.random.default_rng(7)
    labels = rng.permutation(np.arange(1, 100_001, dtype=np.uint64))
    counts = rng.integers(0, 50, labels.size).astype(np.uint64)
    order = sorted(zip(labels.tolist(), counts.tolist(), strict=True), key=lambda e: (-e[1], e[0]))
    nonzero = [e for e in order if e[1] > 0]
    assert rank(labels, counts, 10) == nonzero[:10]
    assert (
        rank(labels, counts, 25, minimum=40, offset=7) == [e for e in nonzero if e[1] >= 40][7:32]
    )
    assert rank(labels, counts, 10**6) == nonzero


class Box:
    """A region: the voxels with every coordinate in [lo, hi)."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def region_block_size(self) -> tuple[int, int, int]:
        return (1, 1, 1)

    def region_blocks(self) -> np.ndarray:
        return np.empty((0, 3), np.int64)

    def region_contains(self, points: np.ndarray) -> np.ndarray:
        return np.all((points >= self.lo) & (points < self.hi), axis=1)


@MEMORY_ONLY
def test_roi_counts_only_elements_inside(
    client: TestClient, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def region_at(data: object, spec: str) -> Box:
        seen.append(spec)
        return Box(32, 96)

    monkeypatch.setattr(capabilities, "region_at", region_at)
    uuid = new_labelsz(api, ROI=f"myroi,{api.new_repo()[:6]}")
    info = get_json(client, url(uuid, "info"))
    assert info["Extended"]["StaticROI"].startswith("myroi,")
    assert info["Base"]["TypeName"] == "labelsz"
    apply(
        client,
        uuid,
        event(Added=[el("PreSyn", 1, (40, 40, 40)), el("PreSyn", 1, (10, 40, 40))]),
        event(Added=[el("PostSyn", 2, (95, 95, 95)), el("PostSyn", 2, (96, 95, 95))]),
    )
    assert count(client, uuid, 1, "PreSyn") == 1
    assert count(client, uuid, 2, "AllSyn") == 1
    # Merges move counts wholesale; removals outside the ROI were never counted.
    apply(
        client,
        uuid,
        event(Merged={"Target": 2, "Labels": [1]}, Removed=[el("PreSyn", 2, (0, 0, 0))]),
    )
    assert top(client, uuid, 5, "AllSyn") == [[2, 2]]
    assert seen and all(spec == seen[0] for spec in seen)


@MEMORY_ONLY
def test_an_roi_that_cannot_be_found_counts_nothing(client: TestClient, api: Api) -> None:
    uuid = new_labelsz(api, ROI="nothere,abc")
    apply(client, uuid, event(Added=[el("PreSyn", 1)]))
    assert count(client, uuid, 1, "PreSyn") == 0
    api.new_instance(uuid, "annotation", "syn")
    assert client.post(url(uuid, "sync"), json={"sync": "syn"}).status_code == 200
    r = client.post(url(uuid, "reload"))
    assert r.status_code == 400 and "nothere" in r.text, r.text


# --------------------------------------------------------------------------- bad input


@MEMORY_ONLY
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "count/1/presyn", None),  # index types are case-sensitive
        ("GET", "count/1/Unknown", None),
        ("GET", "top/3/Synapses", None),
        ("GET", "threshold/3/All", None),
        ("GET", "counts/Nope", b"[1]"),
        ("GET", "count/-1/PreSyn", None),
        ("GET", "count/18446744073709551616/PreSyn", None),
        ("GET", "count/1.5/PreSyn", None),
        ("GET", "count/1", None),
        ("GET", "top/-1/PreSyn", None),
        ("GET", "top/4294967296/PreSyn", None),
        ("GET", "top/x/PreSyn", None),
        ("GET", "threshold/-1/PreSyn", None),
        ("GET", "threshold/1/PreSyn?offset=x", None),
        ("GET", "threshold/1/PreSyn?n=-1", None),
        ("GET", "threshold/1/PreSyn?n=1.5", None),
        ("GET", "counts/PreSyn", None),
        ("GET", "counts/PreSyn", b"[1,"),
        ("GET", "counts/PreSyn", b'{"a": 1}'),
        ("GET", "counts/PreSyn", b"[1, -2]"),
        ("GET", "counts/PreSyn", b"[1.5]"),
        ("GET", "counts/PreSyn", b'["1"]'),
        ("POST", "counts/PreSyn", b"[1]"),  # DVID: only GET
        ("POST", "top/3/PreSyn", None),
        ("GET", "reload", None),
        ("POST", "reload", None),  # not synced to an annotation
        ("DELETE", "count/1/PreSyn", None),
    ],
)
def test_bad_requests_are_400(
    client: TestClient, api: Api, method: str, path: str, body: bytes | None
) -> None:
    uuid = new_labelsz(api)
    r = client.request(method, url(uuid, path), content=body)
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("text/plain")


@MEMORY_ONLY
@pytest.mark.parametrize("roi", ["myroi", "myroi,", ",abc", "a,b,c", "   ", ""])
def test_bad_roi_settings_are_400(client: TestClient, api: Api, roi: str) -> None:
    uuid = api.new_repo()
    body = {"typename": "labelsz", "dataname": "s", "ROI": roi}
    r = client.post(f"/api/repo/{uuid}/instance", json=body)
    assert r.status_code == 400, r.text
    assert "<roiname>,<uuid>" in r.text


@MEMORY_ONLY
def test_sync_accepts_annotations_only(client: TestClient, api: Api) -> None:
    uuid = new_labelsz(api)
    api.new_instance(uuid, "keyvalue", "kv")
    assert client.post(url(uuid, "sync"), json={"sync": "kv"}).status_code == 400
    # Without a sync, queries answer zeros (as DVID).
    assert top(client, uuid, 3, "PreSyn") == []
    assert count(client, uuid, 3, "PreSyn") == 0
    assert "labelsz" in get_text(client, url(uuid, "help"))


# --------------------------------------------------------------------------- end to end


def _synapse_fixture(api: Api, uuid: str, labels: np.ndarray) -> list[dict[str, Any]]:
    """labelmap ``seg`` holding ``labels`` (z, y, x) at the origin, annotation ``syn``
    synced to it; returns elements on a grid over the volume (PreSyn and PostSyn)."""
    api.new_instance(uuid, "labelmap", "seg", BlockSize="32,32,32")
    nz, ny, nx = labels.shape
    r = api.c.post(f"/api/node/{uuid}/seg/raw/0_1_2/{nx}_{ny}_{nz}/0_0_0", content=labels.tobytes())
    assert r.status_code == 200, r.text
    api.new_instance(uuid, "annotation", "syn")
    r = api.c.post(f"/api/node/{uuid}/syn/sync", json={"sync": "seg"})
    assert r.status_code == 200, r.text
    elements = []
    for z in range(2, nz, 8):
        for y in range(2, ny, 8):
            for x in range(2, nx, 8):
                kind = "PreSyn" if (x + y + z) % 3 else "PostSyn"
                elements.append({"Pos": [x, y, z], "Kind": kind, "Tags": [], "Prop": {}})
    return elements


def _expected(labels: np.ndarray, elements: list[dict[str, Any]], kind: str) -> Counter[int]:
    found: Counter[int] = Counter()
    for e in elements:
        x, y, z = e["Pos"]
        label = int(labels[z, y, x])
        if label and (kind == "AllSyn" or e["Kind"] == kind):
            found[label] += 1
    return found


def test_follows_an_annotation_and_reload_agrees(client: TestClient, api: Api) -> None:
    uuid = api.new_repo()
    labels = np.zeros((64, 64, 64), np.uint64)
    labels[:, :, :20] = 100
    labels[:, :, 20:40] = 200
    labels[:, 40:, 40:] = 300  # the rest of x >= 40 stays 0
    elements = _synapse_fixture(api, uuid, labels)
    new_labelsz(api, uuid)
    assert client.post(url(uuid, "sync"), json={"sync": "syn"}).status_code == 200
    r = client.post(f"/api/node/{uuid}/syn/elements", content=orjson.dumps(elements))
    assert r.status_code == 200, r.text
    for kind in ("PreSyn", "PostSyn", "AllSyn"):
        expected = _expected(labels, elements, kind)
        ranked = sorted(expected.items(), key=lambda e: (-e[1], e[0]))
        assert top(client, uuid, 10, kind) == [list(e) for e in ranked], kind

    # Moving and deleting elements follow; a labelmap merge folds counts.
    moved = elements[0]["Pos"]
    r = client.post(f"/api/node/{uuid}/syn/move/{'_'.join(map(str, moved))}/51_51_51")
    assert r.status_code == 200, r.text
    r = client.post(f"/api/node/{uuid}/seg/merge", content=b"[100, 200]")
    assert r.status_code == 200, r.text
    incremental = {k: top(client, uuid, 10, k) for k in ("PreSyn", "PostSyn", "AllSyn")}
    assert [e[0] for e in incremental["AllSyn"]] == [100, 300]

    # A second labelsz synced after the fact replays the annotation's log at this
    # version; a reload replaces whatever it holds by a recount, which agrees.
    new_labelsz(api, uuid, "late")
    assert client.post(url(uuid, "sync", "late"), json={"sync": "syn"}).status_code == 200
    assert {k: top(client, uuid, 10, k, "late") for k in incremental} == incremental
    apply(client, uuid, event(Added=[el("PreSyn", 999), el("Note", 100)]), name="late")
    assert count(client, uuid, 999, "PreSyn", "late") == 1
    assert client.post(url(uuid, "reload", "late")).status_code == 200
    assert count(client, uuid, 999, "PreSyn", "late") == 0
    assert count(client, uuid, 100, "Note", "late") == 0
    assert {k: top(client, uuid, 10, k, "late") for k in incremental} == incremental
    # Reloading an up-to-date instance changes nothing, and later edits still count once.
    assert client.post(url(uuid, "reload")).status_code == 200
    assert {k: top(client, uuid, 10, k) for k in incremental} == incremental
    r = client.delete(f"/api/node/{uuid}/syn/element/51_51_51")
    assert r.status_code == 200, r.text
    for name in (DATA, "late"):
        assert count(client, uuid, 300, "AllSyn", name) == incremental["AllSyn"][1][1] - 1
