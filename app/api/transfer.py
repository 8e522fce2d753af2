"""The HTTP surface of push and pull (:mod:`app.transfer`): a server as either end.

Reading a version's objects needs read access to its repo (they are under
``/api/repo/{uuid}/transfer/``). Receiving writes raw data objects and the repo object
without any datatype's validation, so those endpoints (``/api/transfer/...``, all
non-GET) need a server admin when auth is on (app/auth.py's rule for server-level writes).

| endpoint | does |
|---|---|
| ``GET /api/repo/{uuid}/transfer/repo`` | ``{"repo", "node", "mutation_ids"}`` of the version |
| ``GET /api/repo/{uuid}/transfer/objects?store=&prefix=data/<D>/`` | ``<key> <size>`` lines |
| ``GET /api/repo/{uuid}/transfer/object?store=&key=`` | one object's bytes |
| ``POST /api/transfer/repo?root=`` | ``{"repo": <stored JSON or null>}`` |
| ``POST /api/transfer/owners`` (JSON list of UUIDs) | ``{uuid: root}`` of those claimed |
| ``POST /api/transfer/list?store=&prefix=`` | ``<key> <size>`` lines of this server's store |
| ``PUT /api/transfer/object?store=&key=`` | writes one data object (inert until published) |
| ``POST /api/transfer/merge?store=&key=&typename=`` | merges a shared object by its type's rule |
| ``POST /api/transfer/publish`` | adds the pushed nodes to the DAG, last |

``store`` is the source's store name; a server without a store of that name uses its
default store, as it does for the instances it publishes.
"""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from app.api.common import JsonBody, Svc, json_response
from app.api.routing import LazyRoute
from app.errors import BadRequest, NotFound
from app.repo import UUID_RE, Repo
from app.services import Services
from app.transfer.publish import PublishRequest
from app.transfer.sides import StoreSide, check_data_key

router = APIRouter(prefix="/api", tags=["transfer"], route_class=LazyRoute)


def _side(svc: Services) -> StoreSide:
    return StoreSide(svc.stores, svc.default_store)


def _instance_of_repo(repo: Repo, key: str) -> str:
    """The key's data UUID, when it is one of the repo's instances (reads through a
    repo may only reach that repo's data)."""
    data_uuid = key.split("/")[1] if key.startswith("data/") and key.count("/") >= 2 else ""
    if not any(inst.data_uuid == data_uuid for inst in repo.instances.values()):
        raise NotFound(f"{key!r} is not data of repo {repo.root}")
    return data_uuid


def _instance_prefix(prefix: str) -> str:
    parts = prefix.split("/")
    if len(parts) < 3 or parts[0] != "data" or not UUID_RE.match(parts[1]):
        raise BadRequest(f"prefix {prefix!r} must start with data/<data UUID>/")
    if not prefix.isascii() or not prefix.isprintable():
        raise BadRequest(f"prefix {prefix!r} must be printable ASCII")
    return prefix


def _lines(entries: list[tuple[str, int]]) -> Response:
    return PlainTextResponse("".join(f"{key} {size}\n" for key, size in entries))


def _writable(svc: Services) -> None:
    if svc.settings.read_only:
        raise BadRequest("this server is read-only: it cannot receive a push")


@router.get("/repo/{uuid}/transfer/repo")
def source_repo(uuid: str, svc: Svc) -> Response:
    located = _side(svc).locate(uuid)
    body = {"repo": located.repo, "node": located.node, "mutation_ids": located.mutation_ids}
    return json_response(body)


@router.get("/repo/{uuid}/transfer/objects")
def source_objects(uuid: str, svc: Svc, prefix: str, store: str = "default") -> Response:
    repo, _ = svc.catalog.resolve(uuid)
    _instance_of_repo(repo, _instance_prefix(prefix))
    return _lines(list(_side(svc).list(store, prefix)))


@router.get("/repo/{uuid}/transfer/object")
def source_object(uuid: str, svc: Svc, key: str, store: str = "default") -> Response:
    repo, _ = svc.catalog.resolve(uuid)
    _instance_of_repo(repo, check_data_key(key))
    blob = _side(svc).store(store).get(key)
    if blob is None:
        raise NotFound(f"no object {key}")
    return Response(blob.data, media_type="application/octet-stream")


@router.post("/transfer/repo")
def dest_repo(root: str, svc: Svc) -> Response:
    return json_response({"repo": _side(svc).repo(root)})


@router.post("/transfer/owners")
def dest_owners(body: JsonBody, svc: Svc) -> Response:
    if not isinstance(body, list) or not all(isinstance(n, str) for n in body):
        raise BadRequest("body must be a JSON list of node UUIDs")
    return json_response(_side(svc).owners(body))


@router.post("/transfer/list")
def dest_list(svc: Svc, prefix: str, store: str = "default") -> Response:
    return _lines(list(_side(svc).list(store, _instance_prefix(prefix))))


@router.put("/transfer/object")
async def dest_object(request: Request, svc: Svc, key: str, store: str = "default") -> Response:
    _writable(svc)
    check_data_key(key)
    data = await request.body()
    await anyio.to_thread.run_sync(lambda: _side(svc).put(store, key, data))
    return Response(status_code=204)


@router.post("/transfer/merge")
async def dest_merge(
    request: Request, svc: Svc, key: str, typename: str, store: str = "default"
) -> Response:
    _writable(svc)
    data = await request.body()
    await anyio.to_thread.run_sync(lambda: _side(svc).merge(store, key, typename, data))
    return Response(status_code=204)


@router.post("/transfer/publish")
def dest_publish(body: JsonBody, svc: Svc) -> Response:
    _writable(svc)
    return json_response(_side(svc).publish(PublishRequest.from_json(body)))
