"""Transactions (app.storage.journal) on the memory and local stores: buffered writes
publish all together at the commit point, an exception publishes nothing, a holder that
died after its commit point is completed by the next writer, staged chunk arrays are
published whole, and the lock is taken over from a dead process."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorstore as ts

from app.storage import keys
from app.storage.journal import REPLACED, ChunkSpace, Head, Journal
from backends import ObjectStore, PreconditionFailed, StoreUnavailable
from backends.local import LocalStore
from backends.memory import MemoryStore

DATA = "d0"
NODE = "n0"


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path) -> ObjectStore:
    return MemoryStore() if request.param == "memory" else LocalStore(tmp_path)


def _write_array(store: ObjectStore, path: str, value: int) -> None:
    spec = {
        "driver": "zarr3",
        "kvstore": store.tensorstore_kvstore(path),
        "metadata": {
            "shape": [8, 8],
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 4]}},
            "chunk_key_encoding": {"name": "default"},
            "data_type": "uint8",
            "fill_value": 0,
            "codecs": [{"name": "bytes", "configuration": {}}],
        },
        "create": True,
        "open": True,
        "store_data_equal_to_fill_value": True,
    }
    array = ts.open(spec, context=store.tensorstore_context() or ts.Context()).result()
    array[:, :].write(np.full((8, 8), value, np.uint8)).result()


def _read_array(store: ObjectStore, path: str) -> np.ndarray:
    spec = {"driver": "zarr3", "kvstore": store.tensorstore_kvstore(path), "open": True}
    array = ts.open(spec, context=store.tensorstore_context() or ts.Context()).result()
    return array[:, :].read().result()


def test_commit_publishes_writes_and_log(store: ObjectStore) -> None:
    journal = Journal(store, DATA, NODE)
    with journal.transaction() as txn:
        txn.store.put("data/d0/rec/a", b"1")
        assert txn.store.get("data/d0/rec/a").data == b"1"  # reads its own writes
        assert store.get("data/d0/rec/a") is None  # nothing visible before the commit
        assert [i.key for i in txn.store.list("data/d0/rec/")] == ["data/d0/rec/a"]
        txn.event({"Action": "test", "n": 1})
    assert store.get("data/d0/rec/a").data == b"1"
    with journal.transaction() as txn:
        txn.store.delete("data/d0/rec/a")
        txn.event({"Action": "test", "n": 2})
    assert store.get("data/d0/rec/a") is None
    assert list(journal.entries()) == [
        (1, [{"Action": "test", "n": 1}]),
        (2, [{"Action": "test", "n": 2}]),
    ]
    assert list(journal.entries(after=1)) == [(2, [{"Action": "test", "n": 2}])]
    head = Head.parse(store.get(keys.txn_head(DATA, NODE)).data)
    assert head.seq == 2 and head.holder is None


def test_exception_publishes_nothing(store: ObjectStore) -> None:
    journal = Journal(store, DATA, NODE)
    with pytest.raises(RuntimeError), journal.transaction() as txn:
        txn.store.put("data/d0/rec/a", b"1")
        _write_array(store, txn.stage_path("data/d0/s0/n0/"), 7)
        raise RuntimeError("abort")
    assert store.get("data/d0/rec/a") is None
    assert list(journal.entries()) == []
    with journal.transaction():  # the lock was released
        pass


def test_staged_chunks_publish_whole(store: ObjectStore) -> None:
    journal = Journal(store, DATA, NODE)
    with journal.transaction() as txn:
        _write_array(store, txn.stage_path("data/d0/s0/n0/"), 5)
    assert (_read_array(store, "data/d0/s0/n0/") == 5).all()
    with journal.transaction() as txn:
        _write_array(store, txn.stage_path("data/d0/s0/n0/"), 0)  # fill value is kept too
    assert (_read_array(store, "data/d0/s0/n0/") == 0).all()


def _stage_objects(store: ObjectStore) -> list[str]:
    """Stage objects, wherever tensorstore keeps them (the memory store's arrays live in
    tensorstore's own memory kvstore)."""
    return ChunkSpace(store).list(f"data/{DATA}/stage/")


def _wait_stage_removed(store: ObjectStore) -> None:
    """Wait until every stage is gone: a stage whose chunks were renamed into place is
    removed in the background, after the transaction (with the objects they replaced)."""
    deadline = time.monotonic() + 30
    while _stage_objects(store) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _stage_objects(store) == []


def test_renamed_chunks_leave_what_they_replaced_to_the_stage(tmp_path) -> None:
    """On the local folder each chunk renamed over an older one first links that one
    into the stage (its space is freed when the stage is removed, after the lock is
    released, not inside the commit): readers see only the new chunks, and the stage,
    replaced objects and all, is removed afterwards."""
    store = LocalStore(tmp_path)
    journal = Journal(store, DATA, NODE)
    with journal.transaction() as txn:
        _write_array(store, txn.stage_path("data/d0/s0/n0/"), 1)
    _wait_stage_removed(store)
    kept: list[str] = []
    real_rename = store.rename

    def noting_rename(source: str, target: str, keep: str | None = None) -> bool:
        done = real_rename(source, target, keep=keep)
        assert keep == source + REPLACED and store.get(keep) is not None
        kept.append(keep)
        return done

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "rename", noting_rename)
        with journal.transaction() as txn:
            _write_array(store, txn.stage_path("data/d0/s0/n0/"), 2)
    assert len(kept) == 5  # zarr.json and 4 chunks
    assert (_read_array(store, "data/d0/s0/n0/") == 2).all()
    _wait_stage_removed(store)


