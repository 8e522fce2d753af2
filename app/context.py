"""The version a datatype's data is read and written at, bound once per request.

DVID's ``VersionedCtx``: the versioned helpers (chunk arrays, chunk ownership, keyed
records, the label mapping) take one :class:`VersionContext` when they are built instead of
every method taking ``dag, node, mutable``.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.dag import Node, VersionDAG
from app.storage.keyed import KeyView, VersionedKeys


@dataclass(frozen=True)
class VersionContext:
    """A node of a repo's DAG, and whether its data can still change (an open node, or
    any node of an unversioned instance, whose data all lives at the root)."""

    dag: VersionDAG
    node: Node
    mutable: bool

    def owner(self, version_id: int) -> Node:
        """The node with ``version_id`` (an ancestor holding some record)."""
        return self.dag.by_id[version_id]

    def is_open(self, node: Node) -> bool:
        """Whether ``node``'s own records may still change: only this context's node, and
        only while it is mutable (every ancestor is locked)."""
        return self.mutable and node is self.node

    def view(self, keys: VersionedKeys) -> KeyView:
        """What a read of ``keys`` at this version sees."""
        return keys.at(self.dag, self.node, self.mutable)
