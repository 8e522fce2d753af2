"""tarsupervoxels over HTTP: blobs per supervoxel, a body's blobs as one tar through the
synced labelmap at the version asked (so merges and cleaves show there and nowhere else),
``missing`` and ``exists`` as DVID answers them, and bad input that changes nothing.
The scenario follows DVID's own test (tarsupervoxels_test.go)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.datatypes import tarsupervoxels
from app.server import create_app
from app.settings import Settings
from backends.memory import MemoryStore
from tests.conftest import Api

EXT = "drc"
SVS = range(1, 9)  # the labelmap's supervoxels: x slabs 8 voxels wide
BODY = [1, 2, 3]  # merged into body 1 at the root


def blob(sv: int) -> bytes:
    return f"This is the data for supervoxel {sv}.".encode()


def make_tar(entries: list[tuple[str, bytes]], kind: bytes = tarfile.REGTYPE) -> bytes:
    """A tar as clients write it (Python's tarfile: padded to a 10 KiB record)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.type = len(data), kind
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def read_tar(data: bytes) -> list[tuple[str, bytes]]:
    entries = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            content = tar.extractfile(member)
            entries.append((member.name, content.read() if content else b""))
    return entries


def url(uuid: str, path: str, data: str = "meshes") -> str:
    return f"/api/node/{uuid}/{data}/{path}"


def ok(r) -> bytes:
    assert r.status_code == 200, r.text
    return r.content


def _setup(api: Api, **settings: str) -> str:
    """labelmap ``seg`` (supervoxels 1..8, body 1 = [1, 2, 3]) and tarsupervoxels
    ``meshes`` synced to it, at an open root."""
    root = api.new_repo()
    api.new_instance(root, "labelmap", "seg", BlockSize="32,32,32")
    api.new_instance(root, "tarsupervoxels", "meshes", Extension=EXT, **settings)
    ok(api.c.post(url(root, "sync"), json={"sync": "seg"}))
    x = np.mgrid[0:64, 0:64, 0:64][2]
    vol = (1 + x // 8).astype("<u8")
    ok(api.c.post(f"/api/node/{root}/seg/raw/0_1_2/64_64_64/0_0_0", content=vol.tobytes()))
    ok(api.c.post(f"/api/node/{root}/seg/merge", json=BODY))
    return root


@pytest.fixture
def memory_api() -> Iterator[Api]:
    with TestClient(create_app(Settings(), {"default": MemoryStore()})) as c:
        yield Api(c)


@pytest.fixture
def loaded(memory_api: Api) -> tuple[Api, str]:
    """Memory only: every supervoxel but 2 has a blob."""
    root = _setup(memory_api)
    body = make_tar([(f"{sv}.{EXT}", blob(sv)) for sv in SVS if sv != 2])
    ok(memory_api.c.post(url(root, "load"), content=body))
    return memory_api, root


def stored(c: TestClient, uuid: str) -> dict[int, bytes | None]:
    """Every supervoxel's blob (None: absent), through single GETs."""
    found: dict[int, bytes | None] = {}
    for sv in [*SVS, 9, 100]:
        r = c.get(url(uuid, f"supervoxel/{sv}"))
        assert r.status_code in (200, 404), r.text
        found[sv] = r.content if r.status_code == 200 else None
    return found


# --- every backend -----------------------------------------------------------------------


def test_blobs_load_and_a_body_tar_as_dvid_serves_them(api: Api) -> None:
    root = _setup(api)
    c = api.c
    ok(c.post(url(root, "load"), content=make_tar([(f"{sv}.{EXT}", blob(sv)) for sv in (1, 3)])))
    ok(c.post(url(root, "supervoxel/4"), content=blob(4)))
    r = c.get(url(root, "supervoxel/3"))
    assert (ok(r), r.headers["content-type"]) == (blob(3), "application/octet-stream")
    assert c.get(url(root, "supervoxel/2")).status_code == 404
    assert c.get(url(root, "supervoxel/2")).text.startswith("Supervoxel 2 not found")

    # One entry per supervoxel of the body, ascending, an empty <sv>.missing for no blob.
    r = c.get(url(root, "tarfile/1"))
    assert r.headers["content-type"] == "application/tar"
    assert read_tar(ok(r)) == [("1.drc", blob(1)), ("2.missing", b""), ("3.drc", blob(3))]
    assert ok(c.get(url(root, "missing/1"))) == b"[2]"
    assert c.head(url(root, "tarfile/1")).status_code == 400
    assert c.head(url(root, "tarfile/4")).status_code == 200
    assert ok(c.request("GET", url(root, "exists"), content=b"[81, 1, 2, 4]")) == (
        b"[false,true,false,true]"
    )

    # An empty blob is data: it fills the hole.
    ok(c.post(url(root, "supervoxel/2"), content=b""))
    assert ok(c.get(url(root, "supervoxel/2"))) == b""
    assert ok(c.get(url(root, "missing/1"))) == b"[]"
    assert c.head(url(root, "tarfile/1")).status_code == 200
    assert [name for name, _ in read_tar(ok(c.get(url(root, "tarfile/1"))))][1] == "2.drc"
    ok(c.delete(url(root, "supervoxel/1")))
    assert ok(c.get(url(root, "missing/1"))) == b"[1]"


def test_body_tar_follows_merge_and_cleave_at_the_edited_version_only(api: Api) -> None:
    root = _setup(api)
    c = api.c
    ok(c.post(url(root, "load"), content=make_tar([(f"{sv}.{EXT}", blob(sv)) for sv in SVS])))
    api.commit(root)
    child = api.newversion(root)
    seg = f"/api/node/{child}/seg"

    def names(uuid: str, body: int) -> list[str]:
        return [name for name, _ in read_tar(ok(c.get(url(uuid, f"tarfile/{body}"))))]

    ok(c.post(f"{seg}/merge", json=[1, 5]))
    assert names(child, 1) == ["1.drc", "2.drc", "3.drc", "5.drc"]
    assert c.get(url(child, "tarfile/5")).status_code == 400  # merged away
    cleaved = c.post(f"{seg}/cleave/1", json=[2, 5]).json()["CleavedLabel"]
    assert names(child, 1) == ["1.drc", "3.drc"]
    assert names(child, cleaved) == ["2.drc", "5.drc"]
    ok(c.delete(url(child, "supervoxel/5")))
    assert ok(c.get(url(child, f"missing/{cleaved}"))) == b"[5]"
    # The parent still has its bodies and blobs.
    assert names(root, 1) == ["1.drc", "2.drc", "3.drc"]
    assert names(root, 5) == ["5.drc"]
    assert c.get(url(root, f"tarfile/{cleaved}")).status_code == 400


def test_blobs_are_versioned_and_locked_nodes_refuse_writes(api: Api) -> None:
    root = _setup(api)
    c = api.c
    ok(c.post(url(root, "supervoxel/1"), content=b"old"))
    ok(c.post(url(root, "supervoxel/2"), content=b"two"))
    api.commit(root)
    child = api.newversion(root)
    ok(c.post(url(child, "supervoxel/1"), content=b"new"))
    ok(c.delete(url(child, "supervoxel/2")))
    ok(c.post(url(child, "load"), content=make_tar([(f"3.{EXT}", b"three")])))
    assert read_tar(ok(c.get(url(child, "tarfile/1")))) == [
        ("1.drc", b"new"),
        ("2.missing", b""),
        ("3.drc", b"three"),
    ]
    assert read_tar(ok(c.get(url(root, "tarfile/1")))) == [
        ("1.drc", b"old"),
        ("2.drc", b"two"),
        ("3.missing", b""),
    ]
    for r in (
        c.post(url(root, "supervoxel/1"), content=b"x"),
        c.delete(url(root, "supervoxel/1")),
        c.post(url(root, "load"), content=make_tar([(f"4.{EXT}", b"x")])),
    ):
        assert r.status_code == 400 and "locked" in r.text
    assert stored(c, root) == {**dict.fromkeys([*SVS, 9, 100]), 1: b"old", 2: b"two"}


# --- memory only: DVID's details and bad input -------------------------------------------


def test_unversioned_blobs_live_at_the_root_as_dvid_keeps_them(memory_api: Api) -> None:
    api = memory_api
    root = _setup(api, versioned="false")
    api.commit(root)
    child = api.newversion(root)
    ok(api.c.post(url(child, "supervoxel/1"), content=b"one"))
    ok(api.c.post(url(root, "supervoxel/2"), content=b"two"))  # a locked node: still DVID's
    for uuid in (root, child):
        assert ok(api.c.get(url(uuid, "missing/1"))) == b"[3]"
    assert api.c.get(url(root, "info")).json()["Base"]["Versioned"] is False


def test_tar_bytes_are_laid_out_as_gos_writer_lays_them(loaded: tuple[Api, str]) -> None:
    api, root = loaded
    data = ok(api.c.get(url(root, "tarfile/1")))
    # Header, data padded to 512; a missing entry is a header alone; then two zero blocks.
    assert len(data) == 512 * (2 + 1 + 2) + 1024
    assert data[-1024:] == bytes(1024) and data[-1536:-1024] != bytes(512)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [(m.name, m.size, m.mode, m.mtime) for m in members] == [
        ("1.drc", len(blob(1)), 0o755, 0),
        ("2.missing", 0, 0o755, 0),
        ("3.drc", len(blob(3)), 0o755, 0),
    ]
    assert all(m.isreg() for m in members)


def test_a_large_body_streams_in_batches_read_in_parallel(
    memory_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = memory_api
    root = _setup(api)
    ok(api.c.post(f"/api/node/{root}/seg/merge", json=[1, *range(4, 9)]))
    ok(api.c.post(url(root, "load"), content=make_tar([(f"{sv}.{EXT}", blob(sv)) for sv in SVS])))
    reads: list[int] = []
    each = tarsupervoxels.parallel.each

    def spy(
        fn: Callable[[str], bytes | None], items: Iterable[str], *, overlap: bool = True
    ) -> list[bytes | None]:
        work = list(items)
        reads.append(len(work))
        return each(fn, work, overlap=overlap)

    monkeypatch.setattr(tarsupervoxels.parallel, "each", spy)
    monkeypatch.setattr(tarsupervoxels, "BATCH", 3)
    entries = read_tar(ok(api.c.get(url(root, "tarfile/1"))))
    assert entries == [(f"{sv}.drc", blob(sv)) for sv in SVS]
    assert reads == [3, 3, 2]


def test_exists_checks_the_hash_of_its_body(loaded: tuple[Api, str]) -> None:
    api, root = loaded
    body = b"[2, 3, 0, 18446744073709551615]"
    good = hashlib.md5(body).hexdigest()
    for query in ({}, {"hash": good}, {"hash": good.upper()}):
        r = api.c.request("GET", url(root, "exists"), params=query, content=body)
        assert ok(r) == b"[false,true,false,false]"
        assert r.headers["content-type"] == "application/json"
    bad = hashlib.md5(body + b" ").hexdigest()
    r = api.c.request("GET", url(root, "exists"), params={"hash": bad}, content=body)
    assert r.status_code == 400 and "hash" in r.text
    assert ok(api.c.request("GET", url(root, "exists"), content=b"[]")) == b"[]"


@pytest.mark.parametrize(
    "body",
    [b"", b"{}", b"[1, -1]", b"[1.5]", b'["1"]', b"[18446744073709551616]", b"[1,"],
)
def test_bad_exists_bodies_get_400(loaded: tuple[Api, str], body: bytes) -> None:
    api, root = loaded
    assert api.c.request("GET", url(root, "exists"), content=body).status_code == 400


#: Tars a load refuses whole: (entries, what the 400 says).
BAD_NAMES = [
    ("0.drc", "supervoxel 0 is reserved"),
    ("000.drc", "supervoxel 0 is reserved"),
    ("x.drc", "file 2 name is invalid"),
    ("drc", "file 2 name is invalid"),
    ("-4.drc", "file 2 name is invalid"),
    ("a/4.drc", "file 2 name is invalid"),
    ("18446744073709551616.drc", "file 2 name is invalid"),
    ("9" * 5000 + ".drc", "file 2 name is invalid"),
    ("4.dat", "file 2 name has bad extension (expect 'drc'): 4.dat"),
    ("4.drc.gz", "bad extension"),
    ("4.", "bad extension"),
    ("4", "file 2 name is invalid"),
]


@pytest.mark.parametrize(("name", "says"), BAD_NAMES)
def test_a_load_with_any_bad_name_writes_nothing(
    loaded: tuple[Api, str], name: str, says: str
) -> None:
    api, root = loaded
    before = stored(api.c, root)
    body = make_tar([(f"2.{EXT}", b"good"), (name, b"bad"), (f"1.{EXT}", b"changed")])
    r = api.c.post(url(root, "load"), content=body)
    assert r.status_code == 400 and says in r.text, r.text
    assert stored(api.c, root) == before


def _truncated() -> bytes:
    return make_tar([(f"2.{EXT}", b"x" * 600)])[:1000]


def _garbage_after_an_entry() -> bytes:
    return make_tar([(f"2.{EXT}", b"x")])[:1024] + b"not a tar header" * 40


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not a tar", "bad tar file"),
        (_truncated(), "bad tar file"),
        (_garbage_after_an_entry(), "bad tar file"),
        (gzip.compress(make_tar([(f"2.{EXT}", b"x")]), mtime=0), "bad tar file"),
        (make_tar([(f"2.{EXT}", b"")], kind=tarfile.DIRTYPE), "not a regular file"),
        (make_tar([(f"2.{EXT}", b"")], kind=tarfile.SYMTYPE), "not a regular file"),
    ],
    ids=["text", "truncated", "garbage-after-entry", "gzipped", "directory", "symlink"],
)
def test_a_load_that_is_not_a_whole_tar_writes_nothing(
    loaded: tuple[Api, str], body: bytes, says: str
) -> None:
    api, root = loaded
    before = stored(api.c, root)
    r = api.c.post(url(root, "load"), content=body)
    assert r.status_code == 400 and says in r.text, r.text
    assert stored(api.c, root) == before


def test_loads_of_empty_tars_and_repeated_names(loaded: tuple[Api, str]) -> None:
    api, root = loaded
    before = stored(api.c, root)
    for empty in (b"", bytes(1024), make_tar([])):
        ok(api.c.post(url(root, "load"), content=empty))
    assert stored(api.c, root) == before
    # Later entries win, as DVID's sequential puts; leading zeros name the same id.
    body = make_tar([(f"2.{EXT}", b"a"), (f"002.{EXT}", b"b"), (f"9.{EXT}", b"")])
    ok(api.c.post(url(root, "load"), content=body))
    assert stored(api.c, root) == {**before, 2: b"b", 9: b""}


@pytest.mark.parametrize("sv", ["0", "-1", "x", "1.5", "18446744073709551616"])
def test_bad_supervoxel_ids_get_400_and_change_nothing(loaded: tuple[Api, str], sv: str) -> None:
    api, root = loaded
    before = stored(api.c, root)
    path = url(root, f"supervoxel/{sv}")
    for r in (api.c.get(path), api.c.post(path, content=b"x"), api.c.delete(path)):
        assert r.status_code == 400, r.text
    assert stored(api.c, root) == before


@pytest.mark.parametrize(
    ("label", "says"),
    [
        ("0", "label 0 is the background"),
        ("x", "label"),
        ("2", "label 2 has no supervoxels"),  # merged into 1
        ("99", "label 99 has no supervoxels"),
    ],
)
def test_bad_bodies_get_400(loaded: tuple[Api, str], label: str, says: str) -> None:
    api, root = loaded
    r = api.c.get(url(root, f"tarfile/{label}"))
    assert r.status_code == 400 and says in r.text
    if label == "2":
        assert r.text.startswith("can't send tarfile for label 2: label 2 has no supervoxels")
    r = api.c.get(url(root, f"missing/{label}"))
    assert r.status_code == 400 and says in r.text
    assert api.c.head(url(root, f"tarfile/{label}")).status_code == 400


def test_creation_needs_an_extension_and_sync_a_labelmap(memory_api: Api) -> None:
    api = memory_api
    root = api.new_repo()
    for settings in ({}, {"Extension": ""}, {"Extension": "a b"}, {"Extension": "a/b"}):
        body = {"typename": "tarsupervoxels", "dataname": "m", **settings}
        r = api.c.post(f"/api/repo/{root}/instance", json=body)
        assert r.status_code == 400, settings
    api.new_instance(root, "tarsupervoxels", "m", Extension="ngmesh")
    api.new_instance(root, "keyvalue", "kv")
    info = ok(api.c.get(url(root, "info", "m")))
    assert b'"Extended":{"Extension":"ngmesh"}' in info
    assert ok(api.c.get(url(root, "help", "m"))).decode() == tarsupervoxels.HELP_FILE.read_text()
    r = api.c.post(url(root, "sync", "m"), json={"sync": "kv"})
    assert r.status_code == 400 and "cannot sync" in r.text
    r = api.c.get(url(root, "tarfile/1", "m"))
    assert r.status_code == 400 and "not synced with any labelmap" in r.text
    ok(api.c.post(url(root, "supervoxel/7", "m"), content=b"x"))  # blobs need no sync
    assert ok(api.c.get(url(root, "supervoxel/7", "m"))) == b"x"
