"""Creating and committing versions: the metadata edit plus what follows it.

A new node first claims its UUID server-wide (an ``if_absent`` marker), then is added to
the repo by compare-and-swap; if the edit is refused the claim is released. A commit
locks the node by compare-and-swap, waits for writes still in flight (:mod:`app.inflight`),
then lets every datatype seal the node's data.
"""

from __future__ import annotations

from collections.abc import Callable

from app.dag import Node
from app.datatypes import bind
from app.errors import BadRequest, DVIDError
from app.repo import Repo, new_uuid, stamp
from app.services import Services
from app.syncs import catch_up

BranchRule = Callable[[Repo, list[Node]], str]


def create_child(
    services: Services,
    root: str,
    parent_uuids: list[str],
    branch_rule: BranchRule,
    child_uuid: str | None = None,
    note: str = "",
    locked: bool = False,
) -> Node:
    """Add a node under ``parent_uuids``; ``branch_rule`` checks the parents and names
    the child's branch (it raises to refuse)."""
    catalog = services.catalog
    child_uuid = child_uuid or new_uuid()
    version_id = catalog.next_version_id()
    catalog.claim_uuid(child_uuid, root)

    def edit(repo: Repo) -> Node:
        parents = [repo.dag.node(u) for u in parent_uuids]
        branch = branch_rule(repo, parents)
        return repo.add_child(parents, child_uuid, version_id, branch, note, locked)

    try:
        child = catalog.update(root, edit)
    except DVIDError:
        # Refused for certain: the UUID is free again. (After a store failure the node
        # may have landed; an orphan marker is harmless, a deleted live one is not.)
        catalog.release_uuid(child_uuid)
        raise
    if locked:
        seal(services, catalog.repo(root), child.uuid)
    return child


def commit(services: Services, root: str, uuid: str, note: str, log: list[str]) -> None:
    """Lock ``uuid``, then finish its data: the node stays in the repo's ``sealing`` list
    (not final: nothing read there is kept as never changing) until the writes begun
    before the lock have landed and every datatype has sealed it. A commit that died
    before that is finished by committing the node again."""

    def edit(repo: Repo) -> None:
        node = repo.dag.node(uuid)
        lines = stamp(log)
        if not node.locked:
            node.locked = True
            repo.sealing.append(uuid)
        elif uuid in repo.sealing:
            # An earlier commit locked it and did not finish: this one finishes it. It
            # may be that commit's retry, whose lines are logged already.
            logged = {_message(entry) for entry in node.log}
            lines = [line for line in lines if _message(line) not in logged]
        else:
            raise BadRequest(f"node {uuid} already committed")
        if note:
            node.note = note
        node.log.extend(lines)
        repo.touch(node)

    def sealed(repo: Repo) -> None:
        if uuid in repo.sealing:
            repo.sealing.remove(uuid)

    services.catalog.update(root, edit)
    services.inflight.wait(uuid)
    repo = services.catalog.repo(root)
    finish_writes(services, repo, uuid)
    seal(services, repo, uuid)
    services.catalog.update(root, sealed)


def _message(entry: str) -> str:
    """A log entry without its time stamp."""
    return entry.split("  ", 1)[-1]


def finish_writes(services: Services, repo: Repo, uuid: str) -> None:
    """Before sealing a locked node: complete transactions whose writers died, then
    deliver every event logged at the node to the instances synced to its source."""
    instances = [bind(services, repo, uuid, inst).for_commit() for inst in repo.instances.values()]
    for data in instances:
        if data.instance.versioned and data.transactional:
            data.journal().recover()
    for data in instances:
        if data.instance.versioned and data.instance.syncs:
            catch_up(data)


def seal(services: Services, repo: Repo, uuid: str) -> None:
    """Persist per-node indices of every versioned instance for the now-locked node."""
    for inst in repo.instances.values():
        if inst.versioned:
            bind(services, repo, uuid, inst).seal()
