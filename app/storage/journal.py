"""Transactions: every write to one instance at one version is serialized, all-or-nothing
and durable, on any number of replicas, whatever kills a process.

A write runs as a :class:`Transaction` on ``(instance, version node)``:

1. **Lock.** The transaction head ``data/<data>/txn/<node>/head`` (JSON: the last applied
   sequence number and the current holder with a lease) is taken by a conditional update.
   A holder that is dead (same host, process gone) or whose lease ran out is taken over.
   Within one process, a thread lock queues writers first, so they do not poll the store.
2. **Recover.** If the previous holder died after its commit point, its redo record is
   applied now (roll forward), before anything else is read.
3. **Stage.** The request reads the state as committed so far and computes its writes:
   record puts and deletes are buffered in :attr:`Transaction.store` (which reads its own
   writes); chunk arrays are written by tensorstore under the transaction's stage prefix
   (a writer whose chunks depend on nothing stored may fill that stage before step 1:
   :meth:`Journal.prestage`).
4. **Commit point.** One put of the redo record ``redo-<seq>`` listing every buffered put
   and delete, every staged chunk object to publish and the events to log. Before it
   nothing is visible; after it the transaction will be completed by someone.
5. **Apply.** Staged chunks are copied into place, records written, the mutation-log entry
   ``log/<node>/<seq>`` (the events) written, the head advanced to ``seq`` and released,
   and the redo record and stage removed. Every step is idempotent, so a roll-forward that
   repeats part of it converges.

Readers never wait: a read during step 5 may see part of an unacknowledged write; once
the writer finishes or its successor recovers, the write is whole. Objects shared by all
versions (the repo-wide label counter) are not part of a transaction: they are only ever
raised, through :mod:`app.storage.conditional`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import tensorstore as ts

from app.errors import Contention
from app.storage import conditional, keys, parallel
from backends import Blob, ObjectInfo, ObjectStore, PreconditionFailed, StoreError
from backends.base import UNCHANGED, Renames, Unchanged

log = logging.getLogger(__name__)

REDO_MAGIC = b"DVTX"
#: What a staged key is suffixed with to keep the object its publication replaced
#: (:meth:`ChunkSpace.publish`).
REPLACED = "~"
#: This process, as a lock holder: a dead holder on this host is recognised at once.
HOST = socket.gethostname()
BOOT = uuid.uuid4().hex
#: How long a transaction may hold its lock before others may take it over.
DEFAULT_LEASE = 120.0
#: How long a writer waits for a busy lock before answering 503.
DEFAULT_WAIT = 60.0
#: Mutation-log entries fetched at once when the log is read.
LOG_BATCH = 64
#: Thread locks per (instance, node): writers in one process queue here, not on the store.
_THREAD_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


# --- the head ----------------------------------------------------------------------------


@dataclass
class Holder:
    host: str
    pid: int
    boot: str
    txn: str
    expires: float

    def alive(self) -> bool:
        """Whether the holder may still be writing: its lease runs, and if it lives on this
        host, its process exists (a SIGKILLed process frees its locks at once)."""
        if time.time() > self.expires:
            return False
        if self.host != HOST:
            return True
        if self.pid == os.getpid():
            return self.boot == BOOT
        try:
            os.kill(self.pid, 0)  # PermissionError: alive, another user's
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


@dataclass
class Head:
    seq: int = 0
    holder: Holder | None = None

    @classmethod
    def parse(cls, data: bytes | None) -> Head:
        if data is None:
            return cls()
        parsed = orjson.loads(data)
        holder = parsed.get("holder")
        return cls(parsed["seq"], Holder(**holder) if holder else None)

    def dump(self) -> bytes:
        holder = None if self.holder is None else self.holder.__dict__
        return orjson.dumps({"seq": self.seq, "holder": holder})


# --- the redo record -----------------------------------------------------------------------


@dataclass
class Redo:
    """Everything a transaction publishes, written once at its commit point."""

    seq: int
    txn: str
    puts: dict[str, bytes] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    #: (staged key, final key) of chunk objects, in tensorstore's key space.
    chunks: list[tuple[str, str]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def dump(self) -> bytes:
        offsets, payload, at = [], [], 0
        for key, value in self.puts.items():
            offsets.append((key, at, len(value)))
            payload.append(value)
            at += len(value)
        header = orjson.dumps(
            {
                "seq": self.seq,
                "txn": self.txn,
                "puts": offsets,
                "deletes": self.deletes,
                "chunks": self.chunks,
                "events": self.events,
            }
        )
        return b"".join([REDO_MAGIC, struct.pack("<I", len(header)), header, *payload])

    @classmethod
    def parse(cls, data: bytes) -> Redo:
        if data[:4] != REDO_MAGIC:
            raise StoreError("redo record has no DVTX magic")
        (length,) = struct.unpack_from("<I", data, 4)
        header = orjson.loads(data[8 : 8 + length])
        body = memoryview(data)[8 + length :]
        puts = {key: bytes(body[at : at + n]) for key, at, n in header["puts"]}
        chunks = [(a, b) for a, b in header["chunks"]]
        return cls(header["seq"], header["txn"], puts, header["deletes"], chunks, header["events"])


# --- the buffered store ----------------------------------------------------------------------


_BUFFERED = "buffered-"


def is_buffered(token: str) -> bool:
    """Whether ``token`` is a :class:`BufferedStore`'s for a write it holds: no store
    gives such a token, nor would understand it in a conditional read, so that a cache
    must not keep it beyond the transaction."""
    return token.startswith(_BUFFERED)


class BufferedStore(ObjectStore):
    """An ObjectStore view inside a transaction: reads see the store plus the
    transaction's own buffered writes; writes are buffered until the commit point.
    Conditions on puts are moot under the transaction's lock and are not checked."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.description = inner.description
        self.overlap_calls = inner.overlap_calls
        self.puts: dict[str, bytes] = {}
        self.tokens: dict[str, str] = {}
        self.deletes: set[str] = set()

    def get(self, key: str) -> Blob | None:
        if key in self.puts:
            return Blob(self.puts[key], self.tokens[key])
        if key in self.deletes:
            return None
        return self.inner.get(key)

    def get_if_changed(self, key: str, token: str) -> Blob | Unchanged | None:
        """The inner store's conditional read, unless the transaction wrote ``key``:
        a buffered write carries a token of its own (never one the store gives), so
        that a cache of what was read before the write does not take it as unchanged."""
        if key in self.puts:
            return UNCHANGED if self.tokens[key] == token else self.get(key)
        if key in self.deletes:
            return None
        if is_buffered(token):  # the store would not understand it (a GCS generation)
            return self.inner.get(key)
        return self.inner.get_if_changed(key, token)

    def get_range(self, key: str, start: int, end: int | None = None) -> bytes | None:
        if key in self.puts:
            return self.puts[key][start:end]
        if key in self.deletes:
            return None
        return self.inner.get_range(key, start, end)

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False
    ) -> str:
        self.deletes.discard(key)
        # the token first: a read in another thread finds it once it finds the data
        self.tokens[key] = token = f"{_BUFFERED}{uuid.uuid4().hex}"
        self.puts[key] = bytes(data)
        return token

    def delete(self, key: str) -> None:
        self.puts.pop(key, None)
        self.tokens.pop(key, None)
        self.deletes.add(key)

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        found = {
            info.key: info
            for info in self.inner.list(prefix, start_after=start_after)
            if info.key not in self.deletes
        }
        for key, value in self.puts.items():
            if key.startswith(prefix) and (start_after is None or key > start_after):
                found[key] = ObjectInfo(key, len(value))
        for key in sorted(found):
            yield found[key]

    def copy(self, source: str, target: str) -> bool:
        blob = self.get(source)
        if blob is None:
            return False
        self.put(target, blob.data)
        return True

    def tensorstore_kvstore(self, path: str) -> dict[str, Any]:
        return self.inner.tensorstore_kvstore(path)

    def tensorstore_context(self) -> Any:
        return self.inner.tensorstore_context()

    def tensorstore_shares_keys(self) -> bool:
        return self.inner.tensorstore_shares_keys()


