"""Diffs and merge checks of whole repos, in the JSON the API and the CLI answer with.

Each instance answers for itself (``Data.diff``, ``Data.merge_conflicts``); this module
binds every versioned instance at the versions compared and assembles the answers.
Unversioned instances keep their data at the root, the same at every version, so they
never differ and never conflict. Instances whose type cannot be compared are listed under
``skipped`` with the reason, rather than failing the whole answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.dag import Node
from app.datatypes import bind
from app.datatypes.base import Data, NotComparable
from app.diff import MergeSides
from app.errors import BadRequest
from app.repo import Instance, Repo

if TYPE_CHECKING:
    from app.services import Services


def version_in(services: Services, repo: Repo, ref: str) -> Node:
    """The node ``ref`` names (any reference the API takes), which must be in ``repo``."""
    other, node = services.catalog.resolve(ref)
    if other.root != repo.root:
        raise BadRequest(f"version {ref} is not in repo {repo.root}")
    return node


def _bound(services: Services, repo: Repo, node: Node, instance: Instance) -> Data:
    data = bind(services, repo, node.uuid, instance)
    data.prepare_read()  # an open version's interrupted writes settle first, as for reads
    return data


def instance_diff(services: Services, repo: Repo, a: Node, b: Node, instance: Instance) -> dict:
    """The members of one instance's diff from ``a`` to ``b`` (empty: no difference)."""
    if not instance.versioned:
        return {}
    was = _bound(services, repo, a, instance)
    members = was.diff(_bound(services, repo, b, instance))
    return {"typename": instance.typename, **members} if members else {}


def one_instance(services: Services, repo: Repo, a: Node, b: Node, instance: Instance) -> dict:
    """The diff JSON of one instance; 400 (:class:`NotComparable`) for a type that cannot
    say, where a repo-wide diff lists it under ``skipped``."""
    members = instance_diff(services, repo, a, b, instance)
    return {"from": a.uuid, "to": b.uuid, "instances": {instance.name: members} if members else {}}


def diff(services: Services, repo: Repo, a: Node, b: Node, names: list[str] | None = None) -> dict:
    """``{"from", "to", "instances": {name: {"typename", members...}}}``, instances
    without a difference left out; ``skipped`` lists instances whose type cannot say."""
    instances: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in sorted(repo.instances) if names is None else names:
        try:
            members = instance_diff(services, repo, a, b, repo.instance(name))
        except NotComparable as e:
            skipped[name] = e.message
            continue
        if members:
            instances[name] = members
    answer: dict[str, Any] = {"from": a.uuid, "to": b.uuid, "instances": instances}
    if skipped:
        answer["skipped"] = skipped
    return answer


def merge_parents(repo: Repo, parents: list[Node]) -> MergeSides:
    """The parents of a merge seen three-way; 400 where the merge itself would refuse."""
    for parent in parents:
        if not parent.locked:
            raise BadRequest(
                f"parent node {parent.uuid} is not committed: commit it before merging it"
            )
        repo.require_final(parent, "merge it")
    return MergeSides.of(repo.dag, parents)


def merge_report(services: Services, repo: Repo, parents: list[Node]) -> dict:
    """Every conflict a merge of ``parents`` would have, per instance:
    ``{"parents", "bases", "count", "conflicts": {name: {"typename", "keys"|"blocks"|
    "labels": [...], "scales": {scale: blocks}}}}`` (``count`` sums the items listed;
    ``skipped`` as in :func:`diff`).
    Nothing is written."""
    merge = merge_parents(repo, parents)
    conflicts: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    count = 0
    for name, instance in sorted(repo.instances.items()):
        if not instance.versioned:
            continue
        try:
            found = bind(services, repo, parents[0].uuid, instance).merge_conflicts(merge)
        except NotComparable as e:
            skipped[name] = e.message
            continue
        if found:
            conflicts[name] = {"typename": instance.typename, **found}
            count += _items(found)
    answer: dict[str, Any] = {
        "parents": [p.uuid for p in parents],
        "bases": [b.uuid for b in merge.bases],
        "count": count,
        "conflicts": conflicts,
    }
    if skipped:
        answer["skipped"] = skipped
    return answer


def _items(members: dict[str, Any]) -> int:
    """How many items a conflicts entry lists (lists, or lists by scale)."""
    return sum(
        sum(len(v) for v in items.values()) if isinstance(items, dict) else len(items)
        for items in members.values()
    )


def summary(answer: dict) -> list[str]:
    """One line per instance of a diff answer (for the CLI): counts per member."""
    lines = [f"diff {answer['from']} -> {answer['to']}"]
    for name, members in answer["instances"].items():
        parts = []
        for member, value in members.items():
            if member == "typename":
                continue
            if isinstance(value, dict):
                counts = ", ".join(f"{len(v)} {k}" for k, v in value.items() if v)
                parts.append(f"{member}: {counts}")
            else:
                parts.append(f"{len(value)} {member}")
        lines.append(f"  {name} [{members['typename']}]: {'; '.join(parts)}")
    if not answer["instances"]:
        lines.append("  no differences")
    for name, reason in answer.get("skipped", {}).items():
        lines.append(f"  {name}: skipped ({reason})")
    return lines
