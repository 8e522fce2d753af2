"""Every object key the service writes is documented: after a broad workload through the
API (repos, versions and branches, keyvalue, imageblk with a pyramid, imagetile, labelmap
through every write path with mappings, a synced subscriber, commits), each key in the
store matches exactly one pattern of docs/format.md's key index."""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.datatypes import tars
from app.datatypes.labelmap import codecs
from app.proto import labelmap_pb2 as pb
from app.server import create_app
from app.settings import Settings
from app.storage.format import FORMAT_VERSION
from backends.local import LocalStore

DOC = Path(__file__).resolve().parent.parent / "docs" / "format.md"


def documented_patterns() -> dict[str, re.Pattern[str]]:
    text = DOC.read_text()
    block = text.split("<!-- key-patterns -->")[1].split("<!-- /key-patterns -->")[0]
    patterns = {}
    for pattern in re.findall(r"^- `([^`]+)`$", block, re.M):
        regex = ""
        for part in re.split(r"(<[^>]+>\*?)", pattern):
            if part.startswith("<"):
                regex += ".+" if part.endswith("*") else "[^/]+"
            else:
                regex += re.escape(part)
        patterns[pattern] = re.compile(regex + r"\Z")
    return patterns


def test_doc_states_the_code_format_version() -> None:
    assert DOC.read_text().splitlines()[0].endswith(f"version {FORMAT_VERSION}")


