"""What the mutation log tells: ``mutations``, ``mutations-range``, ``history`` and
``supervoxel-splits``.

Edits log DVID's completed-mutation records as events of their transaction
(:mod:`.mutate`), so the per-(instance, version) log ``data/<DataUUID>/log/<node>/<seq>``
is DVID's JSON mutation log and its binary operation log in one: nothing else is stored,
and nothing is replayed at start-up. Voxel-write events (``mutate-blocks``, for synced
instances) share the log and are not mutation records.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from app.dag import Node
from app.diff import divergent
from app.errors import BadRequest

if TYPE_CHECKING:
    from app.datatypes.labelmap import Labelmap

#: The records DVID writes to its JSON mutation log.
COMPLETE_ACTIONS = frozenset(
    {
        "merge-complete",
        "cleave-complete",
        "split-complete",
        "split-supervoxel-complete",
        "renumber-complete",
    }
)


def records(data: Labelmap, node: Node) -> Iterator[dict[str, Any]]:
    """The completed-mutation records logged at ``node``, in commit order."""
    for _, events in data.journal(node).entries():
        for event in events:
            if event.get("Action") in COMPLETE_ACTIONS:
                yield event


def between(data: Labelmap, other: Labelmap) -> list[dict[str, Any]]:
    """The completed-mutation records of the versions exactly one of the two bound
    versions descends from (what a diff between them lists), oldest version first."""
    versions = sorted(divergent(data.dag, data.version, other.version))
    return [r for v in versions for r in records(data, data.dag.by_id[v])]


def json_array(found: Iterator[dict[str, Any]]) -> bytes:
    """A JSON array of records with keys sorted, as Go marshals a map."""
    return b"[" + b",".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in found) + b"]"


def mutations(data: Labelmap, user: str | None) -> bytes:
    """``GET mutations[?userid=]``: this version's records."""
    found = records(data, data.version)
    if user:
        found = (r for r in found if r.get("User") == user)
    return json_array(found)


def sequence(data: Labelmap, begin: Node, end: Node) -> list[Node]:
    """The versions from ``begin`` down to its descendant ``end`` along primary parents
    (DVID's ``GetVersionSequence``); 400 if ``end`` does not descend from ``begin``."""
    walk = [end]
    while walk[-1] is not begin:
        parents = walk[-1].parents
        if not parents:
            raise BadRequest(f"version {end.uuid} does not descend from {begin.uuid}")
        walk.append(data.dag.by_id[parents[0]])
    return walk[::-1]


def mutations_range(data: Labelmap, begin: Node, end: Node) -> bytes:
    return json_array(r for node in sequence(data, begin, end) for r in records(data, node))


def supervoxel_splits(data: Labelmap) -> bytes:
    """``["<uuid>", [[mutid, old, remain, split], ...], ...]`` for every version from
    this one to the root that split supervoxels, nearest first."""
    items: list[Any] = []
    node: Node | None = data.version
    while node is not None:
        splits = []
        for r in records(data, node):
            if r["Action"] == "split-supervoxel-complete":
                splits.append(
                    [r["MutationID"], r["Supervoxel"], r["RemainSupervoxel"], r["SplitSupervoxel"]]
                )
            elif r["Action"] == "split-complete":
                splits.extend(
                    [r["MutationID"], int(sv), ids["Remain"], ids["Split"]]
                    for sv, ids in r["SVSplits"].items()
                )
        if splits:
            items.extend([node.uuid, splits])
        node = data.dag.by_id[node.parents[0]] if node.parents else None
    return orjson.dumps(items)


def history(data: Labelmap, label: int, begin: Node, end: Node) -> bytes:
    """``GET history/{label}/{from}/{to}``: the edits between the two versions of the
    bodies whose supervoxels form ``label`` at ``to``, as DVID writes them: JSON objects
    one after another, no separators."""
    index = data.at_node(end).indices().get(label)
    if index is None:
        raise BadRequest(f"label {label} does not exist at version {end.uuid}")
    svs = sorted({sv for entry in index.blocks.values() for sv in entry.counts})
    origins = set(data.at_node(begin).mapping.lookup(np.array(svs, np.uint64)).tolist())
    members = set(svs)
    out = []
    for node in sequence(data, begin, end):
        for r in records(data, node):
            shown = _history_record(r, origins, members)
            if shown is not None:
                out.append(orjson.dumps(shown))
    return b"".join(out)


def _history_record(
    r: dict[str, Any], origins: set[int], members: set[int]
) -> dict[str, Any] | None:
    """DVID's history shape of a record that concerns the label, else None."""
    action = r["Action"]
    if action == "merge-complete" and r["Target"] in origins:
        return {"Action": "merge", "Target": r["Target"], "Labels": r["Labels"]}
    if action == "cleave-complete" and r["OrigLabel"] in origins:
        return {
            "Action": "cleave",
            "OrigLabel": r["OrigLabel"],
            "CleavedLabel": r["CleavedLabel"],
            "CleavedSupervoxels": r["CleavedSupervoxels"],
        }
    if action == "split-complete" and r["Target"] in origins:
        return {
            "Action": "split",
            "Target": r["Target"],
            "NewLabel": r["NewLabel"],
            "Coarse": False,
        }
    if action == "split-supervoxel-complete" and r["Supervoxel"] in members:
        return {
            "Action": "split-supervoxel",
            "Supervoxel": r["Supervoxel"],
            "SplitSupervoxel": r["SplitSupervoxel"],
            "RemainSupervoxel": r["RemainSupervoxel"],
        }
    return None