# --- chunk objects in tensorstore's key space --------------------------------------------------


class ChunkSpace:
    """Lists, copies and removes objects that tensorstore wrote, whether or not the store
    sees them as its own objects (capability ``tensorstore_shares_keys``)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.shared = store.tensorstore_shares_keys()
        #: Whether staged objects are renamed into place (one system call each, one
        #: after another) rather than copied (overlapped round trips).
        self.renames = self.shared and isinstance(store, Renames)

    def _kv(self) -> Any:
        spec = self.store.tensorstore_kvstore("")
        return ts.KvStore.open(spec, context=self.store.tensorstore_context()).result()

    def list(self, prefix: str) -> list[str]:
        if self.shared:
            return [info.key for info in self.store.list(prefix)]
        kv = self._kv()
        return sorted(
            k.decode() for k in kv.list(ts.KvStore.KeyRange(prefix, prefix + "\xff")).result()
        )

    def copy(self, source: str, target: str) -> bool:
        if self.shared:
            return self.store.copy(source, target)
        kv = self._kv()
        found = kv.read(source).result()
        if found.state != "value":
            return False
        kv.write(target, found.value).result()
        return True

    def publish(self, pairs: Sequence[tuple[str, str]]) -> Sequence[str]:
        """Put each staged object (first) over its final key (second), each whole and
        atomically: renamed where the store can, else copied overlapped. Returns the
        staged keys that were missing: an earlier apply of the same record already
        moved them, or removed the stage after copying them.

        A renamed object's predecessor is kept in the stage, at its staged key plus
        ``~`` (:data:`REPLACED`), until the stage is removed after the lock is released:
        freeing its space is then off the writer's answer (on a local folder mounted
        with ``discard``, a wait for the device per replaced chunk). An apply repeated
        after a kill finds it there or links the new object there: either is removed
        with the stage, and no staged key ends in ``~``."""
        if self.renames:
            assert isinstance(self.store, Renames)
            rename = self.store.rename
            return [
                source
                for source, target in pairs
                if not rename(source, target, keep=source + REPLACED)
            ]
        copied = parallel.each(
            lambda pair: self.copy(*pair), pairs, overlap=self.store.overlap_calls
        )
        return [source for (source, _), done in zip(pairs, copied, strict=True) if not done]

    def delete_prefix(self, prefix: str) -> None:
        if self.shared:
            self.store.delete_prefix(prefix)
            return
        self._kv().delete_range(ts.KvStore.KeyRange(prefix, prefix + "\xff")).result()


# --- transactions ------------------------------------------------------------------------------


def new_txn_id() -> str:
    """A transaction's id: unique, and it names its stage."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


