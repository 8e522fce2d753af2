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
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from app.api.common import JsonBody, json_object, json_response
from app.context import InstanceContext
from app.datatypes import get, load_all
from app.datatypes.base import CHECKSUM_NAMES, compression_json
from app.errors import Contention, DVIDError, Unavailable
from app.repo import Instance, Repo
from app.services import Services
from backends import StoreUnavailable

log = logging.getLogger("dvid_cloud")

WRITE_METHODS = frozenset({"POST", "PUT", "DELETE"})


def context(request: Request) -> InstanceContext:
    """Dependency: the instance context the dispatcher resolved for this request."""
    return request.scope["dvid.context"]


def instance_json(ctx: InstanceContext) -> dict:
    """DVID's instance JSON: ``{"Base": {...}, "Extended": {...}}``."""
    inst = ctx.instance
    base = {
        "TypeName": inst.typename,
        "TypeURL": ctx.datatype.url,
        "TypeVersion": ctx.datatype.version,
        "DataUUID": inst.data_uuid,
        "Name": inst.name,
        "RepoUUID": inst.repo_uuid,
        "Compression": compression_json(inst.compression),
        "Checksum": CHECKSUM_NAMES[inst.checksum],
        "Syncs": list(inst.syncs),
        "Versioned": inst.versioned,
        "KVStore": ctx.store.description,
        "LogStore": ctx.store.description,
        "Tags": dict(inst.tags) or None,
    }
    return {
        "Base": base,
        "Extended": ctx.datatype.extended_json(ctx),
        **ctx.datatype.extra_json(ctx),
    }


def make_context(services: Services, repo: Repo, node_uuid: str, inst: Instance) -> InstanceContext:
    return InstanceContext(services, repo, repo.dag.node(node_uuid), inst, get(inst.typename))


Ctx = Annotated[InstanceContext, Depends(context)]

common = APIRouter()


@common.get("/help", response_class=PlainTextResponse)
def help_text(ctx: Ctx) -> str:
    return ctx.datatype.help_text


@common.get("/info")
def info(ctx: Ctx) -> Response:
    return json_response(instance_json(ctx))


@common.post("/info")
def post_info(ctx: Ctx) -> Response:
    ctx.datatype.post_info(ctx)
    return json_response(instance_json(ctx))


@common.get("/tags")
def get_tags(ctx: Ctx) -> Response:
    return json_response({"Tags": ctx.instance.tags or None})


@common.post("/tags")
def post_tags(
    body: JsonBody,
    ctx: Ctx,
    replace: bool = False,
) -> Response:
    tags = json_object(body, "tags")
    if not all(isinstance(v, str) for v in tags.values()):
        raise DVIDError("tag values must be strings")

    def edit(repo: Repo) -> None:
        inst = repo.instance(ctx.instance.name)
        inst.tags = dict(tags) if replace else {**inst.tags, **tags}
        repo.touch()

    ctx.services.catalog.update(ctx.repo.root, edit)
    return Response()


class InstanceDispatcher:
    """ASGI app mounted at ``/api/node/{uuid}/{dataname}``."""

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
        keyword = scope["path"][len(scope.get("root_path", "")) :].strip("/").split("/")[0]
        try:
            ctx = await anyio.to_thread.run_sync(
                _resolve, services, params["uuid"], params["dataname"]
            )
            writes = (
                scope["method"] in WRITE_METHODS
                and keyword not in ctx.datatype.unversioned_keywords
                and ctx.instance.versioned
            )
            if writes:
                ctx.require_writable()
        except DVIDError as e:
            await error_response(e, scope["path"])(scope, receive, send)
            return
        except StoreUnavailable as e:
            await unavailable_response(e, scope["path"])(scope, receive, send)
            return
        if not writes:
            scope["dvid.context"] = ctx
            await self.apps[ctx.instance.typename](scope, receive, send)
            return
        await self._write(ctx, scope, receive, send)

    async def _write(
        self, ctx: InstanceContext, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A write to an open node, announced to commits by an in-flight marker and
        admitted only if the node is still open once the marker is in place."""
        services = ctx.services
        marker = services.inflight.writing(ctx.node.uuid)
        try:
            await anyio.to_thread.run_sync(marker.__enter__)
        except StoreUnavailable as e:
            await unavailable_response(e, scope["path"])(scope, receive, send)
            return
        try:
            try:
                fresh = await anyio.to_thread.run_sync(
                    _resolve, services, ctx.node.uuid, ctx.instance.name
                )
                fresh.require_writable()
            except DVIDError as e:
                await error_response(e, scope["path"])(scope, receive, send)
                return
            except StoreUnavailable as e:
                await unavailable_response(e, scope["path"])(scope, receive, send)
                return
            scope["dvid.context"] = fresh
            await self.apps[fresh.instance.typename](scope, receive, send)
        finally:
            await anyio.to_thread.run_sync(marker.__exit__, None, None, None)


def _resolve(services: Services, ref: str, dataname: str) -> InstanceContext:
    repo, node = services.catalog.resolve(ref)
    return make_context(services, repo, node.uuid, repo.instance(dataname))


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
