"""Annotation elements: parsing posted JSON strictly, and the JSON DVID writes back.

An element is kept as the dict DVID's Go marshals, keys in its field order (``Pos``,
``Kind``, ``Tags``, ``Prop``, ``Rels``), ``Prop`` keys sorted as Go sorts map keys, and
absent fields as ``None`` (emitted ``null``). orjson keeps dict order, so dumping a stored
element reproduces DVID's bytes. Lists without relationships (label and tag lists) hold the
same dict without ``Rels`` (DVID's ``ElementNR``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.errors import BadRequest

Element = dict[str, Any]
Pos = tuple[int, int, int]

KINDS = ("PostSyn", "PreSyn", "Gap", "Note", "Unknown")
#: Kinds counted as synaptic (labelsz's ``AllSyn``).
SYNAPTIC = frozenset({"PostSyn", "PreSyn", "Gap"})
RELATIONS = ("PostSynTo", "PreSynTo", "ConvergentTo", "GroupedWith", "UnknownRelationship")
INT32 = (-(2**31), 2**31 - 1)


def parse_point(value: Any, what: str) -> list[int]:
    """A ``[x, y, z]`` of int32s, or 400."""
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(type(v) is int and INT32[0] <= v <= INT32[1] for v in value)
    ):
        raise BadRequest(f"{what} must be 3 integers [x, y, z], not {value!r}")
    return list(value)


def parse_coord(text: str, what: str) -> list[int]:
    """``x_y_z`` from a URL, or 400."""
    parts = text.split("_")
    try:
        return parse_point([int(p) for p in parts], what)
    except ValueError:
        raise BadRequest(f"{what} must be x_y_z integers, not {text!r}") from None


def _tags(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise BadRequest(f"element Tags must be a list of strings, not {value!r}")
    return value


def _prop(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadRequest(f"element Prop must be an object of strings, not {value!r}")
    return dict(sorted(value.items()))


def _rels(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadRequest(f"element Rels must be a list, not {value!r}")
    rels = []
    for rel in value:
        if not isinstance(rel, dict):
            raise BadRequest(f"a relationship must be an object, not {rel!r}")
        kind = rel.get("Rel", "UnknownRelationship")
        if kind not in RELATIONS:
            raise BadRequest(f"Unknown relationship type in JSON: {kind!r}")
        rels.append({"Rel": kind, "To": parse_point(rel.get("To"), "relationship To")})
    return rels


def parse_element(value: Any) -> Element:
    """One posted element, normalized; 400 naming what is wrong. Unknown fields are
    ignored, as Go's decoder ignores them."""
    if not isinstance(value, dict):
        raise BadRequest(f"an element must be a JSON object, not {value!r}")
    kind = value.get("Kind", "Unknown")
    if kind not in KINDS:
        raise BadRequest(f"Unknown element type in JSON: {kind!r}")
    return {
        "Pos": parse_point(value.get("Pos"), "element Pos"),
        "Kind": kind,
        "Tags": _tags(value.get("Tags")),
        "Prop": _prop(value.get("Prop")),
        "Rels": _rels(value.get("Rels")),
    }


def parse_elements(value: Any) -> list[Element]:
    if not isinstance(value, list):
        raise BadRequest("expected a JSON array of elements")
    return [parse_element(v) for v in value]


def without_rels(element: Element) -> Element:
    """DVID's ``ElementNR``: the element as label and tag lists hold it."""
    return {k: v for k, v in element.items() if k != "Rels"}


def pos(element: Element) -> Pos:
    x, y, z = element["Pos"]
    return x, y, z


def positions(elements: list[Element]) -> np.ndarray:
    """``(n, 3)`` int64 x,y,z."""
    return np.array([e["Pos"] for e in elements], dtype=np.int64).reshape(-1, 3)


def block_of(point: Pos | list[int], size: tuple[int, int, int]) -> Pos:
    x, y, z = point
    return x // size[0], y // size[1], z // size[2]


def verbose_rels(element: Element, partners: dict[Pos, Element]) -> list[dict[str, Any]]:
    """Relationships with the partner's Kind, Tags and Prop flattened in (DVID's
    ``VerboseRelationship``: each omitted when empty; Kind also when Unknown)."""
    out = []
    for rel in element.get("Rels") or []:
        verbose: dict[str, Any] = {"Rel": rel["Rel"], "To": rel["To"]}
        x, y, z = rel["To"]
        partner = partners.get((x, y, z))
        if partner is not None:
            if partner["Kind"] != "Unknown":
                verbose["Kind"] = partner["Kind"]
            if partner["Tags"]:
                verbose["Tags"] = partner["Tags"]
            if partner["Prop"]:
                verbose["Prop"] = partner["Prop"]
        out.append(verbose)
    return out