class Stage:
    """Where one transaction's chunk arrays are written before its commit publishes them.

    A transaction usually opens its own stage once it holds the lock. A writer whose
    chunks do not depend on what the version holds (whole blocks of a bulk ingest) may
    fill a stage first, outside the lock, with :meth:`Journal.prestage`, and hand it to
    :meth:`Journal.transaction`: encoding and uploading then overlap across writers, and
    only the publish takes turns.

    On a local folder, staged chunk files are written as tensorstore writes any file
    (context ``file_io_sync``: each file and its folder synced), as the in-process
    baseline does; not for durability: the local store promises that a write survives
    the death of its process, not of the machine (its redo records, heads and the
    renames that publish are not synced), and that holds without the syncs. Without
    them, each rename that publishes a chunk over the node's previous one makes ext4
    write the new file's data out first (its replace-by-rename rule), one chunk after
    another inside the commit, where the syncs overlap in tensorstore's threads: POST
    raw 256³ uint8 measured slower (A/B medians 106-146 -> 138-233 ms, load 5-8)."""

    def __init__(self, data_uuid: str, txn_id: str) -> None:
        self.id = txn_id
        self.prefix = keys.txn_stage(data_uuid, txn_id)
        #: Per staged array path, the ids of the chunks staged so far (for reads).
        self.staged: dict[str, set[int]] = {}
        #: Per array path, chunks staged before the lock and not yet adopted by the
        #: transaction (until then its reads do not see them).
        self.prestaged: dict[str, set[int]] = {}
        #: Whether a path was handed out (only then can the stage hold objects).
        self.touched = False
        #: Whether a transaction took the stage over (it then publishes or discards it).
        self.adopted = False

    def path(self, path: str) -> str:
        self.touched = True
        return self.prefix + path


