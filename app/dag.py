"""The version DAG of one repo: nodes, branches, ancestry and the visibility rule.

A node's parents never change after it is created, so its ancestry is computed once and
kept. Everything here is in memory: resolving which ancestor holds a record never touches
the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from app.errors import BadRequest

MASTER = ""


def branch_name(name: str) -> str:
    """DVID calls the unnamed branch ``master``; both spellings mean it."""
    return MASTER if name in ("", "master") else name


@dataclass
class Node:
    """One version: DVID's node JSON, with ``Parents[0]`` the primary parent."""

    uuid: str
    version_id: int
    branch: str = MASTER
    note: str = ""
    log: list[str] = field(default_factory=list)
    locked: bool = False
    parents: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    created: str = ""
    updated: str = ""

    def to_json(self) -> dict:
        return {
            "Branch": self.branch,
            "Note": self.note,
            "Log": list(self.log),
            "UUID": self.uuid,
            "VersionID": self.version_id,
            "Locked": self.locked,
            "Parents": list(self.parents),
            "Children": list(self.children),
            "Created": self.created,
            "Updated": self.updated,
        }

    @classmethod
    def from_json(cls, data: dict) -> Node:
        return cls(
            uuid=data["UUID"],
            version_id=data["VersionID"],
            branch=data.get("Branch", ""),
            note=data.get("Note", ""),
            log=list(data.get("Log") or []),
            locked=bool(data.get("Locked")),
            parents=list(data.get("Parents") or []),
            children=list(data.get("Children") or []),
            created=data.get("Created", ""),
            updated=data.get("Updated", ""),
        )


class VersionDAG:
    """Nodes of one repo indexed by UUID and VersionID, with cached ancestries."""

    def __init__(self, root_uuid: str, nodes: Iterable[Node]) -> None:
        self.root_uuid = root_uuid
        self.by_uuid: dict[str, Node] = {}
        self.by_id: dict[int, Node] = {}
        self._ancestors: dict[int, frozenset[int]] = {}
        for node in nodes:
            self.add(node)

    def add(self, node: Node) -> None:
        self.by_uuid[node.uuid] = node
        self.by_id[node.version_id] = node
        for parent in node.parents:
            children = self.by_id[parent].children
            if node.version_id not in children:
                children.append(node.version_id)

    @property
    def root(self) -> Node:
        return self.by_uuid[self.root_uuid]

    def node(self, uuid: str) -> Node:
        try:
            return self.by_uuid[uuid]
        except KeyError:
            raise BadRequest(f"version {uuid} is not in repo {self.root_uuid}") from None

    def ancestors(self, version_id: int) -> frozenset[int]:
        """The node and every node reachable through parents."""
        cached = self._ancestors.get(version_id)
        if cached is None:
            found = {version_id}
            for parent in self.by_id[version_id].parents:
                found |= self.ancestors(parent)
            cached = self._ancestors[version_id] = frozenset(found)
        return cached

    def branches(self) -> set[str]:
        return {node.branch for node in self.by_uuid.values()}

    def branch_leaf(self, branch: str) -> Node | None:
        """The newest node of ``branch``: the one without a child on the same branch."""
        branch = branch_name(branch)
        leaves = [
            node
            for node in self.by_uuid.values()
            if node.branch == branch
            and not any(self.by_id[c].branch == branch for c in node.children)
        ]
        return max(leaves, key=lambda n: n.version_id, default=None)

    def branch_versions(self, branch: str) -> list[Node]:
        """Leaf first back to the root; at a merge, non-last parents are listed and the walk
        continues through the last parent (DVID's order)."""
        node = self.branch_leaf(branch)
        walk: list[Node] = []
        while node is not None:
            walk.append(node)
            if not node.parents:
                break
            walk.extend(self.by_id[p] for p in node.parents[:-1])
            node = self.by_id[node.parents[-1]]
        return walk

    def nearest_records(
        self, starts: Iterable[int], has_record: Callable[[int], bool]
    ) -> list[int]:
        """The versions whose record a read sees, before conflict checks.

        Walks from ``starts`` towards the root and stops on each path at the first version
        that has a record; a found version that is an ancestor of another found one is
        shadowed and dropped. One result is the answer; several are a conflict unless they
        agree; none means no record. ``has_record`` is an in-memory lookup.
        """
        found: list[int] = []
        seen: set[int] = set()
        frontier = list(starts)
        while frontier:
            version = frontier.pop(0)
            if version in seen:
                continue
            seen.add(version)
            if has_record(version):
                found.append(version)
            else:
                frontier.extend(self.by_id[version].parents)
        if len(found) < 2:
            return found
        return [
            v
            for v in found
            if not any(v != other and v in self.ancestors(other) for other in found)
        ]


def node_dag_json(dag: VersionDAG) -> dict:
    return {
        "Root": dag.root_uuid,
        "Nodes": {uuid: node.to_json() for uuid, node in dag.by_uuid.items()},
    }
