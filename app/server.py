"""The FastAPI application: routers, error handling and request bounds."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__
from app.api import nodes, repos, server
from app.api.instances import InstanceDispatcher, error_response, unavailable_response
from app.auth import install_auth
from app.errors import BadRequest, DVIDError, TooLarge
from app.metrics import install_metrics
from app.services import Services
from app.settings import Settings
from backends import ObjectStore, StoreUnavailable

log = logging.getLogger("dvid_cloud")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _install_error_handlers(app: FastAPI) -> None:
    """Every failure becomes DVID's plain-text error with the status DVID gives."""

    @app.exception_handler(DVIDError)
    async def dvid_error(request: Request, exc: DVIDError) -> Response:
        return error_response(exc, request.url.path)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> Response:
        return unavailable_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()
        )
        return error_response(BadRequest(f"bad request parameters: {problems}"), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405):
            message = f"Bad API call: {request.method} {request.url.path} is not an endpoint"
            return error_response(BadRequest(message), request.url.path)
        return error_response(DVIDError(str(exc.detail), exc.status_code), request.url.path)


def datatype_app(router: APIRouter) -> FastAPI:
    """The sub-application serving one datatype's instance endpoints."""
    sub = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    _install_error_handlers(sub)
    sub.include_router(router)
    return sub


class BoundedRequests:
    """ASGI middleware: refuse oversized bodies (413) and writes in read-only mode (400)
    before anything is read or written, and count requests for ``/api/load``."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.services.settings
        limit = settings.max_body_bytes
        headers = dict(scope["headers"])
        error: DVIDError | None = None
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            error = TooLarge(f"request body of {length.decode()} bytes is over the {limit} limit")
        elif settings.read_only and scope["method"] not in READ_METHODS:
            error = BadRequest("server is in read-only mode")
        if error is not None:
            await error_response(error, scope["path"])(scope, receive, send)
            return

        counters = self.services.counters
        counters.requests += 1
        counters.active += 1
        if scope["method"] in READ_METHODS:
            counters.get_requests += 1
        else:
            counters.put_requests += 1
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                counters.bytes_written += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(f"request body is over the {limit} byte limit")
            return message

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                counters.bytes_read += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counted_receive, counted_send)
        finally:
            counters.active -= 1


def create_app(settings: Settings, stores: dict[str, ObjectStore] | None = None) -> FastAPI:
    """The dvid-cloud application for ``settings`` (tests may pass ready-made stores)."""
    services = Services.from_settings(settings, stores)
    app = FastAPI(
        title="dvid-cloud",
        version=__version__,
        description="DVID's versioned, image-oriented REST API on object stores.",
    )
    app.state.services = services
    _install_error_handlers(app)
    app.include_router(server.router)
    app.include_router(repos.router)
    app.include_router(nodes.router)
    dispatcher = InstanceDispatcher(datatype_app)
    app.router.routes.append(Mount("/api/node/{uuid}/{dataname}", app=dispatcher))
    app.openapi = lambda: _openapi(app, dispatcher)  # type: ignore[method-assign]
    install_auth(app, settings)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "DELETE", "HEAD"],
        allow_headers=["*"],
    )
    app.add_middleware(BoundedRequests, services=services)
    install_metrics(app, services)  # outermost: request ids, access log, /metrics
    app.router.on_shutdown.append(services.close)
    return app


def _openapi(app: FastAPI, dispatcher: InstanceDispatcher) -> dict[str, Any]:
    """One OpenAPI document: the server's routes plus each datatype's, under its prefix."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    for typename, sub in dispatcher.datatype_apps().items():
        sub_schema = get_openapi(title=typename, version=app.version, routes=sub.routes)
        for path, operations in sub_schema.get("paths", {}).items():
            full = f"/api/node/{{uuid}}/{{dataname}}{path}"
            for operation in operations.values():
                operation["tags"] = [typename]
                operation["operationId"] = f"{typename}_{operation.get('operationId', '')}"
            schema["paths"].setdefault(full, {}).update(operations)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(
            sub_schema.get("components", {}).get("schemas", {})
        )
    app.openapi_schema = schema
    return schema
