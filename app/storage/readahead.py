"""Store reads a request starts ahead, while its instance is still being bound.

A read at an open version makes two store calls one after the other: the binding's
check of the repo (is the instance still there, where, is the node still open?), then
the route's own read of its record. On an object store each is a round trip of several
milliseconds whatever it carries, so the second doubles the request's latency though it
rarely depends on the first's answer: the instance bound by this process's previous
request for it (:meth:`app.datatypes.base.Data.read_ahead`) already names the path.
(While the repo's lease runs, app/catalog.py, the binding makes no store call; a read
ahead then overlaps only the binding's thread hop.)

So the dispatcher starts those reads at the moment the fresh binding starts, and the
route takes a read's result (:func:`get`) instead of issuing the same read again, under
two conditions that keep every read as fresh as one issued by the route itself:

* the read was started for this request, after it came (each request has its own
  :class:`ReadAhead`, in a context variable; Starlette's threadpool carries it into the
  route's thread), so it sees every write and delete acknowledged before the request;
* it is of the exact same store object and path: an instance the fresh binding finds
  changed (deleted and made again, moved to another store, a node since committed or a
  branch moved on) reads other paths, or none, and the reads ahead go unused.

Each read ahead is taken at most once; one that failed is read again by its taker.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from contextvars import ContextVar

from backends import ObjectStore
from backends.base import Blob

_current: ContextVar[ReadAhead | None] = ContextVar("dvid_read_ahead", default=None)


class ReadAhead:
    """The reads started ahead for one request: per store path, the store read from and
    the read's outcome to come."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: dict[str, tuple[ObjectStore, Future[Blob | None]]] = {}

    def start(self, executor: Executor, store: ObjectStore, paths: Iterable[str]) -> None:
        """Start ``store.get`` of each path on ``executor`` (not waited for here)."""
        for path in paths:
            future = executor.submit(store.get, path)
            with self._lock:
                self._reads[path] = (store, future)

    def take(self, store: ObjectStore, path: str) -> Future[Blob | None] | None:
        """The read of ``path`` in ``store`` started ahead, if there is one; it is
        handed out once (a later read of the path in this request reads afresh)."""
        with self._lock:
            started = self._reads.get(path)
            if started is None or started[0] is not store:
                return None
            del self._reads[path]
        return started[1]

    def __len__(self) -> int:
        with self._lock:
            return len(self._reads)


@contextlib.contextmanager
def scope(ahead: ReadAhead | None) -> Iterator[None]:
    """Make ``ahead`` the current request's reads ahead until the block ends (None: no
    reads ahead, also none left over from an enclosing scope)."""
    token = _current.set(ahead)
    try:
        yield
    finally:
        _current.reset(token)


def get(store: ObjectStore, path: str) -> Blob | None:
    """``store.get(path)``, answered by the same read if this request started it ahead
    (it waits for that read to end); if that read failed, read again here, so that the
    caller meets the store's error, or its answer, first hand."""
    ahead = _current.get()
    if ahead is not None:
        future = ahead.take(store, path)
        if future is not None:
            with contextlib.suppress(Exception):
                return future.result()
    return store.get(path)
