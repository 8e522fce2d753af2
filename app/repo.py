"""A repo's metadata: its DAG, its data instances, its log; and the rules for changing it.

The whole repo is one JSON object in the store, updated by compare-and-swap (see
:mod:`app.catalog`). The methods here are pure edits of the in-memory model that check
DVID's rules and raise :class:`BadRequest` when one is broken; they run inside a CAS retry
loop, so they must not do I/O.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from app.dag import MASTER, Node, VersionDAG, branch_name
from app.errors import BadRequest, LockedNode

INITIAL_MUTATION_ID = 1_000_000_000  # DVID's first MutationID
UUID_RE = re.compile(r"^[0-9a-f]{32}$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: The characters of every node name (a UUID or a tag), and so of any prefix of one.
NODE_NAME_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")
RESERVED_DATA_NAMES = frozenset({"log", "branch", "note", "commit", "newversion"})
DATA_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def now() -> str:
    """RFC 3339 time in UTC, as DVID writes ``Created``/``Updated`` and log stamps."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_uuid() -> str:
    return uuidlib.uuid4().hex


def check_uuid(value: str, what: str = "UUID") -> str:
    """A client-chosen UUID must be exactly 32 hex characters (lowercased)."""
    if not isinstance(value, str) or not UUID_RE.match(value.lower()):
        raise BadRequest(f"{what} {value!r} is not 32 hexadecimal characters")
    return value.lower()


def stamp(messages: list[str]) -> list[str]:
    """Log lines as DVID keeps them: ``<time>  <message>`` (two spaces)."""
    t = now()
    return [f"{t}  {m}" for m in messages]


@dataclass
class Instance:
    """A data instance: repo-wide, addressable at every node of its repo."""

    name: str
    typename: str
    data_uuid: str
    repo_uuid: str
    versioned: bool = True
    compression: str = "lz4"
    checksum: str = "none"
    store: str = "default"
    tags: dict[str, str] = field(default_factory=dict)
    syncs: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> Instance:
        return cls(**data)


