"""``/api/node/{uuid}/{dataname}/...``: resolve the instance, then hand the request to
the routes of its datatype.

Each datatype's routes run in their own small FastAPI app (built once per datatype), so
two datatypes may both define ``/info`` or ``/blocks`` without clashing. The common
endpoints every instance has (``help``, ``info``, ``tags``) are defined once here and
included in each of those apps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from app.api.common import JsonBody, json_object, json_response
from app.datatypes import bind, load_all
from app.datatypes.base import SCOPE_KEY, Data, bound
from app.errors import Contention, DVIDError, Unavailable
from app.repo import Repo
from app.services import Services
from backends import StoreUnavailable

log = logging.getLogger("dvid_cloud")

AnyData = Annotated[Data, Depends(bound(Data))]

common = APIRouter()


@common.get("/help", response_class=PlainTextResponse)
def help_text(data: AnyData) -> str:
    return data.help_text


@common.get("/info")
def info(data: AnyData) -> Response:
    return json_response(data.instance_json())


@common.post("/info")
def post_info(data: AnyData) -> Response:
    data.post_info()
    return json_response(data.instance_json())


@common.get("/tags")
def get_tags(data: AnyData) -> Response:
    return json_response({"Tags": data.instance.tags or None})


@common.post("/tags")
def post_tags(
    body: JsonBody,
    data: AnyData,
    replace: bool = False,
) -> Response:
    tags = json_object(body, "tags")
    if not all(isinstance(v, str) for v in tags.values()):
        raise DVIDError("tag values must be strings")

    def edit(repo: Repo) -> None:
        inst = repo.instance(data.name)
        inst.tags = dict(tags) if replace else {**inst.tags, **tags}
        repo.touch()

    data.services.catalog.update(data.repo.root, edit)
    return Response()


def keyword_of(scope: Scope) -> str:
    """The first path segment after ``/api/node/{uuid}/{dataname}``."""
    return scope["path"][len(scope.get("root_path", "")) :].strip("/").split("/")[0]


def writes_versioned_data(data: Data, method: str, keyword: str) -> bool:
    """Whether the request changes the instance's versioned data, and so needs an open
    node: the datatype's mutations, except metadata keywords (``tags``)."""
    return (
        data.instance.versioned
        and data.is_mutation(method, keyword)
        and keyword not in data.unversioned_keywords
    )


class InstanceDispatcher:
    """ASGI app mounted at ``/api/node/{uuid}/{dataname}``: binds the instance at the
    version once (an object of its datatype's class, left in the request scope for the
    routes' typed dependencies), then hands the request to its datatype's routes."""

    def __init__(self, build_app: Callable[[APIRouter], FastAPI]) -> None:
        self.apps: dict[str, FastAPI] = {}
        for name, datatype in load_all().items():
            router = APIRouter()
            router.include_router(common)
            router.include_router(datatype.routes())
            self.apps[name] = build_app(router)

    def datatype_apps(self) -> dict[str, FastAPI]:
        return self.apps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services: Services = scope["app"].state.services
        params = scope["path_params"]
        try:
            data = await anyio.to_thread.run_sync(
                resolve, services, params["uuid"], params["dataname"]
            )
            writes = writes_versioned_data(data, scope["method"], keyword_of(scope))
            if writes:
                data.require_writable()
        except DVIDError as e:
            await error_response(e, scope["path"])(scope, receive, send)
            return
        except StoreUnavailable as e:
            await unavailable_response(e, scope["path"])(scope, receive, send)
            return
        if not writes:
            scope[SCOPE_KEY] = data
            await self.apps[data.typename](scope, receive, send)
            return
        await self._write(data, scope, receive, send)

    async def _write(self, data: Data, scope: Scope, receive: Receive, send: Send) -> None:
        """A write to an open node, announced to commits by an in-flight marker and
        admitted only if the node is still open once the marker is in place."""
        services = data.services
        marker = services.inflight.writing(data.node.uuid)
        try:
            await anyio.to_thread.run_sync(marker.__enter__)
        except StoreUnavailable as e:
            await unavailable_response(e, scope["path"])(scope, receive, send)
            return
        try:
            try:
                fresh = await anyio.to_thread.run_sync(resolve, services, data.node.uuid, data.name)
                fresh.require_writable()
            except DVIDError as e:
                await error_response(e, scope["path"])(scope, receive, send)
                return
            except StoreUnavailable as e:
                await unavailable_response(e, scope["path"])(scope, receive, send)
                return
            scope[SCOPE_KEY] = fresh
            await self.apps[fresh.typename](scope, receive, send)
        finally:
            await anyio.to_thread.run_sync(marker.__exit__, None, None, None)


def resolve(services: Services, ref: str, dataname: str) -> Data:
    """The instance ``dataname`` at the version ``ref`` names, bound."""
    repo, node = services.catalog.resolve(ref)
    return bind(services, repo, node.uuid, repo.instance(dataname))


def error_response(error: DVIDError, path: str) -> Response:
    """DVID's error form: plain text, the message, then `` (<path>).``; contention also
    tells the client when to retry."""
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, Contention) else None
    return PlainTextResponse(
        f"{error.message} ({path}).\n", status_code=error.status, headers=headers
    )


def unavailable_response(error: StoreUnavailable, path: str) -> Response:
    log.warning("store unavailable", extra={"path": path, "error": str(error)})
    return error_response(Unavailable(f"storage is unavailable: {error}"), path)
