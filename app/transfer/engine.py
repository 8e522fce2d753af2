"""What a push or pull sends, in what order, skipping what the destination has.

1. **Plan** (nothing written): locate the version at the source; refuse an open node, a
   destination branch that diverged (unless forced) and an instance clash; list each
   instance's objects at both ends. The objects of the nodes the destination lacks (or,
   flattened, the collapsed node's) are sent unless the destination already has them
   with the same size: objects of a locked node never change, so an equal size means an
   equal object, and a rerun after a kill sends only the rest.
2. **Copy** the data objects, several at a time, with progress in bytes and objects.
3. **Merge** the objects shared by every version (repo-wide counters), by their
   datatype's rule.
4. **Publish** the nodes into the destination's DAG (:mod:`app.transfer.publish`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid as uuidlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from app.errors import BadRequest, Conflict
from app.repo import UUID_RE, Repo
from app.transfer.flatten import flatten, nearest_first
from app.transfer.layout import Kind, classify, instance_prefix, node_segment
from app.transfer.publish import (
    PublishRequest,
    diverged,
    diverged_message,
    instance_clash,
    parse_repo,
)
from app.transfer.sides import Side

log = logging.getLogger("dvid_cloud.transfer")

#: Namespace of the DataUUIDs of flattened instances (:func:`flat_data_uuid`).
FLATTENED = uuidlib.UUID("5f0a6c1e-18d4-4c8e-9b2f-7d1e0f3a2b18")
#: Objects copied at once.
WORKERS = 8


@dataclass(frozen=True)
class Item:
    """One object to write at the destination: from a source key, or made (flatten)."""

    store: str
    key: str
    source: str | bytes
    size: int


@dataclass(frozen=True)
class Shared:
    """An object every version shares, merged at the destination (``target``) by its
    type's rule."""

    store: str
    key: str
    target: str
    typename: str


@dataclass
class Plan:
    """What a transfer will do; built before anything is written."""

    node: str
    root: str
    request: PublishRequest
    items: list[Item] = field(default_factory=list)
    shared: list[Shared] = field(default_factory=list)
    skipped: int = 0
    diverged: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(item.size for item in self.items)


def flat_data_uuid(data_uuid: str, node: str) -> str:
    """The DataUUID of an instance in a flattened repo: its own, so that the new repo
    never shares a data folder with the repo it came from (deleting an instance in one
    must not touch the other); derived, so that a rerun resumes into the same folder."""
    return uuidlib.uuid5(FLATTENED, f"{data_uuid}/{node}").hex


def one_node_repo(source: Repo, uuid: str, renamed: dict[str, str]) -> dict[str, Any]:
    """The repo a flattened push stands for: the version alone, as the root, with its
    instances' DataUUIDs ``renamed``."""
    data = source.to_json()
    node = next(n for n in data["Nodes"] if n["UUID"] == uuid)
    node["Parents"], node["Children"] = [], []
    data["Root"], data["Nodes"] = uuid, [node]
    for inst in data["Instances"].values():
        inst["data_uuid"] = renamed[inst["data_uuid"]]
    return data


def _rename(rel: str, renamed: dict[str, str]) -> str:
    """A key's DataUUID segments (sync cursors name their source's) renamed."""
    return "/".join(renamed.get(s, s) for s in rel.split("/"))


def plan(
    source: Side, dest: Side, ref: str, *, flatten_it: bool = False, force: bool = False
) -> Plan:
    """Everything a transfer of ``ref`` will write, and every refusal, before anything is
    written: so bad input (an unknown or open version, a diverged branch, a clash) costs
    nothing at the destination."""
    located = source.locate(ref)
    repo = parse_repo(located.repo, "the source repo")
    node = repo.dag.node(located.node)
    if not node.locked:
        raise BadRequest(
            f"version {node.uuid} is open: commit it first (only committed versions are "
            "pushed or pulled, so a version is the same everywhere it exists)"
        )
    repo.require_final(node, "transfer it")
    if flatten_it and not UUID_RE.match(node.uuid):
        raise BadRequest(f"--flatten makes {node.uuid} a repo root, which a tag cannot be")
    renamed: dict[str, str] = {}
    if flatten_it:
        renamed = {
            i.data_uuid: flat_data_uuid(i.data_uuid, node.uuid) for i in repo.instances.values()
        }
        pushed_repo = parse_repo(one_node_repo(repo, node.uuid, renamed), "the flattened repo")
        pushed = [node.uuid]
    else:
        pushed_repo = repo
        ancestry = repo.dag.ancestors(node.version_id)
        pushed = [repo.dag.by_id[v].uuid for v in sorted(ancestry)]
    stored = dest.repo(pushed_repo.root)
    existing = parse_repo(stored, "the destination repo") if stored is not None else None
    lost: list[str] = []
    if existing is not None:
        clash = instance_clash(existing, pushed_repo)
        if clash:
            raise Conflict(clash)
        lost = diverged(existing, pushed_repo, pushed)
        if lost and not force:
            raise Conflict(diverged_message(pushed_repo.root, lost))
    missing = [u for u in pushed if existing is None or u not in existing.dag.by_uuid]
    for uuid, owner in dest.owners(missing).items():
        if owner != pushed_repo.root:
            raise Conflict(f"UUID {uuid} already belongs to repo {owner} at the destination")
    request = PublishRequest(pushed_repo.to_json(), pushed, force, located.mutation_ids)
    result = Plan(node.uuid, pushed_repo.root, request, diverged=lost)
    if missing:
        order = nearest_first(repo.dag, node.uuid) if flatten_it else []
        for inst in repo.instances.values():
            _plan_instance(
                source,
                dest,
                result,
                inst.store,
                inst.data_uuid,
                inst.typename,
                set(repo.dag.by_uuid),
                # an unversioned instance keeps everything at the root, writable after
                # the root is locked: its objects are compared on every transfer
                set(missing) if inst.versioned else {*missing, repo.root},
                order,
                renamed,
            )
    return result