class Transaction:
    """One write to an instance at a version; see the module docstring."""

    def __init__(self, journal: Journal, seq: int, stage: Stage) -> None:
        self.journal = journal
        self.seq = seq
        self.stage = stage
        self.id = stage.id
        self.store = BufferedStore(journal.store)
        self.events: list[dict[str, Any]] = []
        #: Per staged array path, the ids of the chunks staged so far (for reads).
        self.staged = stage.staged
        #: Between the start of the commit-point write and the head's advance.
        self.committing = False

    def stage_path(self, path: str) -> str:
        """Where chunk arrays bound for ``path`` are written during this transaction."""
        return self.stage.path(path)

    def event(self, event: dict[str, Any]) -> None:
        """Record an event for the mutation log and for synced instances."""
        self.events.append(event)

    @property
    def touched_arrays(self) -> bool:
        """Whether a stage path was handed out: only then can the stage hold objects
        (edits of the mapping and indices alone skip listing and clearing it)."""
        return self.stage.touched

    def redo(self) -> Redo:
        stage = self.stage.prefix
        staged = ChunkSpace(self.journal.store).list(stage) if self.touched_arrays else []
        return Redo(
            self.seq,
            self.id,
            dict(self.store.puts),
            sorted(self.store.deletes),
            [(key, key[len(stage) :]) for key in staged],
            self.events,
        )


