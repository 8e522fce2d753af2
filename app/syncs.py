"""Syncs between instances (DVID's ``POST .../sync``): a subscriber follows the events its
sources log, at the version they happened in.

Delivery is durable and exactly-once in effect:

* a source's events are part of its transaction's redo record, so they are in the store
  (the mutation log, ``data/<source>/log/<node>/<seq>``) before the edit is acknowledged;
* a subscriber applies a source's log entries in order inside one of its own
  transactions, which also advances its cursor ``data/<subscriber>/synced/<source>/<node>``:
  the cursor and the derived change publish together or not at all, and the cursor is
  re-read under the subscriber's lock, so no entry is applied twice.

Any replica delivers: the writer right after its edit, every request that reads or
writes a subscriber at an open version before it is served (so reads see their sources'
edits), and a commit before the node is sealed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.datatypes import bind, get
from app.errors import BadRequest
from app.repo import Instance, Repo
from app.storage import keys
from app.storage.journal import Journal

if TYPE_CHECKING:
    from app.datatypes.base import Data
    from app.services import Services

log = logging.getLogger(__name__)


def source_journal(services: Services, source: Instance, node_uuid: str) -> Journal:
    """The transactions (and mutation log) of ``source`` at ``node_uuid``."""
    return Journal(services.store(source.store), source.data_uuid, node_uuid)


def set_syncs(data: Data, names: str, replace: bool) -> None:
    """``POST .../sync``: subscribe ``data``'s instance to the named instances
    (comma-separated); the subscriber's type may refuse sources (:meth:`Data.check_syncs`)."""
    subscriber, repo = data.instance, data.repo
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    accepts = get(subscriber.typename).accepts_syncs_from
    sources = []
    for name in wanted:
        source = repo.instances.get(name)
        if source is None:
            raise BadRequest(f"no data instance {name!r} to sync with")
        if source.typename not in accepts:
            raise BadRequest(
                f"{subscriber.typename} instance {subscriber.name!r} cannot sync with "
                f"{source.typename} instance {name!r}"
            )
        sources.append(bind(data.services, repo, data.node.uuid, source))
    data.check_syncs(sources)

    def edit(fresh: Repo) -> None:
        inst = fresh.instance(subscriber.name)
        merged = wanted if replace else inst.syncs + [n for n in wanted if n not in inst.syncs]
        inst.syncs = merged
        fresh.touch()

    data.services.catalog.update(repo.root, edit)


def subscribers(repo: Repo, source: Instance) -> list[Instance]:
    return [inst for inst in repo.instances.values() if source.name in inst.syncs]


def catch_up(data: Data, _seen: frozenset[str] = frozenset()) -> int:
    """Apply, at ``data``'s version, every logged event of its sources it has not applied
    yet; returns how many log entries were applied.

    Syncs chain (labelmap -> annotation -> labelsz): a source that itself subscribes is
    caught up first, so the subscriber sees the events its source derived from the edits
    upstream."""
    if not data.instance.syncs or not data.instance.versioned or not data.mutable:
        return 0
    if not data.follows_events:
        return 0
    seen = _seen | {data.instance.name}
    applied = 0
    for name in data.instance.syncs:
        source = data.repo.instances.get(name)
        if source is None:
            continue
        if source.syncs and name not in seen:
            upstream = bind(data.services, data.repo, data.version.uuid, source)
            if not upstream.mutable:  # a commit seals the chain together
                upstream = upstream.for_commit()
            catch_up(upstream, seen)
        journal = source_journal(data.services, source, data.version.uuid)
        if not any(True for _ in journal.entries(after=applied_up_to(data, source))):
            continue
        with data.transaction() as txn:
            cursor = applied_up_to(data, source)  # re-read under the subscriber's lock
            for seq, events in journal.entries(after=cursor):
                data.apply_events(txn, source, events)
                cursor = seq
                applied += 1
            mark_applied(data, source, cursor)
    return applied


def applied_up_to(data: Data, source: Instance) -> int:
    """The last log entry of ``source`` at ``data``'s version that ``data`` applied."""
    blob = data.store.get(
        keys.sync_cursor(data.instance.data_uuid, source.data_uuid, data.version.uuid)
    )
    return int(blob.data) if blob else 0


def mark_applied(data: Data, source: Instance, seq: int) -> None:
    """Record, in ``data``'s open transaction, that it applied ``source``'s log up to
    ``seq`` (so the cursor publishes with the change it accounts for)."""
    assert data.txn is not None, "a sync cursor moves only with the change it records"
    cursor = keys.sync_cursor(data.instance.data_uuid, source.data_uuid, data.version.uuid)
    data.txn.store.put(cursor, str(seq).encode())


def deliver(source: Data) -> None:
    """After ``source`` logged events: bring its subscribers up to date at that version.
    A failure here loses nothing (the next access or the commit delivers), so it is
    logged, not raised."""
    for inst in subscribers(source.repo, source.instance):
        try:
            subscriber = bind(source.services, source.repo, source.version.uuid, inst)
            if catch_up(subscriber):
                deliver(subscriber)
        except Exception as e:
            log.warning(
                "sync delivery deferred",
                extra={"source": source.instance.name, "subscriber": inst.name, "error": str(e)},
            )
