"""The FastAPI application: routers, error handling and request bounds."""

from __future__ import annotations

import copy
import functools
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__
from app.api import diff, nodes, repos, server, transfer
from app.api.common import json_body, raw_body
from app.api.instances import (
    InstanceDispatcher,
    OpenChecks,
    error_response,
    unavailable_response,
)
from app.auth import install_auth
from app.body_deadline import BodyDeadline
from app.buffers import advise_huge_pages
from app.console import install_console
from app.datatypes import load_all, load_plugins
from app.errors import BadRequest, DVIDError, TooLarge
from app.immutable import ImmutableResponses, KeptAnswers
from app.metrics import install_metrics
from app.remotes import remote_failure
from app.services import Services
from app.settings import Settings
from backends import ObjectStore, StoreUnavailable
from backends.remote import RemoteError
from backends.tensorstore_errors import as_store_unavailable, is_store_failure

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

    @app.exception_handler(RemoteError)
    async def remote_error(request: Request, exc: RemoteError) -> Response:
        log.warning("remote failed", extra={"path": request.url.path, "error": str(exc)})
        return error_response(remote_failure(exc), request.url.path)

    @app.exception_handler(ValueError)
    @app.exception_handler(TimeoutError)
    async def chunk_store_failure(request: Request, exc: Exception) -> Response:
        # tensorstore (chunk I/O) reports a failing store as ValueError("ABORTED: ...") etc.
        if not is_store_failure(exc):
            raise exc  # a genuine error: 500 as before
        return unavailable_response(as_store_unavailable(exc), request.url.path)

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


#: FastAPI's own OpenTelemetry hooks, off: app.metrics and app.logs observe every request,
#: and the hooks' per-request check (environment and provider lookups) is on the hot path.
NO_OTEL: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def datatype_app(router: APIRouter) -> FastAPI:
    """The sub-application serving one datatype's instance endpoints."""
    sub = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, telemetry=NO_OTEL)
    _install_error_handlers(sub)
    # The router's routes, not the router itself: FastAPI analyses the routes of an
    # included router again for each inclusion (on its first request, and here once more
    # to check their paths), which was a third of a datatype's first request.
    sub.router.routes.extend(router.routes)
    return sub


class BoundedRequests:
    """ASGI middleware: refuse oversized bodies (413) and writes in read-only mode (400)
    before anything is read or written, end bodies that trickle in too slowly (408), and
    count requests for ``/api/load``."""

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
        deadline = BodyDeadline(receive, settings.body_timeout_seconds, settings.body_min_rate)

        async def counted_receive() -> Message:
            message = await deadline.receive()
            if message["type"] == "http.request":
                counters.bytes_written += len(message.get("body", b""))
                if deadline.received > limit:
                    raise TooLarge(f"request body is over the {limit} byte limit")
            return message

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                counters.bytes_read += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counted_receive, counted_send)
        finally:
            deadline.close()
            counters.active -= 1


