"""Answers that can never change, kept and replayed without touching the store.

A GET of an instance at a locked version, named by its full UUID, reads data that is
fixed forever (the node can never be written again). The dispatcher marks such requests
(:data:`IMMUTABLE`) when the datatype lists the endpoint among its
:attr:`~app.datatypes.base.Data.immutable_reads`. This middleware then

* gives the answer an ``ETag`` and ``Cache-Control: public, max-age=31536000, immutable``,
  so that browsers and CDNs keep it, and answers a matching ``If-None-Match`` with 304;
* keeps the encoded body in a byte-bounded LRU, so that the next GET of the same path is
  answered here, on the event loop, with no thread hop, catalog read or encoding.

Answers at open versions get ``Cache-Control: no-cache`` unless the route set its own.
Some are kept all the same, under a key the datatype names (:data:`OPEN_KEY`,
:meth:`~app.datatypes.base.Data.open_answers_key`) that changes with whatever the answer
follows from (for a volume, the version's journal stamp: any write there, on any replica,
changes it). The dispatcher checks that key afresh on every request and replays the
answer kept under it, skipping the datatype's routes, the chunk reads and the encoding.
The cache is per process; a local instance deletion starts a new epoch (older entries can
no longer be found). A deletion on another replica is not seen by this cache: like a CDN
holding an immutable object, it may serve that instance's committed answers until they
are evicted.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.cache import LRUCache

#: The request-scope flag the dispatcher sets on an answer that can never change.
IMMUTABLE = "dvid.immutable"
#: The request-scope key under which the dispatcher has an open version's answer kept.
OPEN_KEY = "dvid.open_key"
IMMUTABLE_CONTROL = b"public, max-age=31536000, immutable"
NO_CACHE = b"no-cache"
_INSTANCE_PATH = re.compile(r"^/api/node/([^/]+)/[^/]+/.")
_FULL_UUID = re.compile(r"[0-9a-f]{32}")
#: Per entry, beyond its body: headers, key and bookkeeping.
_OVERHEAD = 512


@dataclass(frozen=True)
class Answer:
    """One kept answer: its headers (ETag included) and body."""

    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: bytes


class ImmutableAnswers:
    """The kept answers of this process (``response_cache_bytes``)."""

    def __init__(self, capacity: int, max_entry: int = 16 << 20) -> None:
        self.cache: LRUCache[Answer] = LRUCache(capacity, weigh=lambda a: len(a.body) + _OVERHEAD)
        self.max_entry = min(max_entry, capacity)
        self.epoch = 0

    def forget_all(self) -> None:
        """After a local instance deletion: nothing kept so far can be found again."""
        self.epoch += 1

    def key(self, scope: Scope, name: str) -> str:
        """Where the answer to the request in ``scope`` is kept, ``name`` standing for
        its path: the query and whether gzip is accepted are part of it."""
        query = scope.get("query_string", b"").decode("latin-1")
        gzip = b"gzip" in _header(scope, b"accept-encoding").lower()
        return f"{self.epoch}|{name}?{query}|{'gz' if gzip else ''}"


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return b""


def _etag(key: str) -> bytes:
    return b'"' + hashlib.blake2b(key.encode(), digest_size=16).hexdigest().encode() + b'"'


def _matches(if_none_match: bytes, etag: bytes) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix(b"W/") for t in if_none_match.split(b",")]
    return etag in tags or b"*" in tags


class ImmutableResponses:
    """ASGI middleware in front of the routes (inside authentication). A read it cannot
    answer from memory goes straight to the instance mount, the app's last route: no
    earlier route serves instance paths (tests/test_open_path_answers.py checks), and
    trying each of them costs a kept open answer a third of its time."""

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
        key = self.answers.key(scope, scope["path"])
        if_none_match = _header(scope, b"if-none-match")
        # Only a full UUID names one node forever (a prefix or branch may name another).
        kept = self.answers.cache.get(key) if _FULL_UUID.fullmatch(path[1]) else None
        if kept is not None:
            await replay(kept, scope, if_none_match, send)
            return
        recorder = _Recorder(self.answers, scope, key, if_none_match, send)
        mount = self._instances(scope)
        match, child = mount.matches(scope)
        if match is not Match.FULL:
            await self.app(scope, receive, recorder)
            return
        scope.update(child)
        await mount.handle(scope, receive, recorder)


async def replay(answer: Answer, scope: Scope, if_none_match: bytes, send: Send) -> None:
    """Send a kept answer (no body for HEAD; 304 if ``if_none_match`` names its ETag)."""
    if _matches(if_none_match, answer.etag):
        headers = [(k, v) for k, v in answer.headers if k in (b"etag", b"cache-control")]
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"" if scope["method"] == "HEAD" else answer.body
    await send({"type": "http.response.start", "status": 200, "headers": answer.headers})
    await send({"type": "http.response.body", "body": body})


class _Recorder:
    """The ``send`` of a request that missed: marks, converts (304) and keeps its answer."""

    def __init__(
        self, answers: ImmutableAnswers, scope: Scope, key: str, if_none_match: bytes, send: Send
    ) -> None:
        self.answers = answers
        self.scope = scope
        self.key = key
        self.if_none_match = if_none_match
        self.send = send
        self.keep = False
        self.not_modified = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.etag = b""
        self.parts: list[bytes] = []
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
                kept = [(k, v) for k, v in headers if k in (b"etag", b"cache-control")]
                await self.send({"type": "http.response.start", "status": 304, "headers": kept})
                return
            self.keep = self.scope["method"] == "GET"
        else:
            if not any(k.lower() == b"cache-control" for k, _ in headers):
                headers.append((b"cache-control", NO_CACHE))
            if status == 200 and OPEN_KEY in self.scope:
                self.key, self.keep = self.scope[OPEN_KEY], self.scope["method"] == "GET"
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
            self.size += len(chunk)
            if self.size > self.answers.max_entry:
                self.keep, self.parts = False, []
            else:
                self.parts.append(bytes(chunk))
            if not more and self.keep:
                self.answers.cache.put(
                    self.key, Answer(self.headers, b"".join(self.parts), self.etag)
                )
        await self.send(message)
