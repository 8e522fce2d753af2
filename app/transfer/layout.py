"""Which version node an instance object belongs to, read from its key alone.

docs/format.md requires every per-version object under ``data/<DataUUID>/`` to carry its
node's UUID as one whole key segment (``<node>`` or ``<node>.roaring``). So a transfer
finds a node's objects by listing, without knowing any datatype, and everything else
under the instance is either transient (a transaction's ``stage/``) or *shared* by every
version (repo-wide counters, content-addressed blobs), merged by the owning datatype's
rule (:func:`merge_rule`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection
from enum import Enum

from app.errors import BadRequest
from app.repo import UUID_RE

ROARING = ".roaring"

#: ``(current bytes or None, incoming bytes) -> bytes to store, or None to keep current``.
MergeRule = Callable[[str, bytes | None, bytes], bytes | None]


class Kind(Enum):
    """What an object under an instance's root is to a transfer."""

    NODE = "node"  # belongs to one version node of the repo
    SHARED = "shared"  # belongs to every version: merged, never overwritten blindly
    SKIP = "skip"  # transient, or a node the repo's DAG does not hold (inert)


def instance_prefix(data_uuid: str) -> str:
    return f"data/{data_uuid}/"


def node_segment(segment: str) -> str:
    """The UUID a key segment names, ``.roaring`` (ownership bitmaps) stripped."""
    return segment[: -len(ROARING)] if segment.endswith(ROARING) else segment


def classify(rel: str, nodes: Collection[str]) -> tuple[Kind, str]:
    """``rel`` is a key relative to ``data/<DataUUID>/``; returns its kind and, for a node
    object, the node. A segment that looks like a UUID but names no node of the DAG (a
    node removed by a forced push, a crash between claiming a UUID and adding it) makes
    the object inert: it is never sent.

    Tag nodes are named by their tag, which may equal another segment of a key (a tag
    ``v`` or ``c``): a UUID match wins, and a key naming two nodes otherwise is refused
    rather than guessed."""
    if rel.startswith("stage/"):
        return Kind.SKIP, ""
    named = [node_segment(s) for s in rel.split("/")]
    matches = [n for n in named if n in nodes]
    uuids = [n for n in matches if UUID_RE.match(n)]
    if uuids:
        return Kind.NODE, uuids[0]
    if len(set(matches)) > 1 or (matches and named.count(matches[0]) > 1):
        raise BadRequest(
            f"key {rel!r} names more than one version ({', '.join(sorted(set(matches)))}): "
            "a tag equal to a key segment cannot be transferred"
        )
    if matches:
        return Kind.NODE, matches[0]
    if any(UUID_RE.match(n) for n in named):
        return Kind.SKIP, ""
    return Kind.SHARED, ""


def keep_existing(rel: str, current: bytes | None, incoming: bytes) -> bytes | None:
    """The default rule for a shared object: copy it when the destination lacks it, else
    keep the destination's (content-addressed blobs are equal by name)."""
    return incoming if current is None else None


def merge_rule(typename: str) -> MergeRule:
    """The datatype's rule for its shared objects: a ``merge_shared`` function in the
    ``transfer`` module of the datatype's own package, when it has one (labelmap raises
    its label counters to the larger value); else :func:`keep_existing`."""
    from app.datatypes import get

    package = get(typename).__module__
    try:
        module = importlib.import_module(f"{package}.transfer")
    except ModuleNotFoundError:
        return keep_existing
    rule = getattr(module, "merge_shared", None)
    return rule if callable(rule) else keep_existing