class DvidApp(FastAPI):
    """The application; its OpenAPI schema also lists every datatype's routes, which the
    instance dispatcher (not FastAPI's router) serves."""

    def __init__(self, dispatcher: InstanceDispatcher, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dispatcher = dispatcher
        #: Layers around Starlette's whole stack, outermost first: the request metrics
        #: and the kept answers, which need none of Starlette's and FastAPI's own layers
        #: (server errors, telemetry, body limits: a sixth of a kept answer's time).
        self.outermost: list[Callable[[ASGIApp], ASGIApp]] = []

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        for wrap in reversed(self.outermost):
            app = wrap(app)
        return app

    def openapi(self) -> dict[str, Any]:
        return _openapi(self, self.dispatcher)


def create_app(settings: Settings, stores: dict[str, ObjectStore] | None = None) -> FastAPI:
    """The dvid-cloud application for ``settings`` (tests may pass ready-made stores)."""
    load_plugins(settings.plugins)
    advise_huge_pages(settings.huge_pages)
    services = Services.from_settings(settings, stores)
    dispatcher = InstanceDispatcher(datatype_app)
    app = DvidApp(
        dispatcher,
        telemetry=NO_OTEL,
        title="dvid-cloud",
        version=__version__,
        description="DVID's versioned, image-oriented REST API on object stores.",
    )
    app.state.services = services
    _install_error_handlers(app)
    # The routers' routes, not the routers: FastAPI routes a request through an included
    # router by a context it makes for each of that router's routes, which reads every
    # route and so analyses all the lazy ones (app.api.routing) on the first request.
    for router in (server.router, repos.router, diff.router, nodes.router, transfer.router):
        app.router.routes.extend(router.routes)
    app.router.routes.append(Mount("/api/node/{uuid}/{dataname}", app=dispatcher))
    install_console(app, settings)
    app.add_middleware(ImmutableResponses, answers=services.answers)
    # Kept answers are looked up as far out as they may be: inside authentication if
    # it is required, else right inside the metrics (doing CORS and counting).
    check = OpenChecks(services)
    if settings.auth_required:
        app.add_middleware(KeptAnswers, answers=services.answers, check=check)
    install_auth(app, settings)
    cors: dict[str, Any] = {
        "allow_origins": settings.cors_origins,
        "allow_methods": ["GET", "POST", "DELETE", "HEAD"],
        "allow_headers": ["*"],
    }
    app.add_middleware(CORSMiddleware, **cors)
    app.add_middleware(BoundedRequests, services=services)
    # Outermost: request ids, access log, metrics.
    app.outermost.append(install_metrics(app, services))
    if not settings.auth_required:
        app.outermost.append(
            functools.partial(
                KeptAnswers,
                answers=services.answers,
                check=check,
                cors=cors,
                counters=services.counters,
            )
        )
    app.router.on_shutdown.append(services.close)
    return app


def _openapi(app: FastAPI, dispatcher: InstanceDispatcher) -> dict[str, Any]:
    """One OpenAPI document: the server's routes plus each datatype's, under its prefix.

    Datatype endpoints are served by per-datatype sub-applications mounted at
    ``/api/node/{uuid}/{dataname}``; their operations get the two mount parameters, are
    tagged by every datatype that serves them, and, where several datatypes serve the same
    method and path (``help``, ``raw``...), are one operation (OpenAPI allows one per path
    and method) whose parameters are the union, each marked with the datatypes using it."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    _describe_bodies(schema["paths"], app.routes)
    served: dict[str, dict[str, list[_Served]]] = {}
    for typename, sub in dispatcher.datatype_apps().items():
        sub_schema = get_openapi(title=typename, version=app.version, routes=sub.routes)
        _describe_bodies(sub_schema["paths"], sub.routes)
        for path, operations in sub_schema.get("paths", {}).items():
            shape = _PATH_PARAM.sub("{}", path)
            for method, operation in operations.items():
                entry = _Served(typename, path, operation)
                served.setdefault(shape, {}).setdefault(method, []).append(entry)
        _merge_components(schema, sub_schema)
    everyone = set(dispatcher.datatype_apps())
    for shape, methods in served.items():
        path, renames = _merged_path(shape, methods)
        item = schema["paths"].setdefault(INSTANCE_PREFIX + path, {})
        for method, entries in methods.items():
            operation = _merged_operation(entries, renames, everyone)
            operation["operationId"] = f"{operation['operationId']}_{method}_{_slug(path)}"
            item[method] = operation
    _unique_operation_ids(schema["paths"])
    _path_parameters_present(schema["paths"])
    _plain_text_errors(schema)
    schema["tags"] = [
        *schema.get("tags", []),
        *(
            {
                "name": typename,
                "description": f"Endpoints of {typename} instances: {INSTANCE_PREFIX}/... "
                f"where dataname names a {typename} instance (see its /help).",
            }
            for typename in dispatcher.datatype_apps()
        ),
    ]
    app.openapi_schema = schema
    return schema


# --- OpenAPI helpers -----------------------------------------------------------------------

INSTANCE_PREFIX = "/api/node/{uuid}/{dataname}"
_PATH_PARAM = re.compile(r"\{([^}]+)\}")
INSTANCE_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "uuid",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "title": "Uuid"},
        "description": "The version node: a unique prefix of its UUID, or "
        "<prefix>:<branch> for the leaf of that branch.",
    },
    {
        "name": "dataname",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "title": "Dataname"},
        "description": "The data instance's name; its datatype decides which endpoints exist.",
    },
]
_BODY_SCHEMAS: dict[Any, dict[str, Any]] = {
    raw_body: {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    json_body: {"application/json": {"schema": {}}},
}
_PLAIN_TEXT_ERROR = {
    "description": "Bad request: DVID's plain-text error, the message then (<path>).",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


@dataclass
class _Served:
    """One datatype's operation at one (sub-application) path and method."""

    typename: str
    path: str
    operation: dict[str, Any]


def _describe_bodies(paths: dict[str, Any], routes: list[Any]) -> None:
    """Declare the bodies that handlers read from the raw request (``RawBody``,
    ``JsonBody``), which FastAPI cannot see, as optional request bodies."""
    for path, route in _api_routes(routes):
        content = _body_content(route.dependant)
        item = paths.get(path)
        if content is None or item is None:
            continue
        for method in route.methods or ():
            operation = item.get(method.lower())
            if operation is not None and "requestBody" not in operation:
                operation["requestBody"] = {"required": False, "content": copy.deepcopy(content)}


def _api_routes(routes: list[Any]) -> Iterator[tuple[str, APIRoute]]:
    """(path, route) of every APIRoute, also those of included routers, which newer
    FastAPI versions keep as router entries instead of copying them into ``app.routes``."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: the routes are already flat
        for route in routes:
            if isinstance(route, APIRoute):
                yield route.path_format, route
        return
    for context in iter_route_contexts(routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            yield context.path_format or route.path_format, route


def _body_content(dependant: Any) -> dict[str, Any] | None:
    for dependency in dependant.dependencies:
        content = _BODY_SCHEMAS.get(dependency.call) or _body_content(dependency)
        if content is not None:
            return content
    return None


def _merge_components(schema: dict[str, Any], sub_schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, value in sub_schema.get("components", {}).get("schemas", {}).items():
        if components.setdefault(name, value) != value:
            raise ValueError(f"two datatypes define different OpenAPI schemas named {name!r}")


def _merged_path(
    shape: str, methods: dict[str, list[_Served]]
) -> tuple[str, dict[tuple[str, str], dict[str, str]]]:
    """One template for paths that differ only in parameter names (OpenAPI allows one):
    each slot is named after every name the datatypes give it, e.g. ``{coord_or_size}``.
    Returns the template and, per (typename, path), the renames."""
    slots: list[list[str]] = [[] for _ in range(shape.count("{}"))]
    for entries in methods.values():
        for entry in entries:
            for i, name in enumerate(_PATH_PARAM.findall(entry.path)):
                if name not in slots[i]:
                    slots[i].append(name)
    merged = ["_or_".join(sorted(names)) for names in slots]  # independent of import order
    renames = {}
    for entries in methods.values():
        for entry in entries:
            names = _PATH_PARAM.findall(entry.path)
            renames[entry.typename, entry.path] = dict(zip(names, merged, strict=True))
    parts = iter(merged)
    return re.sub(r"\{\}", lambda _: "{" + next(parts) + "}", shape), renames


def _merged_operation(
    entries: list[_Served], renames: dict[tuple[str, str], dict[str, str]], everyone: set[str]
) -> dict[str, Any]:
    """One operation for the datatypes in ``entries``; its ``operationId`` is left as the
    owner (the datatypes' packages, or ``instance`` for endpoints of every instance)."""
    typenames = sorted({e.typename for e in entries})
    operation = copy.deepcopy(entries[0].operation)
    parameters: dict[tuple[str, str], dict[str, Any]] = {}
    users: dict[tuple[str, str], dict[str, list[str]]] = {}  # key -> own name -> typenames
    descriptions: dict[str, list[str]] = {}
    for entry in entries:
        rename = renames[entry.typename, entry.path]
        for parameter in entry.operation.get("parameters", []):
            own = parameter["name"]
            parameter = copy.deepcopy(parameter)
            if parameter["in"] == "path":
                parameter["name"] = rename[own]
            key = (parameter["in"], parameter["name"])
            parameters.setdefault(key, parameter)
            users.setdefault(key, {}).setdefault(own, []).append(entry.typename)
        text = entry.operation.get("description")
        if text:
            descriptions.setdefault(text, []).append(entry.typename)
    merged = [copy.deepcopy(p) for p in INSTANCE_PARAMETERS]
    for key, parameter in parameters.items():
        names = users[key]
        note = None
        if len(names) > 1:  # one path slot, named differently by different datatypes
            note = "; ".join(f"<{own}> for {', '.join(sorted(set(t)))}" for own, t in names.items())
        elif sorted(set(using := next(iter(names.values())))) != typenames:
            note = f"Used by {', '.join(sorted(set(using)))} only; the others ignore it."
            parameter["required"] = False
        if note:
            parameter["description"] = " ".join(filter(None, [parameter.get("description"), note]))
        merged.append(parameter)
    operation["parameters"] = merged
    if len(descriptions) > 1:
        operation["description"] = "\n\n".join(
            f"{', '.join(sorted(set(names)))}: {text}" for text, names in descriptions.items()
        )
    operation["tags"] = typenames
    operation["operationId"] = (
        "instance"
        if set(typenames) == everyone
        else "_".join(sorted({_family(t) for t in typenames}))
    )
    return operation


def _family(typename: str) -> str:
    """The datatype package serving ``typename`` (``imageblk`` for ``uint8blk``...)."""
    datatype = load_all().get(typename)
    cls = datatype if isinstance(datatype, type) else type(datatype)
    parts = cls.__module__.split(".")
    return parts[2] if parts[:2] == ["app", "datatypes"] and len(parts) > 2 else typename


def _slug(path: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", path).strip("_")


def _unique_operation_ids(paths: dict[str, Any]) -> None:
    seen: set[str] = set()
    for item in paths.values():
        for operation in item.values():
            base = operation.get("operationId") or "operation"
            name, n = base, 1
            while name in seen:
                n += 1
                name = f"{base}_{n}"
            operation["operationId"] = name
            seen.add(name)


def _path_parameters_present(paths: dict[str, Any]) -> None:
    """A path parameter is a path segment: present, never null (FastAPI documents the
    optional ``{fmt}`` of a route that also exists without it as string-or-null)."""
    for item in paths.values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                alternatives = parameter.get("schema", {}).get("anyOf")
                if parameter["in"] != "path" or not alternatives:
                    continue
                kept = [a for a in alternatives if a.get("type") != "null"]
                if len(kept) == 1:
                    del parameter["schema"]["anyOf"]
                    parameter["schema"].update(kept[0])


def _plain_text_errors(schema: dict[str, Any]) -> None:
    """FastAPI documents request validation failures as 422 JSON; this server answers
    them, as DVID does, with a 400 and a plain-text message."""
    for item in schema["paths"].values():
        for operation in item.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:
                responses.setdefault("400", copy.deepcopy(_PLAIN_TEXT_ERROR))
    components = schema.get("components", {}).get("schemas", {})
    text = str(schema["paths"])
    for name in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{name}" not in text:
            components.pop(name, None)
    if "components" in schema and not components:
        schema["components"].pop("schemas", None)
        if not schema["components"]:
            del schema["components"]
