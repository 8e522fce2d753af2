"""``/api/node/{uuid}/...``: one version's status, note, log, commit and children."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from app.api.common import JsonBody, Svc, json_object, json_response, string_field, string_list
from app.api.routing import LazyRoute
from app.dag import Node
from app.errors import BadRequest
from app.repo import TAG_RE, UUID_RE, Repo, check_uuid, stamp
from app.versions import commit, create_child

router = APIRouter(prefix="/api/node/{uuid}", tags=["versions"], route_class=LazyRoute)


@router.get("/status")
@router.get("/commit")
def status(uuid: str, svc: Svc) -> Response:
    _, node = svc.catalog.resolve(uuid)
    return json_response({"Locked": node.locked})


@router.get("/note")
def get_note(uuid: str, svc: Svc) -> Response:
    _, node = svc.catalog.resolve(uuid)
    return json_response({"note": node.note})


@router.post("/note")
def post_note(uuid: str, body: JsonBody, svc: Svc) -> Response:
    body = json_object(body)
    if "note" not in body:
        raise BadRequest("request body must have a 'note'")
    note = string_field(body, "note")
    repo, node = svc.catalog.resolve(uuid)

    def edit(repo: Repo) -> None:
        target = repo.dag.node(node.uuid)
        repo.require_open(target, "set the note")
        target.note = note
        repo.touch(target)

    svc.catalog.update(repo.root, edit)
    return Response()


@router.get("/log")
def get_log(uuid: str, svc: Svc) -> Response:
    _, node = svc.catalog.resolve(uuid)
    return json_response({"log": node.log})


@router.post("/log")
def post_log(uuid: str, body: JsonBody, svc: Svc) -> Response:
    lines = string_list(json_object(body), "log")
    repo, node = svc.catalog.resolve(uuid)

    def edit(repo: Repo) -> None:
        target = repo.dag.node(node.uuid)
        repo.require_open(target, "append to the log")
        target.log.extend(stamp(lines))
        repo.touch(target)

    svc.catalog.update(repo.root, edit)
    return Response()


@router.post("/commit")
def post_commit(uuid: str, body: JsonBody, svc: Svc) -> Response:
    body = json_object(body)
    repo, node = svc.catalog.resolve(uuid)
    commit(svc, repo.root, node.uuid, string_field(body, "note"), string_list(body, "log"))
    return json_response({"committed": node.uuid})


def _chosen_uuid(body: dict) -> str | None:
    value = string_field(body, "uuid")
    return check_uuid(value) if value else None


@router.post("/newversion")
def newversion(uuid: str, body: JsonBody, svc: Svc) -> Response:
    body = json_object(body)
    repo, node = svc.catalog.resolve(uuid)

    def rule(repo: Repo, parents: list[Node]) -> str:
        return repo.check_new_version(parents[0])

    child = create_child(
        svc, repo.root, [node.uuid], rule, _chosen_uuid(body), string_field(body, "note")
    )
    return json_response({"child": child.uuid})


@router.post("/branch")
def branch(uuid: str, body: JsonBody, svc: Svc) -> Response:
    body = json_object(body)
    name = string_field(body, "branch")
    repo, node = svc.catalog.resolve(uuid)

    def rule(repo: Repo, parents: list[Node]) -> str:
        return repo.check_new_branch(parents[0], name)

    child = create_child(
        svc, repo.root, [node.uuid], rule, _chosen_uuid(body), string_field(body, "note")
    )
    return json_response({"child": child.uuid})


@router.post("/tag")
def tag(uuid: str, body: JsonBody, svc: Svc) -> Response:
    """A committed child named by the tag itself, on branch ``tag-<tag>``."""
    body = json_object(body)
    name = string_field(body, "tag")
    if not TAG_RE.match(name) or UUID_RE.match(name):
        raise BadRequest(
            f"tag {name!r} must be 1-64 letters, digits, '.', '_' or '-' and not look like a UUID"
        )
    if svc.catalog.prefix_taken(name):
        raise BadRequest(f"tag {name!r} collides with an existing version UUID or tag")
    repo, node = svc.catalog.resolve(uuid)

    def rule(repo: Repo, parents: list[Node]) -> str:
        return repo.check_new_branch(parents[0], f"tag-{name}")

    note = f"Tag of version {node.uuid} with {orjson.dumps(name).decode()}"
    child = create_child(svc, repo.root, [node.uuid], rule, name, note, locked=True)
    return json_response({"child": child.uuid})