def _workload(c: TestClient) -> None:
    def ok(r) -> dict:
        assert r.status_code == 200, r.text
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else {}

    root = ok(c.post("/api/repos", json={"alias": "layout"}))["root"]
    for typename, name, extra in (
        ("keyvalue", "kv", {}),
        ("uint8blk", "gray", {}),
        ("labelmap", "seg", {"BlockSize": "32,32,32", "MaxDownresLevel": "1"}),
        ("blockcount", "counts", {}),
        ("roi", "region", {}),
        ("annotation", "syn", {}),
        ("neuronjson", "neurons", {}),
        ("labelsz", "sizes", {}),
        ("imagetile", "tiles", {}),
        ("tarsupervoxels", "meshes", {"Extension": "drc"}),
    ):
        ok(c.post(f"/api/repo/{root}/instance", json={"typename": typename, "dataname": name,
                                                       **extra}))  # fmt: skip
    ok(c.post(f"/api/node/{root}/counts/sync", json={"sync": "seg"}))
    ok(c.post(f"/api/node/{root}/syn/sync", json={"sync": "seg"}))
    ok(c.post(f"/api/node/{root}/sizes/sync", json={"sync": "syn"}))
    ok(c.post(f"/api/node/{root}/meshes/sync", json={"sync": "seg"}))
    node = f"/api/node/{root}"
    ok(c.post(f"{node}/kv/key/a", content=b"1"))
    ok(c.post(f"{node}/kv/key/b", content=b"2"))
    assert c.delete(f"{node}/kv/key/b").status_code == 200
    gray = np.arange(64**3, dtype=np.uint64).astype(np.uint8).tobytes()
    ok(c.post(f"{node}/gray/raw/0_1_2/64_64_64/0_0_0", content=gray))
    labels = np.repeat(np.arange(1, 5, dtype=np.uint64), 64**3 // 4).tobytes()
    ok(c.post(f"{node}/seg/raw/0_1_2/64_64_64/0_0_0", content=labels))
    block = gzip.compress(codecs.encode_block(np.full((32, 32, 32), 9, np.uint64)))
    ok(c.post(f"{node}/seg/blocks", content=codecs.write_block_stream([((2, 0, 0), block)])))
    ok(c.post(f"{node}/seg/ingest-supervoxels",
              content=codecs.write_block_stream([((3, 0, 0), block)])))  # fmt: skip
    ops = pb.MappingOps(mappings=[pb.MappingOp(mapped=100, original=[1, 2])])
    ok(c.post(f"{node}/seg/mappings", content=ops.SerializeToString()))
    ok(c.get(f"{node}/counts/counts"))
    ok(c.post(f"{node}/region/roi", json=[[0, 0, 0, 1], [1, 0, 0, 1]]))
    level = {"Resolution": [8, 8, 8], "TileSize": [16, 16, 16]}
    ok(c.post(f"{node}/tiles/metadata", json={"Levels": {"0": level}}))
    tile = io.BytesIO()
    Image.new("L", (16, 16)).save(tile, format="PNG")
    ok(c.post(f"{node}/tiles/tile/xy/0/0_0_0", content=tile.getvalue()))
    synapses = [{"Pos": [x, 5, 5], "Kind": "PreSyn", "Tags": ["t"]} for x in (1, 20, 40, 60)]
    ok(c.post(f"{node}/syn/elements", json=synapses))
    ok(c.get(f"{node}/sizes/top/3/PreSyn"))
    ok(c.post(f"{node}/meshes/supervoxel/1", content=b"mesh"))
    ok(c.post(f"{node}/meshes/load", content=tars.entry("2.drc", b"m") + tars.entry("3.drc", b"")))
    assert c.delete(f"{node}/meshes/supervoxel/3").status_code == 200
    ok(c.post(f"{node}/neurons/json_schema", content=b'{"type": "object"}'))
    ok(c.post(f"{node}/neurons/key/7?u=me", content=b'{"bodyid": 7, "type": "LC4"}'))
    ok(c.post(f"{node}/neurons/key/8?u=me", content=b'{"bodyid": 8}'))
    assert c.delete(f"{node}/neurons/key/8").status_code == 200
    ok(c.post(f"{node}/commit", json={"note": "one"}))
    child = ok(c.post(f"{node}/newversion", json={}))["child"]
    ok(c.post(f"/api/node/{child}/kv/key/a", content=b"3"))
    ok(c.post(f"/api/node/{child}/seg/raw/0_1_2/32_32_32/0_0_0", content=labels[: 8 * 32**3]))
    edits = f"/api/node/{child}/seg"
    ok(c.post(f"{edits}/merge", content=b"[3, 4]"))
    ok(c.post(f"{edits}/cleave/3", content=b"[4]"))
    cut = codecs.encode_rles(np.array([[64, 0, 0, 8]], np.int32))
    ok(c.post(f"{edits}/split-supervoxel/9", content=cut))
    ok(c.post(f"/api/node/{child}/syn/move/1_5_5/2_5_5"))
    assert c.delete(f"/api/node/{child}/syn/element/60_5_5").status_code == 200
    assert c.delete(f"/api/node/{child}/region/roi").status_code == 200
    ok(c.post(f"/api/node/{child}/sizes/reload"))
    ok(c.post(f"/api/node/{child}/meshes/supervoxel/4", content=b"mesh"))
    assert c.get(f"/api/node/{child}/meshes/tarfile/3").status_code == 200
    assert c.post(f"{edits}/set-nextlabel/5000").status_code == 200
    ok(c.post(f"/api/node/{child}/neurons/key/7?u=me", content=b'{"bodyid": 7, "type": "T4"}'))
    ok(c.post(f"/api/node/{child}/neurons/query", content=b'{"type": "T4"}'))
    ok(c.post(f"/api/node/{child}/commit", json={"note": "two"}))
    ok(c.post(f"/api/node/{child}/branch", json={"branch": "side"}))


def test_every_written_key_is_documented(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, plugins="tests.plugins.blockcount")
    app = create_app(settings)
    app.state.services.check()  # start-up: stamps meta/format
    with TestClient(app) as client:
        _workload(client)
    patterns = documented_patterns()
    used: dict[str, int] = {}
    undocumented, ambiguous = [], []
    for info in LocalStore(tmp_path).list(""):
        matches = [p for p, regex in patterns.items() if regex.match(info.key)]
        if not matches:
            undocumented.append(info.key)
        elif len(matches) > 1:
            ambiguous.append((info.key, matches))
        for p in matches:
            used[p] = used.get(p, 0) + 1
    assert not undocumented, undocumented[:20]
    assert not ambiguous, ambiguous[:5]
    # Not vacuous: the workload reached the main families of keys.
    for family in ("meta/format", "meta/repos/", "/v/", "/s<scale>/<node>/c/", "/owned/",
                   "/txn/", "/log/", "/synced/", "/mapping/<node>/", "/index/<node>",
                   "/sizes/<type>/"):  # fmt: skip
        assert any(family in p for p in used), (family, sorted(used))


def test_an_older_format_is_restamped_and_a_newer_one_refused() -> None:
    """Version 3 writes body renames a version-2 server would misread: a v3 server that
    opens a v2 store restamps it, so v2 servers refuse it from then on."""
    from app.storage.format import UnknownFormat, check_format
    from backends.memory import MemoryStore

    store = MemoryStore()
    store.put("meta/format", b"2\n")
    assert check_format(store, writable=False) == 2
    assert store.get("meta/format").data == b"2\n"
    assert check_format(store, writable=True) == FORMAT_VERSION
    assert store.get("meta/format").data == f"{FORMAT_VERSION}\n".encode()
    store.put("meta/format", f"{FORMAT_VERSION + 1}\n".encode())
    with pytest.raises(UnknownFormat):
        check_format(store, writable=True)
