"""One version with its ancestry collapsed into a single root node (``push --flatten``).

Works from the key layout alone (docs/format.md), so every datatype is covered by three
families of per-node objects, told apart by the segments around the node's UUID:

* keyed records, ``<F>/v/<node>/<hexkey>`` with ``<F>/index/<node>``: each key's record
  is the nearest ancestor's; a nearest tombstone drops the key; the index is rebuilt;
* written-set layers, ``<F>/owned/<node>.roaring`` with ``<F>/<node>/<rest>`` (chunk
  arrays ``c/<z>/<y>/<x>``, partitions ``<p>.npz``): each chunk or partition comes from
  the nearest ancestor whose bitmap holds it (a chunk it holds without an object is
  background there, and stays so), and the bitmap is the union;
* anything else of a node (mutation log, transaction head, sync cursors, snapshot) is
  history or a derivative of the version itself: only the flattened node's own is kept.

Ancestry is walked nearest first (breadth first, parents in order), so below a merge a
key both sides changed takes the first parent's value: flattening resolves what a read
there would report as a conflict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import orjson
from pyroaring import BitMap64

from app.dag import VersionDAG
from app.storage.keyed import NodeIndex
from app.transfer.layout import ROARING, Kind, classify, node_segment
from app.volumes.geometry import pack


def nearest_first(dag: VersionDAG, uuid: str) -> list[str]:
    """The node, then its ancestors breadth first (parents in order)."""
    order: list[str] = []
    frontier = [dag.by_uuid[uuid]]
    seen: set[str] = set()
    while frontier:
        node = frontier.pop(0)
        if node.uuid in seen:
            continue
        seen.add(node.uuid)
        order.append(node.uuid)
        frontier.extend(dag.by_id[p] for p in node.parents)
    return order


@dataclass
class _Families:
    keyed: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    bitmaps: dict[str, dict[str, str]] = field(default_factory=dict)
    layers: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)


def _join(prefix: list[str], *more: str) -> str:
    return "/".join([*prefix, *more])


def _sort(objects: dict[str, int], order: list[str]) -> _Families:
    found = _Families()
    rank = set(order)
    for rel in objects:
        kind, node = classify(rel, rank)
        if kind is not Kind.NODE:
            continue
        segments = rel.split("/")
        at = next(i for i, s in enumerate(segments) if node_segment(s) == node)
        before, after = segments[:at], segments[at + 1 :]
        if before and before[-1] == "v" and len(after) == 1:
            family = found.keyed.setdefault(_join(before[:-1]), {})
            family.setdefault(node, {})[after[0]] = rel
        elif before and before[-1] == "index" and not after:
            continue  # rebuilt below
        elif before and before[-1] == "owned" and segments[at].endswith(ROARING) and not after:
            found.bitmaps.setdefault(_join(before[:-1]), {})[node] = rel
        else:
            family = found.layers.setdefault(_join(before), {})
            family.setdefault(node, {})["/".join(after)] = rel
    return found


def _element(rest: str, geometry: tuple[list[int], list[int]] | None) -> int | None:
    """The bitmap id an object of a written-set layer stands for, or None."""
    parts = rest.split("/")
    stem = parts[0].removesuffix(".npz")
    if len(parts) == 1 and parts[0].endswith(".npz") and stem and _HEX.issuperset(stem):
        return int(stem, 16)  # partitions are named in hex (app.storage.idmap)
    if len(parts) == 4 and parts[0] == "c" and geometry is not None:
        shape, chunk = geometry
        try:
            index = [int(p) for p in parts[1:]]
        except ValueError:
            return None
        z, y, x = (i - s // (2 * c) for i, s, c in zip(index, shape, chunk, strict=True))
        return int(pack(np.array([[x, y, z]]))[0])
    return None


def _geometry(meta: bytes) -> tuple[list[int], list[int]] | None:
    parsed = orjson.loads(meta)
    try:
        return list(parsed["shape"]), list(parsed["chunk_grid"]["configuration"]["chunk_shape"])
    except (KeyError, TypeError):
        return None


_HEX = frozenset("0123456789abcdef")

#: A flattened object: its key relative to the instance root, and the source key it is
#: copied from or the bytes it is made of.
Made = tuple[str, str | bytes]


def flatten(objects: dict[str, int], order: list[str], read: Callable[[str], bytes]) -> list[Made]:
    """The objects the flattened node ``order[0]`` holds, from ``objects`` (keys relative
    to one instance's root, with their sizes; objects of nodes outside ``order`` are
    ignored). ``read`` fetches a source object (bitmaps and array metadata)."""
    target = order[0]
    families = _sort(objects, order)
    made: list[Made] = []
    for family, by_node in families.keyed.items():
        winners: dict[str, str] = {}
        for node in reversed(order):  # nearer nodes overwrite
            winners.update(by_node.get(node, {}))
        records: dict[str, bool] = {}
        for hexkey, rel in sorted(winners.items()):
            if objects[rel] == 0:
                continue  # the nearest record is a tombstone: the key is absent here
            made.append((_join([family] if family else [], "v", target, hexkey), rel))
            records[hexkey] = False
        index = NodeIndex(records).to_bytes()
        made.append((_join([family] if family else [], "index", target), index))
    for family in sorted(set(families.layers) | set(families.bitmaps)):
        by_node = families.layers.get(family, {})
        prefix = [family] if family else []
        if family not in families.bitmaps:
            own = by_node.get(target, {})
            made.extend((_join(prefix, target, rest), rel) for rest, rel in own.items())
            continue
        bitmaps = {n: BitMap64.deserialize(read(r)) for n, r in families.bitmaps[family].items()}
        meta = next(
            (by_node[n]["zarr.json"] for n in order if "zarr.json" in by_node.get(n, {})), None
        )
        geometry = _geometry(read(meta)) if meta is not None else None
        if meta is not None:
            made.append((_join(prefix, target, "zarr.json"), meta))
        claimed = BitMap64()
        unmapped: dict[str, str] = {}  # an object no bitmap id names: the nearest one
        for node in order:
            mine = bitmaps.get(node, BitMap64()) - claimed
            for rest, rel in by_node.get(node, {}).items():
                element = _element(rest, geometry)
                if element is not None and element in mine:
                    made.append((_join(prefix, target, rest), rel))
                elif element is None and rest != "zarr.json":
                    unmapped.setdefault(rest, rel)
            claimed |= mine
        made.extend((_join(prefix, target, rest), rel) for rest, rel in unmapped.items())
        made.append((_join(prefix, "owned", target + ROARING), claimed.serialize()))
    return made
