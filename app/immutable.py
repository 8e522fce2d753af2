"""Answers that can never change, kept and replayed without touching the store.

A GET of an instance at a locked version, named by its full UUID, reads data that is
fixed forever (the node can never be written again). The dispatcher marks such requests
(:data:`IMMUTABLE`) when the datatype lists the endpoint among its
:attr:`~app.datatypes.base.Data.immutable_reads`. :class:`ImmutableResponses` then

* gives the answer an ``ETag`` and ``Cache-Control: public, max-age=31536000, immutable``,
  so that browsers and CDNs keep it, and answers a matching ``If-None-Match`` with 304;
* keeps the encoded body in a byte-bounded LRU, so that :class:`KeptAnswers` answers the
  next GET of the same path on the event loop, with no thread hop, catalog read or
  encoding.

Answers at open versions get ``Cache-Control: no-cache`` unless the route set its own.
Some are kept all the same, under a key the datatype names (:data:`OPEN_KEY`,
:meth:`~app.datatypes.base.Data.open_answers_key`) that changes with whatever the answer
follows from (for a volume, the version's journal stamp: any write there, on any replica,
changes it). That key is checked afresh for every request: :class:`KeptAnswers` asks an
:data:`OpenCheck` for it (a binding of the instance that started after the request came,
shared with the requests that came meanwhile) and replays the answer kept under it,
skipping the datatype's routes, the chunk reads and the encoding.
The cache is per process; a local instance deletion starts a new epoch (older entries can
no longer be found). A deletion on another replica is not seen by this cache: like a CDN
holding an immutable object, it may serve that instance's committed answers until they
are evicted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.cache import LRUCache

if TYPE_CHECKING:
    from app.services import Counters

#: The request-scope flag the dispatcher sets on an answer that can never change.
IMMUTABLE = "dvid.immutable"
#: The request-scope key under which the dispatcher has an open version's answer kept:
#: ``(key, OpenRead)``.
OPEN_KEY = "dvid.open_key"
IMMUTABLE_CONTROL = b"public, max-age=31536000, immutable"
#: An answer over 1/LARGE_SHARE of the cache is kept only when asked for again
#: (:meth:`ImmutableAnswers.admits_large`); keys asked for once are remembered by count.
LARGE_SHARE = 64
ASKED_ONCE = 1 << 12
NO_CACHE = b"no-cache"
_INSTANCE_PATH = re.compile(r"^/api/node/([^/]+)/[^/]+/.")
_FULL_UUID = re.compile(r"[0-9a-f]{32}")
#: Per entry, beyond its body: its headers (~0.9 KiB as Python objects), key, LRU node
#: and the headers as sent to up to :data:`_ORIGINS_KEPT` origins (~0.25 KiB each).
_OVERHEAD = 2048
_ORIGINS_KEPT = 2


@dataclass(frozen=True)
class Answer:
    """One kept answer: its headers (ETag included) and body, and the headers as sent
    through CORS to each origin seen (by :class:`KeptAnswers`, when it answers in front
    of the CORS layer)."""

    headers: list[tuple[bytes, bytes]]
    body: bytes | memoryview
    etag: bytes
    sent: dict[bytes | None, list[tuple[bytes, bytes]]] = field(
        default_factory=dict, compare=False, repr=False
    )


@dataclass(frozen=True)
class OpenRead:
    """A read whose answer was kept at an open version: the instance at the version
    reference of its path, and the route after them. Its key is named afresh for each
    request (:data:`OpenCheck`), since the version may have changed since."""

    ref: str
    dataname: str
    route: str


#: The key the datatype names now for an open read (the version's state read afresh, by
#: a binding that started after the request came), or None if it may not be kept now.
OpenCheck = Callable[[OpenRead], Awaitable[str | None]]


def open_name(tag: str, route: str) -> str:
    """What stands for the path of a read of ``route`` at an open version, in the key of
    its kept answer: the key ``tag`` the datatype named for it, and the route."""
    return f"{tag}/{route}"


@dataclass(slots=True)
class _Request:
    """What a kept answer depends on in a GET's headers, found in one pass over them."""

    query: str
    gzip: bool
    if_none_match: bytes
    origin: bytes | None
    has_body: bool


def _request(scope: Scope) -> _Request:
    gzip, if_none_match, origin, has_body = False, b"", None, False
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            gzip = b"gzip" in value.lower()
        elif name == b"if-none-match":
            if_none_match = bytes(value)
        elif name == b"origin":
            origin = bytes(value)
        elif name in (b"content-length", b"transfer-encoding"):
            has_body = True
    query = scope.get("query_string", b"").decode("latin-1")
    return _Request(query, gzip, if_none_match, origin, has_body)