def test_prestaged_chunks_publish_with_the_transaction(store: ObjectStore) -> None:
    """A stage filled before the lock (no lock held meanwhile: another transaction runs
    and commits) is published whole by the transaction it is given to, and removed."""
    journal = Journal(store, DATA, NODE)
    with journal.prestage() as stage:
        _write_array(store, stage.path("data/d0/s0/n0/"), 7)
        with journal.transaction() as other:  # the lock is free while staging
            other.store.put("data/d0/rec/other", b"1")
        assert store.get("data/d0/rec/other") is not None
        assert not ChunkSpace(store).list("data/d0/s0/")  # nothing visible yet
        with journal.transaction(stage) as txn:
            assert txn.id == stage.id
            txn.event({"Action": "prestaged"})
    assert (_read_array(store, "data/d0/s0/n0/") == 7).all()
    assert _stage_objects(store) == []
    assert [events for _, events in journal.entries()][-1] == [{"Action": "prestaged"}]


@pytest.mark.parametrize("where", ["before the transaction", "inside it", "never adopted"])
def test_prestage_that_fails_is_discarded(store: ObjectStore, where: str) -> None:
    """A stage whose writer fails before or inside its transaction, or that no
    transaction adopts, leaves nothing: no stage objects, no chunks, no applied write."""
    journal = Journal(store, DATA, NODE)
    raised = pytest.raises(Crash) if where != "never adopted" else contextlib.nullcontext()
    with raised, journal.prestage() as stage:
        _write_array(store, stage.path("data/d0/s0/n0/"), 3)
        assert _stage_objects(store)
        if where == "before the transaction":
            raise Crash
        if where == "inside it":
            with journal.transaction(stage):
                raise Crash
    assert _stage_objects(store) == []
    assert not ChunkSpace(store).list("data/d0/s0/")
    assert journal.applied() == 0


class Crash(Exception):
    pass


def test_died_after_commit_point_is_completed(store: ObjectStore, monkeypatch) -> None:
    journal = Journal(store, DATA, NODE)
    with journal.transaction() as txn:
        _write_array(store, txn.stage_path("data/d0/s0/n0/"), 1)
        txn.store.put("data/d0/rec/a", b"old")

    real_put = store.put
    calls = {"n": 0}

    def dying_put(key: str, data: bytes, **kw):  # dies after the redo record and one put
        if "/rec/" in key:
            calls["n"] += 1
            if calls["n"] == 2:
                raise Crash()
        return real_put(key, data, **kw)

    monkeypatch.setattr(store, "put", dying_put)
    with pytest.raises(Crash), journal.transaction() as txn:
        _write_array(store, txn.stage_path("data/d0/s0/n0/"), 2)
        txn.store.put("data/d0/rec/a", b"new")
        txn.store.put("data/d0/rec/b", b"new")
        txn.event({"Action": "second"})
    monkeypatch.setattr(store, "put", real_put)
    # Half applied: the chunks and one record are new, the other record is missing.
    assert store.get("data/d0/rec/b") is None
    # The holder is this (live) process; pretend its lease ran out, as after a kill.
    head = Head.parse(store.get(keys.txn_head(DATA, NODE)).data)
    assert head.holder is not None
    head.holder.expires = 0
    store.put(keys.txn_head(DATA, NODE), head.dump())
    journal.recover()
    assert store.get("data/d0/rec/a").data == b"new"
    assert store.get("data/d0/rec/b").data == b"new"
    assert (_read_array(store, "data/d0/s0/n0/") == 2).all()
    assert [seq for seq, _ in journal.entries()] == [2]
    assert Head.parse(store.get(keys.txn_head(DATA, NODE)).data).seq == 2


