"""The destination's side of a transfer's last step: the pushed nodes enter its DAG.

Everything else a transfer writes is inert until this runs (objects of nodes no DAG
holds are never read), so publishing last leaves nothing half-visible. It

1. claims each node's UUID (``meta/nodes/<uuid>``, create-if-absent; a claim by the same
   repo, left by an interrupted run, is reused; one by another repo refuses);
2. raises the repo's mutation-id counter to the source's (never lowered);
3. adds the nodes, with fresh destination VersionIDs (VersionIDs are per server;
   parents are translated through UUIDs), and the instances the destination lacks, by one
   conditional update of the repo object (or by creating it), re-checking divergence
   on the fresh DAG inside the update.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

import orjson

from app.catalog import Catalog, outlast_leases
from app.dag import Node, VersionDAG
from app.errors import BadRequest, Conflict
from app.repo import TAG_RE, UUID_RE, Instance, Repo
from app.storage import conditional, keys
from app.storage.counter import Counter
from backends import ObjectStore, PreconditionFailed

log = logging.getLogger("dvid_cloud.transfer")


@dataclass(frozen=True)
class PublishRequest:
    """What the source side sends: its repo (for a flattened push, the one-node repo it
    stands for), the nodes to add (parents first), whether to overwrite a diverged
    branch, and the source's mutation-id counter."""

    repo: dict[str, Any]
    nodes: list[str]
    force: bool = False
    mutation_ids: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "nodes": self.nodes,
            "force": self.force,
            "mutation_ids": self.mutation_ids,
        }

    @classmethod
    def from_json(cls, body: Any) -> PublishRequest:
        if not isinstance(body, dict) or not isinstance(body.get("repo"), dict):
            raise BadRequest("publish needs a JSON object with 'repo' and 'nodes'")
        nodes = body.get("nodes")
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            raise BadRequest("publish 'nodes' must be a list of UUIDs")
        mutation_ids = body.get("mutation_ids", 0)
        if not isinstance(mutation_ids, int) or isinstance(mutation_ids, bool):
            raise BadRequest("publish 'mutation_ids' must be an integer")
        return cls(body["repo"], nodes, bool(body.get("force")), mutation_ids)


def parse_repo(data: dict[str, Any], what: str) -> Repo:
    """A repo JSON from the other end, checked before any of it names an object key."""
    try:
        repo = Repo.from_json(data)
        uuids = [repo.root, *(i.data_uuid for i in repo.instances.values())]
        if not all(isinstance(u, str) and UUID_RE.match(u) for u in uuids):
            raise ValueError("a UUID is not 32 lowercase hex characters")
        if not all(UUID_RE.match(u) or TAG_RE.match(u) for u in repo.dag.by_uuid):
            raise ValueError("a node is named neither by a UUID nor by a tag")
        if not all(isinstance(i.store, str) for i in repo.instances.values()):
            raise ValueError("an instance's store is not a name")
        if repo.root not in repo.dag.by_uuid:
            raise ValueError("its root is not one of its nodes")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadRequest(f"{what} is not a repo: {e}") from None
    return repo


def diverged(dest: Repo, source: Repo, pushed: list[str]) -> list[str]:
    """Destination nodes a push of ``pushed`` would overwrite, as git would refuse: a
    node the source lacks, on the branch of a pushed node and below the same parent,
    with everything below it. Empty when the destination's branch is a subset of what is
    pushed (or the push adds nothing)."""
    wanted = set(pushed)
    found: list[str] = []
    for uuid in pushed:
        if uuid in dest.dag.by_uuid:
            continue
        node = source.dag.by_uuid[uuid]
        for parent_id in node.parents:
            parent = dest.dag.by_uuid.get(source.dag.by_id[parent_id].uuid)
            if parent is None:
                continue
            for child_id in parent.children:
                child = dest.dag.by_id[child_id]
                if (
                    child.uuid not in wanted
                    and child.uuid not in source.dag.by_uuid
                    and child.branch == node.branch
                ):
                    found.extend(_below(dest.dag, child))
    return sorted(set(found), key=lambda u: dest.dag.by_uuid[u].version_id)