class ImmutableAnswers:
    """The kept answers of this process (``response_cache_bytes``), and the paths whose
    answers were kept at an open version (by count: ``open_reads``)."""

    def __init__(self, capacity: int, max_entry: int = 16 << 20, open_reads: int = 1 << 16):
        self.cache: LRUCache[Answer] = LRUCache(capacity, weigh=lambda a: len(a.body) + _OVERHEAD)
        self.open_reads: LRUCache[OpenRead] = LRUCache(open_reads)
        self.max_entry = min(max_entry, capacity)
        self.large = capacity // LARGE_SHARE
        self._asked_once: LRUCache[bool] = LRUCache(ASKED_ONCE)
        self.epoch = 0

    def admits_large(self, key: str) -> bool:
        """Whether to keep a large answer (over 1/:data:`LARGE_SHARE` of the cache; a
        smaller one is kept at once) under ``key``: only when its key is asked for
        again, so this call counts as the ask. A one-off read of a large subvolume would
        otherwise push out dozens of chunk answers, and take a new buffer of fresh memory
        for each read (page faults: on the 2-core VM, a 16 MiB answer took 45 ms to serve
        while the cache was filling, 13 ms not kept)."""
        if self._asked_once.get(key) is not None:
            return True
        self._asked_once.put(key, True)
        return False

    def forget_all(self) -> None:
        """After a local instance deletion: nothing kept so far can be found again."""
        self.epoch += 1

    def key(self, scope: Scope, name: str) -> str:
        """Where the answer to the request in ``scope`` is kept, ``name`` standing for
        its path: the query and whether gzip is accepted are part of it."""
        return self.key_for(name, _request(scope))

    def key_for(self, name: str, request: _Request) -> str:
        """:meth:`key`, for a request's headers already found."""
        return f"{self.epoch}|{name}?{request.query}|{'gz' if request.gzip else ''}"


def _etag(key: str) -> bytes:
    return b'"' + hashlib.blake2b(key.encode(), digest_size=16).hexdigest().encode() + b'"'


def _matches(if_none_match: bytes, etag: bytes) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix(b"W/") for t in if_none_match.split(b",")]
    return etag in tags or b"*" in tags