class Journal:
    """The transactions of one instance at one version node."""

    def __init__(
        self,
        store: ObjectStore,
        data_uuid: str,
        node_uuid: str,
        lease: float = DEFAULT_LEASE,
        wait: float = DEFAULT_WAIT,
    ) -> None:
        self.store = store
        self.data_uuid = data_uuid
        self.node_uuid = node_uuid
        self.lease = lease
        self.wait = wait
        self.head_key = keys.txn_head(data_uuid, node_uuid)

    def _thread_lock(self) -> threading.Lock:
        with _THREAD_LOCKS_GUARD:
            return _THREAD_LOCKS.setdefault((self.data_uuid, self.node_uuid), threading.Lock())

    # --- the lock ------------------------------------------------------------------------

    def _acquire(self, txn_id: str) -> tuple[Head, str, Holder | None]:
        """Take the head for this process, waiting for a live holder; (head, token, the
        dead holder taken over)."""
        deadline = time.monotonic() + self.wait
        attempt = 0
        while True:
            blob = self.store.get(self.head_key)
            head = Head.parse(blob.data if blob is not None else None)
            if head.holder is None or not head.holder.alive():
                if head.holder is not None:
                    log.warning(
                        "taking over a transaction lock",
                        extra={"key": self.head_key, "holder": head.holder.__dict__},
                    )
                mine = Head(
                    head.seq, Holder(HOST, os.getpid(), BOOT, txn_id, time.time() + self.lease)
                )
                try:
                    token = conditional.put_settled(
                        self.store, self.head_key, mine.dump(), blob.token if blob else None
                    )
                    return mine, token, head.holder
                except PreconditionFailed:
                    pass
            if time.monotonic() > deadline:
                raise Contention(
                    f"version {self.node_uuid} of instance {self.data_uuid} is busy: "
                    f"another write held it for more than {self.wait:g} s"
                )
            time.sleep(conditional.backoff(min(attempt, 7)))
            attempt += 1

    def _release(self, head: Head, token: str, committing: bool) -> None:
        """Free the lock; if a redo record past the head may be unapplied (a commit failed
        after its commit point, or without knowing whether it passed it), leave an expired
        holder, so the next reader or writer completes it."""
        released = Head(head.seq)
        pending = keys.txn_redo(self.data_uuid, self.node_uuid, head.seq + 1)
        if committing and self.store.exists(pending):
            assert head.holder is not None
            released.holder = Holder(**{**head.holder.__dict__, "expires": 0.0})
        try:
            self.store.put(self.head_key, released.dump(), if_match=token)
        except PreconditionFailed:
            log.warning("transaction lock was taken over", extra={"key": self.head_key})
        except StoreError as e:  # the lease frees it later
            log.warning("could not release transaction lock", extra={"error": str(e)})

    def _advance(self, head: Head, token: str, seq: int) -> str:
        """Record ``seq`` as applied. A lost response is settled by reading the head back
        (a store client's retry of a put that landed meets its own write and gets 412);
        a head that holds another's state means the lease ran out and the lock was taken
        over, whose new holder completes this transaction from its redo record."""
        head.seq = seq
        try:
            return conditional.put_settled(self.store, self.head_key, head.dump(), token)
        except PreconditionFailed:
            raise Contention(f"lost the lock of {self.head_key}: its lease ran out") from None

    # --- recovery ------------------------------------------------------------------------

    def _recover(self, head: Head, token: str) -> str:
        """Apply redo records left by holders that died after their commit point."""
        while True:
            blob = self.store.get(keys.txn_redo(self.data_uuid, self.node_uuid, head.seq + 1))
            if blob is None:
                return token
            redo = Redo.parse(blob.data)
            log.warning("completing an interrupted transaction", extra={"seq": redo.seq})
            self._apply(redo)
            token = self._advance(head, token, redo.seq)
            self._forget(redo)

    def applied(self) -> int:
        """The sequence number of the last transaction applied at this version: it grows
        with every published write, so it tells a cache of the version's records whether
        it is still current (one small get)."""
        blob = self.store.get(self.head_key)
        return Head.parse(blob.data if blob is not None else None).seq

    def recover(self) -> str | None:
        """Complete an interrupted transaction if its holder is gone (readers call this
        before reading an open version, so a crash never leaves a write half-visible).

        Returns the version's *settled stamp* when no transaction holds the head: the
        head's token ("" if no transaction ever ran). Every transaction puts the head as
        it takes and releases it, so a stamp seen again means nothing was published at
        this version in between, on any replica; what a reader derives from the
        version's data may be kept under it. None while a writer holds the head (its
        write may be half-applied) or after completing a dead one's."""
        blob = self.store.get(self.head_key)
        if blob is None:
            return ""
        head = Head.parse(blob.data)
        if head.holder is None:
            return blob.token
        if head.holder.alive():
            return None
        with self.transaction():
            pass
        return None

    # --- running a transaction -----------------------------------------------------------

    @contextlib.contextmanager
    def prestage(self) -> Iterator[Stage]:
        """A stage to fill before the lock is taken, for :meth:`transaction`. It is thrown
        away if the body raises or never hands it to a transaction. A process killed
        before its transaction's commit point leaves it behind, inert: only a redo
        record names staged chunks to publish."""
        stage = Stage(self.data_uuid, new_txn_id())
        try:
            yield stage
        finally:
            if stage.touched and not stage.adopted:
                self._discard(stage.id)

    @contextlib.contextmanager
    def transaction(self, stage: Stage | None = None) -> Iterator[Transaction]:
        """Run a write: the body stages it (in ``stage`` if given, already partly filled
        by :meth:`prestage`), the exit publishes it (or, on an exception, throws it
        away)."""
        lock = self._thread_lock()
        if not lock.acquire(timeout=self.wait):
            raise Contention(f"version {self.node_uuid} of instance {self.data_uuid} is busy")
        try:
            if stage is None:
                stage = Stage(self.data_uuid, new_txn_id())
            head, token, dead = self._acquire(stage.id)
            txn: Transaction | None = None
            try:
                token = self._recover(head, token)
                if dead is not None:  # what it staged without reaching its commit point
                    self._discard(dead.txn)
                txn = Transaction(self, head.seq + 1, stage)
                stage.adopted = True
                try:
                    yield txn
                except BaseException:
                    if txn.touched_arrays:
                        self._discard(txn.id)
                    raise
                redo = txn.redo()  # lists the stage once
                if redo.puts or redo.deletes or redo.chunks or redo.events:
                    token = self._commit(txn, redo, head, token)
                elif txn.touched_arrays:
                    self._discard(txn.id)
            finally:
                self._release(head, token, txn is not None and txn.committing)
        finally:
            lock.release()

    def _discard(self, txn_id: str) -> None:
        with contextlib.suppress(StoreError):
            ChunkSpace(self.store).delete_prefix(keys.txn_stage(self.data_uuid, txn_id))

    def _commit(self, txn: Transaction, redo: Redo, head: Head, token: str) -> str:
        current = self.store.get(self.head_key)
        if current is None or current.token != token:
            raise Contention(f"lost the lock of {self.head_key}: its lease ran out")
        redo_key = keys.txn_redo(self.data_uuid, self.node_uuid, redo.seq)
        txn.committing = True
        self.store.put(redo_key, redo.dump())  # the commit point
        self._apply(redo)
        token = self._advance(head, token, redo.seq)
        txn.committing = False
        self._forget(redo, stage=txn.touched_arrays)
        return token

    def _apply(self, redo: Redo) -> None:
        """Publish in phases (chunks, then puts, then deletes, then the log entry); the
        objects within a phase are independent and go out overlapped where the store
        says that pays (:attr:`~backends.ObjectStore.overlap_calls`)."""
        # Only a roll-forward of a record applied before (in part, where chunks are
        # moved; whole, where the stage was removed after copying) misses staged
        # chunks: their final objects are then in place.
        for key in ChunkSpace(self.store).publish(redo.chunks):
            log.info("staged chunk already published", extra={"key": key})
        parallel.each(
            lambda item: self.store.put(*item), redo.puts.items(), overlap=self.store.overlap_calls
        )
        parallel.each(self.store.delete, redo.deletes, overlap=self.store.overlap_calls)
        if redo.events:
            self.store.put(
                keys.log_entry(self.data_uuid, self.node_uuid, redo.seq),
                orjson.dumps(redo.events),
            )

    def _forget(self, redo: Redo, stage: bool = True) -> None:
        """Remove the applied redo record and (unless it is known to be empty) its stage;
        best effort: both are inert. A stage whose chunks were all renamed into place
        holds only the objects they replaced and its folders: they are removed in the
        background, off the answer's path (tens of milliseconds of directory updates and
        freed space on a busy file system)."""
        with contextlib.suppress(StoreError):
            self.store.delete(keys.txn_redo(self.data_uuid, self.node_uuid, redo.seq))
            if not stage:
                return
            chunks = ChunkSpace(self.store)
            prefix = keys.txn_stage(self.data_uuid, redo.txn)
            if chunks.renames and redo.chunks:
                parallel.detach(lambda: chunks.delete_prefix(prefix))
            else:
                chunks.delete_prefix(prefix)

    # --- the mutation log ----------------------------------------------------------------

    def entries(self, after: int = 0) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """Logged events with sequence numbers above ``after``, in order."""
        prefix = keys.log_prefix(self.data_uuid, self.node_uuid)
        start = keys.log_entry(self.data_uuid, self.node_uuid, after) if after else None
        listed = [info.key for info in self.store.list(prefix, start_after=start)]
        for at in range(0, len(listed), LOG_BATCH):
            batch = listed[at : at + LOG_BATCH]
            for key, blob in zip(
                batch,
                parallel.each(self.store.get, batch, overlap=self.store.overlap_calls),
                strict=True,
            ):
                if blob is not None:
                    yield int(key[len(prefix) :]), orjson.loads(blob.data)