@dataclass
class Repo:
    """DVID's repo: alias, description, log, properties, instances and the version DAG."""

    root: str
    dag: VersionDAG
    alias: str = ""
    description: str = ""
    log: list[str] = field(default_factory=list)
    properties: dict = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    mutation_id: int = INITIAL_MUTATION_ID
    created: str = ""
    updated: str = ""
    #: Ids of the latest catalog updates, newest last (see :meth:`Catalog.update`).
    writes: list[str] = field(default_factory=list)
    #: Nodes locked by a commit that has not finished: writes begun before the lock may
    #: still land there (app/inflight.py), so their data is not final yet.
    sealing: list[str] = field(default_factory=list)

    # --- persistence -------------------------------------------------------------------

    def to_json(self) -> dict:
        return {
            "Root": self.root,
            "Alias": self.alias,
            "Description": self.description,
            "Log": self.log,
            "Properties": self.properties,
            "Instances": {name: asdict(inst) for name, inst in self.instances.items()},
            "Nodes": [node.to_json() for node in self.dag.by_id.values()],
            "MutationID": self.mutation_id,
            "Created": self.created,
            "Updated": self.updated,
            "Writes": self.writes,
            "Sealing": self.sealing,
        }

    @classmethod
    def from_json(cls, data: dict) -> Repo:
        nodes = sorted((Node.from_json(n) for n in data["Nodes"]), key=lambda n: n.version_id)
        return cls(
            root=data["Root"],
            dag=VersionDAG(data["Root"], nodes),
            alias=data.get("Alias", ""),
            description=data.get("Description", ""),
            log=list(data.get("Log") or []),
            properties=data.get("Properties") or {},
            instances={k: Instance.from_json(v) for k, v in data.get("Instances", {}).items()},
            mutation_id=data.get("MutationID", INITIAL_MUTATION_ID),
            created=data.get("Created", ""),
            updated=data.get("Updated", ""),
            writes=list(data.get("Writes") or []),
            sealing=list(data.get("Sealing") or []),
        )

    # --- edits -------------------------------------------------------------------------

    def touch(self, node: Node | None = None) -> None:
        t = now()
        self.updated = t
        if node is not None:
            node.updated = t

    def final(self, node: Node) -> bool:
        """Whether ``node``'s data can never change again: locked, and its commit done."""
        return node.locked and node.uuid not in self.sealing

    def require_final(self, node: Node, action: str) -> None:
        """Refuse ``action`` on a locked node whose commit has not finished (a new node
        above it would read data that may still change); committing it again finishes it."""
        if node.locked and not self.final(node):
            raise BadRequest(
                f"cannot {action}: the commit of node {node.uuid} has not finished; "
                "commit it again to finish it"
            )

    def require_open(self, node: Node, action: str) -> None:
        if node.locked:
            raise LockedNode(f"cannot {action}: node {node.uuid} is locked (committed)")

    def add_child(
        self,
        parents: list[Node],
        child_uuid: str,
        version_id: int,
        branch: str,
        note: str = "",
        locked: bool = False,
    ) -> Node:
        """A new node under ``parents`` (all locked), checking DVID's branch rules."""
        for parent in parents:
            if not parent.locked:
                raise BadRequest(
                    f"parent node {parent.uuid} is not committed: commit it before adding "
                    "children to it"
                )
            self.require_final(parent, "add a child to it")
        if child_uuid in self.dag.by_uuid:
            raise BadRequest(f"UUID {child_uuid} already exists")
        if version_id in self.dag.by_id:
            raise BadRequest(f"VersionID {version_id} is already taken in repo {self.root}")
        t = now()
        child = Node(
            uuid=child_uuid,
            version_id=version_id,
            branch=branch,
            note=note,
            locked=locked,
            parents=[p.version_id for p in parents],
            created=t,
            updated=t,
        )
        self.dag.add(child)
        self.touch()
        return child

    def check_new_version(self, parent: Node) -> str:
        """``newversion``: a child on the parent's own branch; at most one per branch."""
        for child_id in parent.children:
            if self.dag.by_id[child_id].branch == parent.branch:
                raise BadRequest(
                    f"node {parent.uuid} already has a child on branch "
                    f"{parent.branch or 'master'!r}: use a new branch instead"
                )
        return parent.branch

    def check_new_branch(self, parent: Node, name: str) -> str:
        """``branch``: a new name unique in the DAG (the parent's own name acts as
        ``newversion``, as in DVID)."""
        if not name or branch_name(name) == MASTER:
            raise BadRequest("Cannot create a master branch: give a new branch name")
        if name == parent.branch:
            return self.check_new_version(parent)
        if name in self.dag.branches():
            raise BadRequest(f"branch {name!r} already exists in repo {self.root}")
        return name

    def check_new_instance(self, name: str) -> None:
        if not name:
            raise BadRequest("instance creation needs a 'dataname'")
        if name in RESERVED_DATA_NAMES:
            raise BadRequest(f"data name {name!r} is reserved")
        if not DATA_NAME_RE.match(name):
            raise BadRequest(f"data name {name!r} may only use letters, digits, '_', '-', '.'")
        if name in self.instances:
            raise BadRequest(f"Data named {name!r} already exists in repo (root {self.root})")

    def instance(self, name: str) -> Instance:
        try:
            return self.instances[name]
        except KeyError:
            raise BadRequest(f"no data instance {name!r} in repo {self.root}") from None


def new_repo(root_uuid: str, version_id: int, alias: str, description: str) -> Repo:
    t = now()
    root = Node(uuid=root_uuid, version_id=version_id, created=t, updated=t)
    return Repo(
        root=root_uuid,
        dag=VersionDAG(root_uuid, [root]),
        alias=alias,
        description=description,
        created=t,
        updated=t,
    )