def _below(dag: VersionDAG, node: Node) -> list[str]:
    found = [node.uuid]
    for child_id in node.children:
        found.extend(_below(dag, dag.by_id[child_id]))
    return found


def diverged_message(root: str, nodes: list[str]) -> str:
    return (
        f"the destination's branch has diverged: it holds {len(nodes)} version(s) the "
        f"source lacks ({', '.join(nodes[:3])}{'...' if len(nodes) > 3 else ''}) in repo "
        f"{root}; pull them first, or push with --force to drop them from its DAG"
    )


def instance_clash(dest: Repo, source: Repo) -> str | None:
    """Why the instances cannot be joined (same name, another instance), or None."""
    for name, inst in source.instances.items():
        theirs = dest.instances.get(name)
        if theirs is not None and theirs.data_uuid != inst.data_uuid:
            return (
                f"instance {name!r} exists at the destination as another instance "
                f"(data UUID {theirs.data_uuid}, pushed {inst.data_uuid})"
            )
    return None


def store_name(stores: dict[str, ObjectStore], default: str, name: str) -> str:
    """Where an instance of the source's store ``name`` lives at the destination: the
    store of that name when the destination has one, else its default store."""
    return name if name in stores else default


class Publisher:
    """The destination's catalog objects, given its stores."""

    def __init__(self, stores: dict[str, ObjectStore], default: str) -> None:
        self.stores = stores
        self.default = default
        self.meta = stores[default]
        self.catalog = Catalog(self.meta)

    def repo(self, root: str) -> Repo | None:
        blob = self.meta.get(keys.repo(root))
        return None if blob is None else parse_repo(orjson.loads(blob.data), "stored repo")

    def publish(self, request: PublishRequest) -> dict[str, Any]:
        source = parse_repo(request.repo, "the pushed repo")
        for uuid in request.nodes:
            if uuid not in source.dag.by_uuid:
                raise BadRequest(f"pushed node {uuid} is not in the pushed repo")
        existing = self.repo(source.root)
        if existing is not None:
            self._check(existing, source, request)
        missing = [u for u in request.nodes if existing is None or u not in existing.dag.by_uuid]
        for uuid in missing:
            self._claim(uuid, source.root)
        Counter(self.meta, keys.mutation_ids(source.root), "mutation ids").advance(
            at_least=request.mutation_ids
        )
        ids = {uuid: self.catalog.next_version_id() for uuid in missing}
        removed: list[str] = []
        if existing is None and self._create(source, request.nodes, ids):
            added = list(request.nodes)
        else:
            added, removed = self._update(source, request, ids)
        log.info(
            "published",
            extra={"root": source.root, "added": len(added), "removed": len(removed)},
        )
        return {"root": source.root, "added": added, "removed": removed}

    def _check(self, dest: Repo, source: Repo, request: PublishRequest) -> None:
        clash = instance_clash(dest, source)
        if clash:
            raise Conflict(clash)
        lost = diverged(dest, source, request.nodes)
        if lost and not request.force:
            raise Conflict(diverged_message(source.root, lost))

    def owners(self, nodes: list[str]) -> dict[str, str]:
        """The repo root each claimed node's marker names (see :meth:`_claim`)."""
        found = {}
        for uuid in nodes:
            if not (UUID_RE.match(uuid) or TAG_RE.match(uuid)):
                raise BadRequest(f"{uuid!r} is neither a UUID nor a tag")
            blob = self.meta.get(keys.node_marker(uuid))
            if blob is not None:
                found[uuid] = blob.data.decode().split()[0] if blob.data.split() else ""
        return found

    def _claim(self, uuid: str, root: str) -> None:
        key = keys.node_marker(uuid)
        blob = self.meta.get(key)
        if blob is None:
            try:
                conditional.put_settled(
                    self.meta, key, f"{root} {uuidlib.uuid4().hex}".encode(), None
                )
                return
            except PreconditionFailed:
                blob = self.meta.get(key)
        owner = blob.data.decode().split()[0] if blob is not None else ""
        if owner != root:
            raise Conflict(f"UUID {uuid} already belongs to repo {owner} at the destination")

    def _instances(self, source: Repo) -> dict[str, Instance]:
        out = {}
        for name, inst in source.instances.items():
            copied = Instance.from_json(dict(vars(inst)))
            copied.store = store_name(self.stores, self.default, inst.store)
            out[name] = copied
        return out

    def _translated(self, source: Repo, uuid: str, ids: dict[str, int], dag: VersionDAG) -> Node:
        node = source.dag.by_uuid[uuid]
        parents = [dag.by_uuid[source.dag.by_id[p].uuid].version_id for p in node.parents]
        return Node(
            uuid=uuid,
            version_id=ids[uuid],
            branch=node.branch,
            note=node.note,
            log=list(node.log),
            locked=True,
            parents=parents,
            created=node.created,
            updated=node.updated,
        )

    def _create(self, source: Repo, nodes: list[str], ids: dict[str, int]) -> bool:
        """A new repo holding just the pushed nodes; False if a rival created it first."""
        dag = VersionDAG(source.root, [])
        for uuid in nodes:
            dag.add(self._translated(source, uuid, ids, dag))
        repo = Repo(
            root=source.root,
            dag=dag,
            alias=source.alias,
            description=source.description,
            log=list(source.log),
            properties=dict(source.properties),
            instances=self._instances(source),
            mutation_id=source.mutation_id,
            created=source.created,
            updated=source.updated,
        )
        try:
            self.meta.put(keys.repo(source.root), orjson.dumps(repo.to_json()), if_absent=True)
        except PreconditionFailed:
            return False
        return True

    def _update(
        self, source: Repo, request: PublishRequest, ids: dict[str, int]
    ) -> tuple[list[str], list[str]]:
        result: dict[str, list[str]] = {}

        def edit(current: bytes | None) -> bytes | None:
            if current is None:
                raise BadRequest(f"repo {source.root} vanished at the destination")
            repo = parse_repo(orjson.loads(current), "stored repo")
            self._check_in_update(repo, source, request)
            lost = diverged(repo, source, request.nodes) if request.force else []
            if lost:
                repo.dag = _without(repo.dag, set(lost))
            added = []
            for uuid in request.nodes:
                if uuid not in repo.dag.by_uuid:
                    repo.dag.add(self._translated(source, uuid, ids, repo.dag))
                    added.append(uuid)
            for name, inst in self._instances(source).items():
                repo.instances.setdefault(name, inst)
            repo.mutation_id = max(repo.mutation_id, source.mutation_id)
            result["added"], result["removed"] = added, lost
            if not added and not lost:
                return None
            repo.touch()
            return orjson.dumps(repo.to_json())

        conditional.update(self.meta, keys.repo(source.root), edit, what=f"repo {source.root}")
        if result["removed"]:  # nodes gone that the destination's replicas may lease
            outlast_leases()
        return result["added"], result["removed"]

    def _check_in_update(self, dest: Repo, source: Repo, request: PublishRequest) -> None:
        self._check(dest, source, request)
        placed = set(dest.dag.by_uuid)
        for uuid in request.nodes:
            parents = [source.dag.by_id[p].uuid for p in source.dag.by_uuid[uuid].parents]
            if not all(p in placed for p in parents):
                raise BadRequest(f"node {uuid}'s parents are neither pushed nor at the destination")
            placed.add(uuid)


def _without(dag: VersionDAG, gone: set[str]) -> VersionDAG:
    """The DAG without ``gone`` (a forced push drops a diverged branch: its objects stay,
    inert, as a crash's orphans do)."""
    gone_ids = {dag.by_uuid[u].version_id for u in gone}
    kept = []
    for node in sorted(dag.by_uuid.values(), key=lambda n: n.version_id):
        if node.uuid in gone:
            continue
        copy = Node.from_json(node.to_json())
        copy.children = [c for c in copy.children if c not in gone_ids]
        kept.append(copy)
    return VersionDAG(dag.root_uuid, kept)
