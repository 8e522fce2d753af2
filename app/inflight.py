"""In-flight write markers: how a commit waits for writes that began before it.

A write to an open node first leaves a marker ``meta/inflight/<node uuid>/<time>-<id>``,
then checks (on fresh metadata) that the node is still open, writes, and removes the
marker. A commit locks the node, then waits until the node has no marker younger than
``max_age`` before sealing its data. Either the writer's check comes before the lock — then
the commit sees its marker and waits for it — or after — then the writer sees the lock and
refuses. So an acknowledged write is always part of the committed node, across replicas.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator

from app.storage import keys
from backends import ObjectStore, StoreError

log = logging.getLogger(__name__)


class InflightWrites:
    def __init__(self, store: ObjectStore, max_age: float = 300.0, poll: float = 0.05) -> None:
        self.store = store
        self.max_age = max_age
        self.poll = poll

    @contextlib.contextmanager
    def writing(self, node_uuid: str) -> Iterator[None]:
        key = keys.inflight(node_uuid, time.time_ns(), uuid.uuid4().hex[:12])
        try:
            self.store.put(key, b"")
        except StoreError:
            self._remove(key)  # the put may have landed with its response lost
            raise
        try:
            yield
        finally:
            self._remove(key)

    def _remove(self, key: str) -> None:
        """Best effort: a leftover marker only delays the node's commit until it ages out
        (the response is usually sent already, so there is nobody to tell)."""
        try:
            self.store.delete(key)
        except StoreError as e:
            log.warning("in-flight marker left behind", extra={"key": key, "error": str(e)})

    def pending(self, node_uuid: str) -> int:
        """Markers of writes to ``node_uuid`` that may still be running."""
        oldest = time.time_ns() - int(self.max_age * 1e9)
        prefix = keys.inflight_prefix(node_uuid)
        return sum(
            1
            for info in self.store.list(prefix)
            if int(info.key[len(prefix) :].split("-", 1)[0]) >= oldest
        )

    def wait(self, node_uuid: str) -> None:
        """Block until every write that started before now has finished (or gone stale),
        then remove whatever markers failed writers left behind."""
        deadline = time.monotonic() + self.max_age
        while self.pending(node_uuid) and time.monotonic() < deadline:
            time.sleep(self.poll)
        self.store.delete_prefix(keys.inflight_prefix(node_uuid))
