"""A fault-injecting HTTP reverse proxy for tests, in front of an S3 fake (moto's server).

Every client of the store under test (boto3 *and* tensorstore, which has its own HTTP
stack that in-process mocks cannot reach) is pointed at the proxy, so faults reach every
path, chunk I/O included. Requests are forwarded to the upstream unchanged (method, path,
query, headers, body), one upstream connection per request; responses are read whole and
sent back (no streaming).

The policy is switched at runtime by the test::

    proxy.fail(rate=0.3, kinds=("error", "reset"), methods=("GET",), path_regex=r"/c/")
    ...
    proxy.heal()

Fault kinds (:data:`KINDS`):

* ``error``: answer 500 or 503 (an S3 XML error) without forwarding;
* ``slowdown``: answer 503 ``SlowDown`` without forwarding, as S3 throttles a prefix
  (botocore and tensorstore retry it as throttling, with backoff);
* ``lost``: forward, then answer 503 instead of the upstream's answer (the request took
  effect, the client does not know);
* ``timeout``: hold the connection silent for ``delay`` seconds (past the client's
  timeout), then close it without answering; nothing is forwarded;
* ``reset``: close the connection at once without answering (an RST); nothing forwarded.

Decisions come from a seeded ``random.Random``. :attr:`FaultProxy.injected` counts faults
by (kind, method) and :attr:`FaultProxy.log` keeps (kind, method, path) of each, so a test
can check that faults really hit the requests it meant. Loopback only; at most
``max_connections`` connections are served at once; :meth:`FaultProxy.stop` wakes
held connections and stops the server.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

KINDS = ("error", "slowdown", "lost", "timeout", "reset")

#: Headers that describe one hop, not the message: never forwarded either way.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
    }
)

_S3_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
    "<Message>injected by fault_proxy</Message><RequestId>fault</RequestId></Error>"
)


@dataclass(frozen=True)
class Policy:
    """Which requests fail and how; ``rate`` is the chance a matching request fails."""

    rate: float = 0.0
    kinds: tuple[str, ...] = ("error",)
    methods: frozenset[str] | None = None
    path_regex: re.Pattern[str] | None = None
    path_contains: str | None = None
    limit: int | None = None  # at most this many faults, then heal

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.path_contains is not None and self.path_contains not in path:
            return False
        return self.path_regex is None or self.path_regex.search(path) is not None


class FaultProxy:
    """Reverse proxy on 127.0.0.1 (a free port) forwarding to ``upstream``."""

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        delay: float = 5.0,
        upstream_timeout: float = 30.0,
        max_connections: int = 64,
        latency: float = 0.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"upstream must be an http:// URL, not {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.delay = delay
        #: Seconds every forwarded request waits first: a store's network round trip,
        #: which a fake on loopback lacks (benchmarks only).
        self.latency = latency
        self.upstream_timeout = upstream_timeout
        self.rng = random.Random(seed)
        self.policy = Policy()
        self.injected: Counter[tuple[str, str]] = Counter()
        self.log: list[tuple[str, str, str]] = []
        self.requests = 0
        self.forwarded = 0
        self._policy_faults = 0  # faults injected under the current policy
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread: threading.Thread | None = None
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_open_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- policy ----------------------------------------------------------------------------

    def fail(
        self,
        rate: float = 1.0,
        kinds: Iterable[str] = ("error",),
        methods: Iterable[str] | None = None,
        path_contains: str | None = None,
        path_regex: str | None = None,
        limit: int | None = None,
        seed: int | None = None,
    ) -> None:
        """Fail a ``rate`` share of the requests matching ``methods`` (e.g. ``("GET",)``),
        ``path_contains`` and ``path_regex`` (on the path with query), with a kind drawn
        uniformly from ``kinds``; after ``limit`` faults the proxy heals itself."""
        kinds = tuple(kinds)
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {KINDS}")
        with self._lock:
            if seed is not None:
                self.rng.seed(seed)
            self.policy = Policy(
                rate=rate,
                kinds=kinds,
                methods=None if methods is None else frozenset(m.upper() for m in methods),
                path_regex=None if path_regex is None else re.compile(path_regex),
                path_contains=path_contains,
                limit=limit,
            )
            self._policy_faults = 0

    def heal(self) -> None:
        """Forward everything from now on (connections already held stay held)."""
        with self._lock:
            self.policy = Policy()

    @contextmanager
    def failing(self, **policy: Any) -> Iterator[FaultProxy]:
        """``fail(**policy)`` for the duration of a ``with`` block, then ``heal()``."""
        self.fail(**policy)
        try:
            yield self
        finally:
            self.heal()

    def decide(self, method: str, path: str) -> tuple[str, int] | None:
        """The fault to inject into this request, if any (and count it), with the status
        an ``error`` fault answers."""
        with self._lock:
            self.requests += 1
            policy = self.policy
            if policy.rate <= 0 or not policy.matches(method, path):
                return None
            if self.rng.random() >= policy.rate:
                return None
            kind = self.rng.choice(policy.kinds)
            self.injected[kind, method] += 1
            self.log.append((kind, method, path))
            self._policy_faults += 1
            if policy.limit is not None and self._policy_faults >= policy.limit:
                self.policy = Policy()
            return kind, self.rng.choice((500, 503))

    def count(self, kind: str | None = None, method: str | None = None) -> int:
        """Faults injected so far, optionally of one kind and/or on one method."""
        with self._lock:
            return sum(
                n
                for (k, m), n in self.injected.items()
                if (kind is None or k == kind) and (method is None or m == method)
            )

    def reset_counters(self) -> None:
        with self._lock:
            self.injected.clear()
            self.log.clear()
            self.requests = 0
            self.forwarded = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (tensorstore dropping a stalled transfer, a server process
        stopping) is no error of the proxy: not worth a traceback on stderr."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def close_open_connections(self) -> None:
        """Cut every client connection (keep-alive ones would otherwise outlive stop)."""
        with self.connections_lock:
            for sock in self.open_connections:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Bounded: a connection beyond max_connections waits for a slot (briefly) or is shut.
        if not self.proxy._slots.acquire(timeout=10):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.open_connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.open_connections.discard(request)
            self.proxy._slots.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    def setup(self) -> None:
        super().setup()
        # An answer's headers and body leave in two writes: with Nagle's algorithm the
        # body waits for the client's delayed ACK, up to 40 ms an answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reset(self) -> None:
        """Close the connection with an RST, answering nothing."""
        self.close_connection = True
        with suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status)
        length = str(len(body))
        for name, value in headers:
            if name.lower() == "content-length" and self.command == "HEAD":
                length = value  # a HEAD answer describes the object it did not send
            elif name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _send_error(self, status: int, code: str = "") -> None:
        code = code or ("InternalError" if status == 500 else "ServiceUnavailable")
        body = _S3_ERROR.format(code=code).encode()
        self._send(status, [("Content-Type", "application/xml")], body)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        proxy = self.server.proxy
        conn = http.client.HTTPConnection(
            proxy.upstream_host, proxy.upstream_port, timeout=proxy.upstream_timeout
        )
        if proxy.latency:
            time.sleep(proxy.latency)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            with proxy._lock:
                proxy.forwarded += 1
            return response.status, response.getheaders(), data
        finally:
            conn.close()

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        kind, status = proxy.decide(self.command, self.path) or ("", 0)
        if kind == "reset":
            self._reset()
            return
        if kind == "timeout":
            proxy._stopping.wait(proxy.delay)
            self._reset()
            return
        if kind == "error":
            self._send_error(status)
            return
        if kind == "slowdown":
            self._send_error(503, "SlowDown")
            return
        try:
            status, headers, data = self._forward(body)
        except OSError:
            self._send_error(502)
            return
        if kind == "lost":
            self._send_error(503)
            return
        self._send(status, headers, data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
