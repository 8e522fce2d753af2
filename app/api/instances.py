"""``/api/node/{uuid}/{dataname}/...``: resolve the instance, then hand the request to
the routes of its datatype.

Each datatype's routes run in their own small FastAPI app (built once per datatype), so
two datatypes may both define ``/info`` or ``/blocks`` without clashing. The common
endpoints every instance has (``help``, ``info``, ``tags``) are defined once here and
included in each of those apps.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, TypeVar

import anyio
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send

from app.api.common import JsonBody, json_object, json_response
from app.api.routing import LazyRoute
from app.datatypes import bind, load_all
from app.datatypes.base import SCOPE_KEY, Data, bound
from app.errors import BadRequest, Contention, DVIDError, Unavailable
from app.immutable import IMMUTABLE, OPEN_KEY, OpenRead, open_name, replay
from app.repo import Repo
from app.services import Services
from app.storage import readahead
from app.syncs import deliver, set_syncs
from backends import StoreUnavailable

log = logging.getLogger("dvid_cloud")

T = TypeVar("T")

AnyData = Annotated[Data, Depends(bound(Data))]

common = APIRouter(route_class=LazyRoute)


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


@common.get("/diff/{from_ref}")
def diff(from_ref: str, data: AnyData) -> Response:
    """What differs in this instance from version ``from_ref`` to the bound one, in the
    repo diff's JSON with one instance (:mod:`app.repo_diff`); 400 for a type that
    keeps no per-version index to compare."""
    from app import repo_diff

    was = repo_diff.version_in(data.services, data.repo, from_ref)
    answer = repo_diff.one_instance(data.services, data.repo, was, data.node, data.instance)
    return json_response(answer)


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


@common.post("/sync")
def post_sync(body: JsonBody, data: AnyData, replace: bool = False) -> Response:
    """Subscribe this instance to the named instances' events (``{"sync": "a,b"}``)."""
    names = json_object(body, "sync").get("sync")
    if not isinstance(names, str):
        raise BadRequest('sync needs a JSON object {"sync": "<names, comma-separated>"}')
    set_syncs(data, names, replace)
    return Response()


def route_of(scope: Scope) -> str:
    """The path after ``/api/node/{uuid}/{dataname}/``."""
    return str(scope["path"][len(scope.get("root_path", "")) :].strip("/"))