def test_died_while_renaming_chunks_is_completed(tmp_path, monkeypatch) -> None:
    """On the local folder staged chunks are renamed into place (the stage empties as
    they go): a holder that dies after some renames is completed by the next writer,
    which skips the chunks already moved and moves the rest."""
    store = LocalStore(tmp_path)
    journal = Journal(store, DATA, NODE)
    with journal.transaction() as txn:
        _write_array(store, txn.stage_path("data/d0/s0/n0/"), 1)
    real_rename = store.rename
    moved: list[str] = []

    def dying_rename(source: str, target: str, keep: str | None = None) -> bool:
        if len(moved) == 2:
            raise Crash()
        moved.append(target)
        return real_rename(source, target, keep=keep)

    monkeypatch.setattr(store, "rename", dying_rename)
    with pytest.raises(Crash), journal.transaction() as txn:
        _write_array(store, txn.stage_path("data/d0/s0/n0/"), 2)
    monkeypatch.setattr(store, "rename", real_rename)
    # zarr.json and 4 chunks, 2 of them moved, and the 2 objects those replaced
    assert len(moved) == 2 and len(_stage_objects(store)) == 5
    assert sum(key.endswith(REPLACED) for key in _stage_objects(store)) == 2
    mixed = _read_array(store, "data/d0/s0/n0/")
    assert (mixed == 1).any() and (mixed == 2).any()  # half applied
    head = Head.parse(store.get(keys.txn_head(DATA, NODE)).data)
    assert head.holder is not None
    head.holder.expires = 0  # as after a kill
    store.put(keys.txn_head(DATA, NODE), head.dump())
    journal.recover()
    assert (_read_array(store, "data/d0/s0/n0/") == 2).all()
    _wait_stage_removed(store)
    assert Head.parse(store.get(keys.txn_head(DATA, NODE)).data).seq == 2


def test_dead_process_lock_is_taken_over(tmp_path) -> None:
    """A holder on this host whose process is gone is taken over at once (no lease wait),
    and what it staged before its commit point is thrown away."""
    store = LocalStore(tmp_path)
    script = (
        "import os, sys; sys.path.insert(0, '.');"
        "from backends.local import LocalStore; from app.storage.journal import Journal;"
        f"j = Journal(LocalStore({str(tmp_path)!r}), 'd0', 'n0', lease=3600);"
        "cm = j.transaction(); t = cm.__enter__(); t.store.put('data/d0/rec/a', b'x');"
        "from tests.test_journal import _write_array;"
        "_write_array(j.store, t.stage_path('data/d0/s0/n0/'), 3);"
        "os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=".")
    head = Head.parse(store.get(keys.txn_head(DATA, NODE)).data)
    assert head.holder is not None and head.holder.expires > 1e9
    journal = Journal(store, DATA, NODE, wait=5)
    with journal.transaction() as txn:
        txn.store.put("data/d0/rec/b", b"y")
    assert store.get("data/d0/rec/b").data == b"y"
    assert store.get("data/d0/rec/a") is None
    assert not list(store.list("data/d0/stage/"))
    assert not list(store.list("data/d0/s0/"))


def test_concurrent_transactions_serialize(store: ObjectStore) -> None:
    """Read-modify-write of one counter from 8 threads, each through its own Journal
    object: no increment is lost."""

    def work() -> None:
        for _ in range(15):
            with Journal(store, DATA, NODE).transaction() as txn:
                blob = txn.store.get("data/d0/counter")
                n = int(blob.data) if blob else 0
                txn.store.put("data/d0/counter", str(n + 1).encode())
                txn.event({"n": n + 1})

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("data/d0/counter").data == b"120"
    logged = [e[0]["n"] for _, e in Journal(store, DATA, NODE).entries()]
    assert logged == list(range(1, 121))


def test_unavailable_store_during_apply_is_retried_by_recovery(store: ObjectStore) -> None:
    journal = Journal(store, DATA, NODE)
    real_put = store.put
    failing = {"on": True}

    def flaky(key: str, data: bytes, **kw):
        if failing["on"] and key.endswith("/rec/a"):
            raise StoreUnavailable("simulated")
        return real_put(key, data, **kw)

    store.put = flaky  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable), journal.transaction() as txn:
        txn.store.put("data/d0/rec/a", b"1")
    failing["on"] = False
    store.put = real_put  # type: ignore[method-assign]
    # The holder released the lock, but the redo record is past its commit point.
    with journal.transaction():
        pass
    assert store.get("data/d0/rec/a").data == b"1"


def test_head_put_whose_retry_meets_its_own_write_is_settled(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On S3 a conditional put whose response is lost is retried by boto3 and refused
    (412): the head it wrote no longer has the token it was conditioned on. Found by
    tests/test_reliability_store_faults.py: advancing the head then raised
    PreconditionFailed (a 500) and left the lock held by a live holder until its lease ran
    out, so the next write waited and timed out. Every head put here lands, then reports
    412; the transactions must succeed, one after another, without waiting."""
    journal = Journal(store, DATA, NODE, wait=1)
    real_put = store.put
    refused = {"n": 0}

    def landed_then_refused(key: str, data: bytes, **kw):
        token = real_put(key, data, **kw)
        if key == keys.txn_head(DATA, NODE) and kw.get("if_match"):
            refused["n"] += 1
            raise PreconditionFailed(f"{key}: PreconditionFailed")
        return token

    monkeypatch.setattr(store, "put", landed_then_refused)
    for n in (1, 2):
        with journal.transaction() as txn:
            txn.store.put("data/d0/rec/a", str(n).encode())
            txn.event({"n": n})
    monkeypatch.setattr(store, "put", real_put)
    assert refused["n"] >= 4  # each transaction's advance and release, at least
    assert store.get("data/d0/rec/a").data == b"2"
    assert [seq for seq, _ in journal.entries()] == [1, 2]
    head = Head.parse(store.get(keys.txn_head(DATA, NODE)).data)
    assert head.seq == 2 and head.holder is None
