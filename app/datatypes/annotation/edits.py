"""Client edits of an annotation instance: each validates everything before it writes,
runs inside the instance's transaction (the dispatcher opens one per mutating request),
and logs DVID's record for it with the label moves it made (:mod:`.change`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from app.datatypes.annotation import keys
from app.datatypes.annotation.change import Change
from app.datatypes.annotation.elements import (
    Element,
    block_of,
    parse_element,
    parse_elements,
    pos,
    positions,
    without_rels,
)
from app.datatypes.annotation.records import Placed, Tagged, encode_placed
from app.errors import BadRequest

if TYPE_CHECKING:
    from app.datatypes.annotation import Annotation


def _fmt(point: list[int] | tuple[int, ...]) -> str:
    """A point as DVID's ``Point3d.String`` writes it."""
    return "({},{},{})".format(*point)


def post_elements(data: Annotation, body: Any) -> None:
    """``POST elements``: add or replace elements by position (the last of repeated
    positions wins)."""
    elements = list({pos(e): e for e in parse_elements(body)}.values())
    change = Change(data)
    change.place(elements)
    change.log("element-post")
    change.write()


def delete_element(data: Annotation, point: list[int]) -> None:
    """``DELETE element/{x_y_z}``: also drops every relationship pointing at it."""
    change = Change(data)
    at = (point[0], point[1], point[2])
    removed = change.remove(at)
    if removed is None:
        raise BadRequest(f"Did not find element {_fmt(point)} in datastore")
    change.retarget(removed[0]["Rels"] or [], point, None)
    change.log("element-delete", Point=point)
    change.write()


def move_element(data: Annotation, source: list[int], target: list[int]) -> None:
    """``POST move/{from}/{to}``: the element keeps Kind, Tags, Prop and Rels; related
    elements' relationships follow it."""
    change = Change(data)
    at, to = (source[0], source[1], source[2]), (target[0], target[1], target[2])
    if at not in change.block(at):
        raise BadRequest(f"Did not find moved element {_fmt(source)} in datastore")
    if at == to:
        return
    if to in change.block(to):
        raise BadRequest(f"cannot move element {_fmt(source)}: an element exists at {_fmt(target)}")
    removed = change.remove(at)
    assert removed is not None
    element = {**removed[0], "Pos": target}
    change.place([element])
    change.retarget(element["Rels"] or [], source, target)
    change.log("element-move", From=source, To=target)
    change.write()


def parse_blocks(body: Any, size: tuple[int, int, int]) -> dict[str, list[Element]]:
    """``POST blocks`` body: ``{"x,y,z": [elements], ...}``; every element must lie in
    the block it is filed under (else it could never be found again)."""
    if not isinstance(body, dict):
        raise BadRequest('expected a JSON object {"x,y,z": [elements], ...}')
    blocks: dict[str, list[Element]] = {}
    for name, value in body.items():
        try:
            x, y, z = (int(v) for v in name.split(","))
        except ValueError:
            raise BadRequest(f"bad block coordinate {name!r}: expected x,y,z") from None
        elements = parse_elements(value)
        for element in elements:
            if block_of(element["Pos"], size) != (x, y, z):
                raise BadRequest(f"element at {element['Pos']} does not lie in block {name}")
        blocks[keys.block_key((x, y, z))] = elements
    return blocks


def post_blocks(data: Annotation, body: Any) -> int:
    """``POST blocks``: store blocks as given; no label or tag lists, no sync events
    (DVID's bulk path: run ``POST reload`` afterwards). Supervoxels are recorded as 0,
    unknown, until that reload."""
    blocks = parse_blocks(body, data.block_size())
    for key, posted in blocks.items():
        elements = list({pos(e): e for e in posted}.values())
        if elements:
            data.write(key, encode_placed({pos(e): (e, 0) for e in elements}))
        elif data.view().get(key) is not None:
            data.delete(key)
    data.event("blocks-post")
    return len(blocks)


def post_labels(data: Annotation, body: Any) -> None:
    """``POST labels``: ``{"<label>": "<JSON array of elements>"}`` replaces those label
    lists directly (bulk ingestion)."""
    if not isinstance(body, dict):
        raise BadRequest('expected a JSON object {"<label>": "<JSON array of elements>"}')
    lists: dict[int, list[Element]] = {}
    for name, text in body.items():
        if not name.isdigit() or int(name) >= 2**64:
            raise BadRequest(f"bad label {name!r}: expected a uint64")
        if not isinstance(text, str):
            raise BadRequest(f"label {name}: expected a string holding a JSON array")
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"label {name}: malformed JSON: {e}") from None
        if int(name):
            lists[int(name)] = [without_rels(parse_element(v)) for v in parsed or []]
    change = Change(data)
    for label, elements in lists.items():
        current = change.labels.edit(keys.label_key(label))
        for point in list(current):
            change.label_out(point, label)
        supervoxels = change.supervoxels_at(positions(elements))
        for element, sv in zip(elements, supervoxels.tolist(), strict=True):
            change.label_in(element, sv, label)
    change.log("labels-post")
    change.write()


def reload(data: Annotation) -> None:
    """``POST reload``: rebuild every tag and label list from the blocks, looking up each
    element's supervoxel again (after ``POST blocks``, or a segmentation changed in bulk)."""
    change = Change(data)
    view = data.view()
    block_keys = view.keys_in_range(*keys.prefix_range(keys.BLOCK))
    change.blocks.prefetch(block_keys)
    placed = [(key, p, e) for key in block_keys for p, (e, _) in change.blocks[key].items()]
    supervoxels = change.supervoxels_at(positions([e for _, _, e in placed]))
    bodies = change.bodies_of(supervoxels)
    labels: dict[str, Placed] = {}
    tags: dict[str, Tagged] = {}
    for (key, point, element), sv, body in zip(
        placed, supervoxels.tolist(), bodies.tolist(), strict=True
    ):
        if change.blocks[key][point][1] != sv:
            change.blocks.edit(key)[point] = (element, sv)
        if body:
            labels.setdefault(keys.label_key(body), {})[point] = (without_rels(element), sv)
        for tag in element["Tags"] or ():
            tags.setdefault(keys.tag_key(tag), {})[point] = without_rels(element)
    _replace_labels(change, view.keys_in_range(*keys.prefix_range(keys.LABEL)), labels)
    _replace_tags(change, view.keys_in_range(*keys.prefix_range(keys.TAG)), tags)
    change.log("reload")
    change.write()


def _replace_labels(change: Change, existing: list[str], wanted: dict[str, Placed]) -> None:
    """Make the label records equal ``wanted``, touching only entries that differ (each
    logged as a removal and an addition)."""
    change.labels.prefetch(existing)
    for key in set(existing) | set(wanted):
        old, new, label = change.labels[key], wanted.get(key, {}), keys.label_of(key)
        for point in [p for p in old if old[p] != new.get(p)]:
            change.label_out(point, label)
        for point, (element, sv) in new.items():
            if old.get(point) != (element, sv):
                change.label_in(element, sv, label)


def _replace_tags(change: Change, existing: list[str], wanted: dict[str, Tagged]) -> None:
    """Make the tag records equal ``wanted``, rewriting only those that differ."""
    change.tags.prefetch(existing)
    for key in set(existing) | set(wanted):
        new = wanted.get(key, {})
        if change.tags[key] != new:
            record = change.tags.edit(key)
            record.clear()
            record.update(new)