def keyword_of(scope: Scope) -> str:
    """The first path segment after ``/api/node/{uuid}/{dataname}``."""
    return route_of(scope).split("/")[0]


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
        self.build_app = build_app
        self.datatypes = load_all()
        self.apps: dict[str, FastAPI] = {}
        self._building = threading.Lock()

    def app_for(self, typename: str) -> FastAPI:
        """The datatype's sub-application, built on its first request: FastAPI analyses
        every route's signature (about 0.1 s per datatype), so building all of them at
        start-up would delay a server's first answer by seconds."""
        app = self.apps.get(typename)
        if app is None:
            with self._building:
                app = self.apps.get(typename)
                if app is None:
                    # The routes themselves, not included routers: FastAPI analyses an
                    # included router's routes again at each inclusion and once more on
                    # the first request (each route 3 times, about half of a datatype's
                    # first request).
                    router = APIRouter()
                    router.routes.extend(common.routes)
                    router.routes.extend(self.datatypes[typename].routes().routes)
                    app = self.apps[typename] = self.build_app(router)
        return app

    def datatype_apps(self) -> dict[str, FastAPI]:
        """Every datatype's sub-application (the OpenAPI document lists them all)."""
        return {name: self.app_for(name) for name in self.datatypes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services: Services = scope["app"].state.services
        params = scope["path_params"]

        keyword = keyword_of(scope)
        named = (params["uuid"], params["dataname"])
        earlier = _earlier_bindings(scope)
        reading = scope["method"] in ("GET", "HEAD")

        def bind_request(leased: Data | None) -> tuple[Data, bool]:
            """Bind the instance (unless a lease bound it already); a read is also made
            ready here (one thread hop)."""
            try:
                data = resolve(services, *named, leased=reading) if leased is None else leased
            except BaseException:
                earlier.pop(named, None)  # gone, or unknown: read nothing ahead
                raise
            _remember(earlier, named, data)
            writes = writes_versioned_data(data, scope["method"], keyword)
            if writes:
                data.require_writable()
            else:
                data.prepare_read()
            return data, writes

        with readahead.scope(_read_ahead(earlier.get(named), scope)):
            # A read the lease binds with no store call, and that has nothing to settle
            # (Data.prepares_reads), is bound here on the event loop: that saves the
            # thread hop of _blocking, in-process a tenth of an open keyvalue GET's CPU
            # and a fifth of an ``info``'s. Anything else is bound on a thread.
            leased = _leased_binding(services, *named) if reading else None
            bound_request: tuple[Data, bool] | Answered
            if (
                leased is not None
                and not leased.prepares_reads()
                and not writes_versioned_data(leased, scope["method"], keyword)
            ):
                _remember(earlier, named, leased)
                bound_request = leased, False
            else:
                binds = functools.partial(bind_request, leased)
                bound_request = await _blocking(binds, scope, receive, send, binding=True)
            if isinstance(bound_request, Answered):
                return
            data, writes = bound_request
            if not writes:
                if reading and await self._kept(data, scope, send):
                    return
                scope[SCOPE_KEY] = data
                await self.app_for(data.typename)(scope, receive, send)
                return
        await self._write(data, scope, receive, send)

    async def _kept(self, data: Data, scope: Scope, send: Send) -> bool:
        """Mark a read whose answer may be kept (app/immutable.py): at a locked version
        named by its full UUID, forever; at an open one, under the key the datatype names
        for it, which changes with anything the answer follows from. If an answer is
        kept under that key, send it and return True."""
        route = route_of(scope)
        if scope["path_params"]["uuid"] == data.node.uuid and data.answers_immutable(route):
            scope[IMMUTABLE] = True
            return False
        tag = data.open_answers_key(route)
        if tag is None:
            return False
        answers = data.services.answers
        key = answers.key(scope, open_name(tag, route))
        kept = answers.cache.get(key)
        if kept is not None:
            await replay(kept, scope, send)
            return True
        params = scope["path_params"]
        scope[OPEN_KEY] = (key, OpenRead(params["uuid"], params["dataname"], route))
        return False

    async def _write(self, data: Data, scope: Scope, receive: Receive, send: Send) -> None:
        """A write to an open node, announced to commits by an in-flight marker and
        admitted only if the node is still open once the marker is in place."""
        services = data.services
        marker = services.inflight.writing(data.node.uuid)
        if isinstance(await _blocking(marker.__enter__, scope, receive, send), Answered):
            return
        try:

            def rebind_writable() -> Data:
                fresh = resolve(services, data.node.uuid, data.name)
                fresh.require_writable()
                return fresh

            fresh = await _blocking(rebind_writable, scope, receive, send)
            if isinstance(fresh, Answered):
                return
            scope[SCOPE_KEY] = fresh
            app = self.app_for(fresh.typename)
            if fresh.transactional:
                await _transaction(fresh, app, scope, receive, send)
            else:
                await app(scope, receive, send)
        finally:
            await anyio.to_thread.run_sync(marker.__exit__, None, None, None)


def _earlier_bindings(scope: Scope) -> dict[tuple[str, str], Data]:
    """Per (version reference, instance name) as requests name them, the instance as the
    app's latest request for it bound it: it names the reads the next request's route
    will make (:meth:`Data.read_ahead`), never what they answer. Kept in the app's state,
    not in the dispatcher, which holds no state of an app's own (tests share one)."""
    state = scope["app"].state
    earlier: dict[tuple[str, str], Data] | None = getattr(state, "earlier_bindings", None)
    if earlier is None:  # on the event loop: no other request makes it meanwhile
        earlier = state.earlier_bindings = {}
    return earlier


def _remember(earlier: dict[tuple[str, str], Data], named: tuple[str, str], data: Data) -> None:
    """Keep ``data`` as the latest binding of ``named`` (a bounded number of names: past
    the bound, forget them all, the cheapest way to stay small)."""
    if named not in earlier and len(earlier) >= EARLIER_BINDINGS:
        earlier.clear()
    earlier[named] = data


def _read_ahead(earlier: Data | None, scope: Scope) -> readahead.ReadAhead | None:
    """The store reads this request's route will make, started now, beside its binding,
    as the instance's previous binding names them; None if it names none (or there was
    none). The route takes only a read of the very path in the very store it wants, so
    whatever the fresh binding finds changed is read afresh."""
    if earlier is None:
        return None
    paths = earlier.read_ahead(scope["method"], route_of(scope))
    if not paths:
        return None
    ahead = readahead.ReadAhead()
    ahead.start(_READING_AHEAD, earlier.base_store, paths)
    return ahead


class OpenChecks:
    """The :data:`~app.immutable.OpenCheck` of an app: the key its datatype names now for
    a read at an open version, from the instance bound afresh and made ready to read.

    A request must see every write acknowledged before it came, on any replica, so it
    never takes the key from a binding that had started before it came; but requests for
    one instance at one version that come while a binding runs share the next one,
    started when that ends. Under load, one binding (a thread hop, a small store read,
    and a repo check when the repo's lease has run out) then serves many requests, where
    each used to make its own."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: set[tuple[str, str]] = set()
        self._next: dict[tuple[str, str], asyncio.Future[Data]] = {}

    async def __call__(self, read: OpenRead) -> str | None:
        data = await self.bound(read.ref, read.dataname)
        return data.open_answers_key(read.route)

    async def bound(self, ref: str, dataname: str) -> Data:
        """The instance ``dataname`` at ``ref``, bound by a binding that started now or
        later, and made ready for reading."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a test client's): nothing carries over
            self._loop, self._running, self._next = loop, set(), {}
        key = (ref, dataname)
        future = self._next.get(key)
        if future is None:
            future = self._next[key] = loop.create_future()
            if key not in self._running:
                self._start(loop, key)
        # Shielded: a waiter cancelled (its client gone) must not cancel the others'.
        return await asyncio.shield(future)

    def _start(self, loop: asyncio.AbstractEventLoop, key: tuple[str, str]) -> None:
        future = self._next.pop(key)
        self._running.add(key)
        work = loop.run_in_executor(_BINDING, self._bind, *key)
        work.add_done_callback(functools.partial(self._done, loop, key, future))

    def _done(
        self,
        loop: asyncio.AbstractEventLoop,
        key: tuple[str, str],
        future: asyncio.Future[Data],
        work: asyncio.Future[Data],
    ) -> None:
        if loop is not self._loop:
            return
        self._running.discard(key)
        if work.cancelled():
            future.cancel()
        elif (error := work.exception()) is not None:
            future.set_exception(error)
            future.exception()  # retrieved: each waiter falls back to a routed request
        else:
            future.set_result(work.result())
        if key in self._next:
            self._start(loop, key)

    def _bind(self, ref: str, dataname: str) -> Data:
        data = resolve(self.services, ref, dataname, leased=True)
        data.prepare_read()
        return data


class Answered:
    """What :func:`_blocking` returns when it has answered the request with an error."""


#: Instances (by version reference and name) whose latest binding a dispatcher keeps
#: to read ahead for their next request.
EARLIER_BINDINGS = 1024

#: Threads that bind requests (:meth:`InstanceDispatcher.__call__`): mostly a small
#: store read or two, the whole blocking work of a kept open answer, for which asyncio's
#: executor hop costs about a sixth less CPU than anyio's worker threads (capacity
#: limiter, cancel scope). As many as anyio's default limit.
_BINDING = ThreadPoolExecutor(40, thread_name_prefix="dvid-bind")
#: Threads that read ahead for the requests being bound (:func:`_read_ahead`): apart
#: from :data:`_BINDING`, so that under load a binding never queues behind those reads
#: (the routes that take them wait for them; they wait for nothing).
_READING_AHEAD = ThreadPoolExecutor(40, thread_name_prefix="dvid-read-ahead")


async def _blocking(
    fn: Callable[[], T], scope: Scope, receive: Receive, send: Send, binding: bool = False
) -> T | Answered:
    """Run blocking ``fn`` off the event loop (on the :data:`_BINDING` threads if
    ``binding``, in the request's context). A DVID error or an unavailable store is
    answered right here (DVID's plain-text form) and :class:`Answered` returned."""
    try:
        if binding:
            context = contextvars.copy_context()
            return await asyncio.get_running_loop().run_in_executor(_BINDING, context.run, fn)
        return await anyio.to_thread.run_sync(fn)
    except DVIDError as e:
        response = error_response(e, scope["path"])
    except StoreUnavailable as e:
        response = unavailable_response(e, scope["path"])
    await response(scope, receive, send)
    return Answered()


class _Refused(Exception):
    """The handler answered with an error: its transaction publishes nothing."""


async def _transaction(
    data: Data, app: FastAPI, scope: Scope, receive: Receive, send: Send
) -> None:
    """Run a mutating request as one transaction: the response is held back until the
    transaction has committed (an acknowledged write is durable), and a handler that
    answers 4xx or 5xx publishes nothing. Synced instances get the events afterwards."""
    transaction = data.transaction()
    txn = await _blocking(transaction.__enter__, scope, receive, send)
    if isinstance(txn, Answered):
        return
    held: list[Message] = []
    status = 500

    async def hold(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        held.append(message)

    try:
        await app(scope, receive, hold)
    except BaseException as e:
        await anyio.to_thread.run_sync(transaction.__exit__, type(e), e, e.__traceback__)
        raise
    if status < 400:
        finish = functools.partial(transaction.__exit__, None, None, None)
    else:
        finish = functools.partial(transaction.__exit__, _Refused, _Refused(), None)
    if isinstance(await _blocking(finish, scope, receive, send), Answered):
        return
    for message in held:
        await send(message)
    if status < 400 and txn.events:
        await anyio.to_thread.run_sync(deliver, data)


def resolve(services: Services, ref: str, dataname: str, leased: bool = False) -> Data:
    """The instance ``dataname`` at the version ``ref`` names, bound; ``leased``: to read
    its data, through a repo the catalog checked lately (app/catalog.py), unless the
    lease lacks the node or the instance."""
    found = _leased_binding(services, ref, dataname) if leased else None
    if found is not None:
        return found
    repo, node = services.catalog.resolve(ref)
    return bind(services, repo, node.uuid, repo.instance(dataname))


def _leased_binding(services: Services, ref: str, dataname: str) -> Data | None:
    """The instance bound through a repo whose lease still runs, with no store call (so
    safe on the event loop); None if the lease lacks the node or the instance."""
    found = services.catalog.leased_node(ref)
    if found is None:
        return None
    repo, node = found
    instance = repo.instances.get(dataname)
    return None if instance is None else bind(services, repo, node.uuid, instance)


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