def _validators(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers a 304 repeats."""
    return [(k, v) for k, v in headers if k in (b"etag", b"cache-control")]


class KeptAnswers:
    """ASGI middleware that answers GETs and HEADs of instance paths from the kept answers,
    as far out as it may go: with authentication required, right inside it; otherwise
    right inside the metrics layer (app.server), so that a hit skips the request bounds,
    CORS, authentication and routing layers. There it does for a hit what those would
    have done: CORS headers (``cors``, CORSMiddleware's options: its own code makes them,
    once per answer and origin) and the ``/api/load`` counters (``counters``). A request
    with a body, or with no kept answer, goes on inward.

    An answer at a locked version is found by its path; one at an open version by the
    key :data:`OpenCheck` names now for the read recorded at its path."""

    def __init__(
        self,
        app: ASGIApp,
        answers: ImmutableAnswers,
        check: OpenCheck,
        cors: dict[str, Any] | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.app = app
        self.answers = answers
        self.check = check
        self.cors = CORSMiddleware(app, **cors) if cors is not None else None
        self.counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = None
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path = _INSTANCE_PATH.match(scope["path"])
        request = _request(scope) if path is not None else None
        answer = None
        if path is not None and request is not None and not request.has_body:
            answer = await self._find(scope, path[1], request)
        if answer is None or request is None:
            await self.app(scope, receive, send)
            return
        counters = self.counters
        if counters is None:
            await self._send(answer, scope, request, send)
            return
        # What BoundedRequests counts for /api/load (a kept answer never reaches it).
        counters.requests += 1
        counters.get_requests += 1
        counters.active += 1
        try:
            await self._send(answer, scope, request, send)
        finally:
            counters.active -= 1

    async def _find(self, scope: Scope, ref: str, request: _Request) -> Answer | None:
        answers = self.answers
        path_key = answers.key_for(scope["path"], request)
        read = answers.open_reads.get(path_key)
        if read is None:
            # Only a full UUID names one node forever (a prefix or branch may name another).
            return answers.cache.get(path_key) if _FULL_UUID.fullmatch(ref) else None
        try:
            tag = await self.check(read)
        except Exception:  # the request, routed, meets the failure and answers it
            answers.open_reads.discard(path_key)
            return None
        if tag is None:
            return None
        return answers.cache.get(answers.key_for(open_name(tag, read.route), request))

    async def _send(self, answer: Answer, scope: Scope, request: _Request, send: Send) -> None:
        """Send a kept answer (no body for HEAD; 304 if the request names its ETag)."""
        if _matches(request.if_none_match, answer.etag):
            headers = await self._through_cors(_validators(answer.headers), request.origin)
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = answer.headers
        if self.cors is not None:
            sent = answer.sent.get(request.origin)
            if sent is None:
                sent = await self._through_cors(headers, request.origin)
                if len(answer.sent) < _ORIGINS_KEPT:
                    answer.sent[request.origin] = sent
            headers = sent
        body = b"" if scope["method"] == "HEAD" else answer.body
        if self.counters is not None:
            self.counters.bytes_read += len(body)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _through_cors(
        self, headers: list[tuple[bytes, bytes]], origin: bytes | None
    ) -> list[tuple[bytes, bytes]]:
        """``headers`` as the CORS layer would send them to a request from ``origin``."""
        if self.cors is None:
            return headers
        sent: list[Message] = []

        async def keep(message: Message) -> None:
            sent.append(message)

        start = {"type": "http.response.start", "status": 200, "headers": list(headers)}
        raw = [(b"origin", origin)] if origin is not None else []
        await self.cors.send(start, keep, Headers(raw=raw))
        return list(sent[0]["headers"])


async def replay(answer: Answer, scope: Scope, send: Send) -> None:
    """Send a kept open answer (no body for HEAD) from inside the CORS layer."""
    body = b"" if scope["method"] == "HEAD" else answer.body
    await send({"type": "http.response.start", "status": 200, "headers": answer.headers})
    await send({"type": "http.response.body", "body": body})


class ImmutableResponses:
    """ASGI middleware in front of the routes (inside authentication) that marks, converts
    (304) and keeps the answers of the requests :class:`KeptAnswers` could not answer.
    Such a read goes straight to the instance mount, the app's last route: no earlier
    route serves instance paths (tests/test_open_path_answers.py checks), and trying each
    of them costs a third of the time of an answer kept at an open version."""

    def __init__(self, app: ASGIApp, answers: ImmutableAnswers) -> None:
        self.app = app
        self.answers = answers
        self._mount: Mount | None = None

    def _instances(self, scope: Scope) -> Mount:
        """The mount of the instance dispatcher among the app's routes."""
        if self._mount is None:
            from app.api.instances import InstanceDispatcher  # it keeps answers here

            self._mount = next(
                route
                for route in scope["app"].router.routes
                if isinstance(route, Mount) and isinstance(route.app, InstanceDispatcher)
            )
        return self._mount

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = _INSTANCE_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if path is None or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        recorder = _Recorder(self.answers, scope, _request(scope), send)
        mount = self._instances(scope)
        match, child = mount.matches(scope)
        if match is not Match.FULL:
            await self.app(scope, receive, recorder)
            return
        scope.update(child)
        await mount.handle(scope, receive, recorder)


def _unchanging(chunk: bytes | memoryview) -> bytes | memoryview:
    """A body part as it is kept: as sent if nothing can change it (bytes, or a read-only
    view, which volume reads send: copying their 16 MiB into fresh memory here, on the
    event loop, cost about as much as reading the chunks), else a copy."""
    return chunk if isinstance(chunk, memoryview) and chunk.readonly else bytes(chunk)


class _Recorder:
    """The ``send`` of a request that missed: marks, converts (304) and keeps its answer;
    for one kept at an open version, also what it read (:class:`OpenRead`), under its
    path, for :class:`KeptAnswers` to check the next time."""

    def __init__(self, answers: ImmutableAnswers, scope: Scope, request: _Request, send: Send):
        self.answers = answers
        self.scope = scope
        self.path_key = self.key = answers.key_for(scope["path"], request)
        self.if_none_match = request.if_none_match
        self.send = send
        self.keep = False
        self.read: OpenRead | None = None
        self.not_modified = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.etag = b""
        self.parts: list[bytes | memoryview] = []
        self.size = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self._start(message)
        elif message["type"] == "http.response.body":
            await self._body(message)
        else:
            await self.send(message)

    async def _start(self, message: Message) -> None:
        headers = [
            (bytes(k), bytes(v))
            for k, v in message.get("headers", [])
            if bytes(k).lower() != b"cache-control" or not self.scope.get(IMMUTABLE)
        ]
        status = message["status"]
        if self.scope.get(IMMUTABLE) and status == 200:
            self.etag = _etag(self.key)
            headers += [(b"etag", self.etag), (b"cache-control", IMMUTABLE_CONTROL)]
            if _matches(self.if_none_match, self.etag):
                self.not_modified = True
                start = {"type": "http.response.start", "status": 304}
                await self.send({**start, "headers": _validators(headers)})
                return
            self.keep = self.scope["method"] == "GET"
        else:
            if not any(k.lower() == b"cache-control" for k, _ in headers):
                headers.append((b"cache-control", NO_CACHE))
            if status == 200 and OPEN_KEY in self.scope:
                self.key, self.read = self.scope[OPEN_KEY]
                self.keep = self.scope["method"] == "GET"
        self.headers = headers
        await self.send({**message, "headers": headers})

    async def _body(self, message: Message) -> None:
        more = message.get("more_body", False)
        if self.not_modified:
            if not more:
                await self.send({"type": "http.response.body", "body": b""})
            return
        if self.keep:
            chunk = message.get("body", b"")
            answers, smaller = self.answers, self.size
            self.size += len(chunk)
            if self.size > answers.max_entry or (
                smaller <= answers.large < self.size and not answers.admits_large(self.key)
            ):  # nothing more is gathered (or copied) for an answer that is not kept
                self.keep, self.parts = False, []
            else:
                self.parts.append(_unchanging(chunk))
            if not more and self.keep:
                self._keep()
        await self.send(message)

    def _keep(self) -> None:
        answers = self.answers
        body = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        answers.cache.put(self.key, Answer(self.headers, body, self.etag))
        if self.read is not None:
            answers.open_reads.put(self.path_key, self.read)
        else:  # the version is locked now: the path's answer is found by the path
            answers.open_reads.discard(self.path_key)