def _plan_instance(
    source: Side,
    dest: Side,
    result: Plan,
    store: str,
    data_uuid: str,
    typename: str,
    nodes: set[str],
    missing: set[str],
    order: list[str],
    renamed: dict[str, str],
) -> None:
    """Adds one instance's objects to ``result``: those of the ``missing`` nodes (or, with
    an ancestry ``order``, the flattened node's), minus what the destination holds."""
    prefix = instance_prefix(data_uuid)
    target = instance_prefix(renamed.get(data_uuid, data_uuid))
    wanted: dict[str, int] = {}
    everything: dict[str, int] = {}
    for key, size in source.list(store, prefix):
        kind, owner = classify(key[len(prefix) :], nodes)
        if kind is Kind.SHARED:
            rel = key[len(prefix) :]
            result.shared.append(Shared(store, key, target + _rename(rel, renamed), typename))
        elif kind is Kind.NODE:
            everything[key[len(prefix) :]] = size
            if owner in missing:
                wanted[key] = size
    made: list[tuple[str, str | bytes, int]]
    if order:
        flat = flatten(everything, order, lambda rel: source.get(store, prefix + rel))
        made = [
            (
                target + _rename(rel, renamed),
                prefix + src if isinstance(src, str) else src,
                everything[src] if isinstance(src, str) else len(src),
            )
            for rel, src in flat
        ]
    else:
        made = [(key, key, size) for key, size in wanted.items()]
    if not made:
        return
    present = _present(dest, store, target, [key for key, _, _ in made], nodes)
    for key, src, size in made:
        if present.get(key) == size:
            result.skipped += 1
        else:
            result.items.append(Item(store, key, src, size))


#: Past this many node prefixes, the destination's whole instance is listed at once.
MAX_PREFIX_LISTINGS = 64


def _present(
    dest: Side, store: str, prefix: str, keys: list[str], nodes: set[str]
) -> dict[str, int]:
    """Sizes of the destination's objects among ``keys``: one listing per node prefix the
    keys fall under (``.../<node>/`` or ``.../<node>.roaring``), so a push of one new
    version lists little more than that version's own keys."""
    heads: set[str] = set()
    for key in keys:
        segments = key[len(prefix) :].split("/")
        _, node = classify(key[len(prefix) :], nodes)
        at = next(i for i, s in enumerate(segments) if node_segment(s) == node)
        head = prefix + "/".join(segments[: at + 1])
        heads.add(head + "/" if at + 1 < len(segments) else head)
    if len(heads) > MAX_PREFIX_LISTINGS:
        heads = {prefix}
    return {key: size for head in sorted(heads) for key, size in dest.list(store, head)}


Progress = Callable[[int], None]


def copy(source: Side, dest: Side, items: list[Item], progress: Progress) -> None:
    """Write ``items`` at the destination, several at a time; ``progress`` is told the
    bytes of each finished object."""

    def one(item: Item) -> int:
        data = (
            item.source if isinstance(item.source, bytes) else source.get(item.store, item.source)
        )
        dest.put(item.store, item.key, data)
        return len(data)

    pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="transfer")
    try:
        for done in as_completed([pool.submit(one, item) for item in items]):
            progress(done.result())
    finally:  # on a failure, what has not started is dropped: a rerun resumes
        pool.shutdown(wait=True, cancel_futures=True)


def finish(source: Side, dest: Side, planned: Plan) -> dict[str, Any]:
    """Merge the shared objects, then publish (the last step)."""
    for shared in planned.shared:
        data = source.get(shared.store, shared.key)
        dest.merge(shared.store, shared.target, shared.typename, data)
    return dest.publish(planned.request)


@dataclass
class Summary:
    """The closing line of ``push``/``pull``: what was sent and how fast."""

    command: str
    started: float = field(default_factory=time.perf_counter)

    def line(self, planned: Plan, published: dict[str, Any]) -> str:
        seconds = time.perf_counter() - self.started
        return json.dumps(
            {
                "command": self.command,
                "node": planned.node,
                "root": planned.root,
                "nodes_added": len(published.get("added", [])),
                "nodes_removed": len(published.get("removed", [])),
                "objects": len(planned.items),
                "bytes": planned.nbytes,
                "skipped_objects": planned.skipped,
                "shared_objects": len(planned.shared),
                "seconds": round(seconds, 3),
            }
        )
