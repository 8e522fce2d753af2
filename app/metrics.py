"""Observability: Prometheus metrics at ``GET /metrics``, request ids and access logs.

:func:`install_metrics` gives an app

* one ASGI middleware (outermost, so refused and failed requests count too) that gives
  every request an id (its ``X-Request-Id`` header if it is a sane one, else a new one),
  echoes it in the response's ``X-Request-Id``, makes it the :data:`app.logs.request_id`
  of everything the request logs, writes one access line per request, and counts and
  times the request by method, route *template* and status;
* a proxy around each of its stores counting and timing every store operation;
* ``GET /metrics`` in Prometheus' text format, which also reads the caches' hit and miss
  counts and ``/api/load``'s counters at scrape time.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (``app.state.metrics``),
so several apps in one process (tests, replicas) never share or clash over metrics.

Route labels are templates such as ``/api/node/{uuid}/{dataname}/key/{key}``, never
request paths, so the number of series stays bounded whatever clients send. Requests
under the instance mount are labelled with the datatype route that served them; those
that never reached one (unknown instance, refused early) get the mount's
``/api/node/{uuid}/{dataname}/{path}``, and paths matching no route get ``unmatched``.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__
from app.cache import LRUCache
from app.logs import install_request_ids, request_id
from app.services import Services
from backends import Blob, ObjectInfo, ObjectStore, PreconditionFailed, StoreUnavailable
from backends.base import Unchanged

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)
access_log = logging.getLogger("dvid_cloud.access")

T = TypeVar("T")

REQUEST_ID_HEADER = b"x-request-id"
#: Incoming ids are kept only if they look like ids (no log injection, bounded length).
_SANE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
INSTANCE_MOUNT = "/api/node/{uuid}/{dataname}"
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
#: Requests logged at debug rather than info: health checks and scrapes.
QUIET_PATHS = frozenset({"/api/heartbeat", "/metrics"})

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class Metrics:
    """The metrics of one app, in their own registry, made (and prometheus_client
    imported: some 18 ms of every server start) on the first scrape."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.http = HttpRequests()
        self.stores = StoreOperations()
        self._registry: CollectorRegistry | None = None

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format (called on the event loop only)."""
        from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

        if self._registry is None:
            registry = CollectorRegistry()
            registry.register(self.http)
            registry.register(self.stores)
            registry.register(_ServiceCollector(self.services))
            ProcessCollector(registry=registry)
            self._registry = registry
        return generate_latest(self._registry)


class HttpRequests:
    """The HTTP requests answered, as ``dvid_http_requests`` (a counter) and
    ``dvid_http_request_duration_seconds`` (a histogram) by method, route template and
    status, and ``dvid_http_requests_in_progress``.

    Kept as plain numbers that only the event loop changes, and turned into metric
    families when scraped: prometheus_client's Counter, Histogram and Gauge take a lock
    for every change (a histogram observation up to three), which cost a kept answer
    about 10 µs, more than finding it."""

    def __init__(self) -> None:
        self.in_progress = 0
        #: labels -> [count, sum of seconds, count per bucket of HTTP_BUCKETS, count above]
        self.series: dict[tuple[str, str, str], list[float]] = {}

    def observe(self, labels: tuple[str, str, str], seconds: float) -> None:
        series = self.series.get(labels)
        if series is None:  # bounded: labels are templates
            series = self.series[labels] = [0.0] * (len(HTTP_BUCKETS) + 3)
        series[0] += 1
        series[1] += seconds
        series[2 + bisect.bisect_left(HTTP_BUCKETS, seconds)] += 1

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        names = ["method", "route", "status"]
        requests = CounterMetricFamily(
            "dvid_http_requests",
            "HTTP requests answered, by method, route template and status.",
            labels=names,
        )
        latency = HistogramMetricFamily(
            "dvid_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            labels=names,
        )
        bounds = [floatToGoString(b) for b in HTTP_BUCKETS] + ["+Inf"]
        for labels, series in list(self.series.items()):
            requests.add_metric(list(labels), series[0])
            cumulative = itertools.accumulate(series[2:])
            buckets = list(zip(bounds, cumulative, strict=True))
            latency.add_metric(list(labels), buckets, series[1])
        in_progress = GaugeMetricFamily(
            "dvid_http_requests_in_progress", "HTTP requests being answered."
        )
        in_progress.add_metric([], self.in_progress)
        yield from (requests, latency, in_progress)


class _ServiceCollector:
    """Reads the caches and ``/api/load`` counters when scraped (they keep their own)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        svc = self.services
        caches: dict[str, LRUCache[Any]] = {
            "value": svc.value_cache,
            "index": svc.index_cache,
            "bitmap": svc.bitmap_cache,
            "answers": svc.answers.cache,
            "remote": svc.remotes.cache,
        }
        hits = CounterMetricFamily(
            "dvid_cache_hits", "Lookups found in an in-memory cache.", labels=["cache"]
        )
        misses = CounterMetricFamily(
            "dvid_cache_misses", "Lookups not found in an in-memory cache.", labels=["cache"]
        )
        ratio = GaugeMetricFamily(
            "dvid_cache_hit_ratio",
            "Hits / (hits + misses) of an in-memory cache since start (0 before any lookup).",
            labels=["cache"],
        )
        entries = GaugeMetricFamily(
            "dvid_cache_entries", "Entries held by an in-memory cache.", labels=["cache"]
        )
        weight = GaugeMetricFamily(
            "dvid_cache_weight",
            "Weight held by an in-memory cache (bytes for value, answers and remote; entries "
            "for the others).",
            labels=["cache"],
        )
        for name, cache in caches.items():
            h, m = cache.hits, cache.misses
            hits.add_metric([name], h)
            misses.add_metric([name], m)
            ratio.add_metric([name], h / (h + m) if h + m else 0.0)
            entries.add_metric([name], len(cache))
            weight.add_metric([name], cache.weight)
        yield from (hits, misses, ratio, entries, weight)

        c = svc.counters
        body = CounterMetricFamily(
            "dvid_http_body_bytes",
            "Request and response body bytes (as /api/load reports), by direction.",
            labels=["direction"],
        )
        body.add_metric(["received"], c.bytes_written)
        body.add_metric(["sent"], c.bytes_read)
        yield body
        info = GaugeMetricFamily(
            "dvid_build_info", "dvid-cloud version; always 1.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        uptime = GaugeMetricFamily("dvid_uptime_seconds", "Seconds since the app was created.")
        uptime.add_metric([], time.time() - svc.started)
        yield uptime


# --------------------------------------------------------------------------- stores


class StoreOperations:
    """Object-store operations as ``dvid_store_operations`` (by store, operation and
    outcome), ``dvid_store_operation_duration_seconds`` (a histogram by store and
    operation) and ``dvid_store_bytes`` (by store and direction).

    Plain numbers changed under one lock (store calls come from many threads) and turned
    into metric families when scraped: prometheus_client's counter and histogram took
    five locks per call, a tenth of the binding that checks an open version's kept
    answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outcomes: dict[tuple[str, str, str], int] = {}
        #: (store, op) -> [count, sum of seconds, count per bucket of STORE_BUCKETS, above]
        self.times: dict[tuple[str, str], list[float]] = {}
        self.moved: dict[tuple[str, str], int] = {}

    def record(self, store: str, op: str, outcome: str, seconds: float) -> None:
        bucket = 2 + bisect.bisect_left(STORE_BUCKETS, seconds)
        with self._lock:
            key = (store, op, outcome)
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
            series = self.times.get((store, op))
            if series is None:
                series = self.times[store, op] = [0.0] * (len(STORE_BUCKETS) + 3)
            series[0] += 1
            series[1] += seconds
            series[bucket] += 1

    def count_bytes(self, store: str, direction: str, nbytes: int) -> None:
        with self._lock:
            self.moved[store, direction] = self.moved.get((store, direction), 0) + nbytes

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        with self._lock:
            outcomes = list(self.outcomes.items())
            times = [(key, list(series)) for key, series in self.times.items()]
            moved = list(self.moved.items())
        operations = CounterMetricFamily(
            "dvid_store_operations",
            "Object-store operations, by store, operation and outcome "
            "(ok, not_found, conflict, unavailable, error).",
            labels=["store", "op", "outcome"],
        )
        for outcome, count in outcomes:
            operations.add_metric(list(outcome), count)
        latency = HistogramMetricFamily(
            "dvid_store_operation_duration_seconds",
            "Time spent in object-store operations, by store and operation.",
            labels=["store", "op"],
        )
        bounds = [floatToGoString(b) for b in STORE_BUCKETS] + ["+Inf"]
        for op, series in times:
            buckets = list(zip(bounds, itertools.accumulate(series[2:]), strict=True))
            latency.add_metric(list(op), buckets, series[1])
        nbytes = CounterMetricFamily(
            "dvid_store_bytes",
            "Bytes moved by get, get_range and put, by store and direction (read, written).",
            labels=["store", "direction"],
        )
        for direction, total in moved:
            nbytes.add_metric(list(direction), total)
        yield from (operations, latency, nbytes)


class InstrumentedStore(ObjectStore):
    """Counts and times every operation of the store it wraps; otherwise transparent
    (attributes it does not define, such as ``client`` or ``bucket``, are the inner
    store's)."""

    def __init__(self, inner: ObjectStore, name: str, metrics: Metrics) -> None:
        self.inner = inner
        self.description = inner.description
        self.overlap_calls = inner.overlap_calls
        self.name = name
        self._operations = metrics.stores

    def __getattr__(self, attr: str) -> Any:
        # Only called for attributes not found normally; "inner" guards against recursion
        # while unpickling or copying, when __init__ has not run.
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def _record(self, op: str, seconds: float, outcome: str) -> None:
        self._operations.record(self.name, op, outcome, seconds)

    def _call(self, op: str, fn: Callable[[], T], found: Callable[[T], bool] | None = None) -> T:
        start = time.perf_counter()
        outcome = "error"
        try:
            result = fn()
            outcome = "ok" if found is None or found(result) else "not_found"
            return result
        except PreconditionFailed:
            outcome = "conflict"
            raise
        except StoreUnavailable:
            outcome = "unavailable"
            raise
        finally:
            self._record(op, time.perf_counter() - start, outcome)

    def get(self, key: str) -> Blob | None:
        blob = self._call("get", lambda: self.inner.get(key), _not_none)
        if blob is not None:
            self._operations.count_bytes(self.name, "read", len(blob.data))
        return blob

    def get_if_changed(self, key: str, token: str) -> Blob | Unchanged | None:
        found = self._call(
            "get_if_changed", lambda: self.inner.get_if_changed(key, token), _not_none
        )
        if isinstance(found, Blob):
            self._operations.count_bytes(self.name, "read", len(found.data))
        return found

    def get_range(self, key: str, start: int, end: int | None = None) -> bytes | None:
        data = self._call("get_range", lambda: self.inner.get_range(key, start, end), _not_none)
        if data is not None:
            self._operations.count_bytes(self.name, "read", len(data))
        return data

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False
    ) -> str:
        token = self._call(
            "put", lambda: self.inner.put(key, data, if_match=if_match, if_absent=if_absent)
        )
        self._operations.count_bytes(self.name, "written", len(data))
        return token

    def copy(self, source: str, target: str) -> bool:
        return self._call("copy", lambda: self.inner.copy(source, target), bool)

    def delete(self, key: str) -> None:
        self._call("delete", lambda: self.inner.delete(key))

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Timed as the time spent inside the inner listing (not the caller's loop), and
        recorded when the listing is exhausted, fails or is abandoned."""
        spent = 0.0
        outcome = "ok"
        items = iter(self.inner.list(prefix, start_after=start_after))
        try:
            while True:
                start = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    break
                finally:
                    spent += time.perf_counter() - start
                yield item
        except GeneratorExit:
            raise
        except PreconditionFailed:
            outcome = "conflict"
            raise
        except StoreUnavailable:
            outcome = "unavailable"
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            self._record("list", spent, outcome)

    def exists(self, key: str) -> bool:
        return self._call("exists", lambda: self.inner.exists(key), bool)

    def delete_prefix(self, prefix: str) -> int:
        return self._call("delete_prefix", lambda: self.inner.delete_prefix(prefix))

    def size_of_prefix(self, prefix: str) -> int:
        return self._call("size_of_prefix", lambda: self.inner.size_of_prefix(prefix))

    def check(self, writable: bool = True) -> None:
        self._call("check", lambda: self.inner.check(writable))

    def close(self) -> None:
        self.inner.close()

    def tensorstore_kvstore(self, path: str) -> dict[str, Any]:
        return self.inner.tensorstore_kvstore(path)

    def tensorstore_context(self) -> Any:
        return self.inner.tensorstore_context()

    def tensorstore_shares_keys(self) -> bool:
        return self.inner.tensorstore_shares_keys()


def _not_none(value: object) -> bool:
    return value is not None


def instrument_stores(services: Services, metrics: Metrics) -> None:
    """Put a counting proxy around each of ``services``' stores, everywhere they are held.

    Array data that tensorstore reads and writes itself (imageblk, labelmap chunks) does
    not go through these methods and is not counted.
    """
    for name, store in list(services.stores.items()):
        if not isinstance(store, InstrumentedStore):
            services.stores[name] = InstrumentedStore(store, name, metrics)
    default = services.stores[services.default_store]
    services.catalog.store = default
    services.inflight.store = default


# --------------------------------------------------------------------------- requests


#: Paths whose route template :class:`RouteTemplates` remembers.
MATCH_CACHE_PATHS = 4096


class RouteTemplates:
    """Finds the route template of a request.

    Usually the router has said which route served the request (``scope["route"]``; for
    the instance mount, the datatype's route, marked by the dispatcher's
    ``dvid.context``). Requests refused before routing (too large, read-only,
    unauthenticated), or that never reached a datatype route, are matched against the
    templates of the app's OpenAPI document instead, built once on first need; the most
    literal template that matches the path and method wins.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._table: list[tuple[int, re.Pattern[str], str, frozenset[str]]] | None = None
        #: The templates of recent paths (least recent first). Matching tries every
        #: template (over a hundred regexes), and building them (the OpenAPI document of
        #: every datatype) took seconds; an answer kept by app.immutable never reaches
        #: the router, but its path was routed when the answer was made, and a viewer
        #: asks for the same chunk paths again and again.
        self._recent: OrderedDict[tuple[str, str], str] = OrderedDict()

    def label(self, scope: Scope, method: str, path: str) -> str:
        """The request's template (called on the event loop only: no lock)."""
        route = scope.get("route")
        template = getattr(route, "path_format", None)
        key = (method, path)
        if isinstance(template, str) and not isinstance(route, Mount):
            template = INSTANCE_MOUNT + template if "dvid.context" in scope else template
        elif (template := self._recent.get(key)) is None:
            template = self._match(method, path)
        self._recent[key] = template
        self._recent.move_to_end(key)
        if len(self._recent) > MATCH_CACHE_PATHS:
            self._recent.popitem(last=False)
        return template

    def _match(self, method: str, path: str) -> str:
        if self._table is None:
            self._table = self._build()
        fallback = None
        for _, regex, template, methods in self._table:
            if regex.match(path):
                if method in methods or (method == "HEAD" and "GET" in methods):
                    return template
                fallback = fallback or template
        if fallback is not None:
            return fallback
        if _MOUNT_REGEX.match(path):
            return INSTANCE_MOUNT + "/{path}"
        return UNMATCHED

    def _build(self) -> list[tuple[int, re.Pattern[str], str, frozenset[str]]]:
        paths: dict[str, set[str]] = {}
        try:
            for template, operations in self.app.openapi().get("paths", {}).items():
                paths.setdefault(template, set()).update(m.upper() for m in operations)
        except Exception:  # an unbuildable schema must not fail requests
            log.exception("no OpenAPI document: unrouted requests are labelled coarsely")
        for route in self.app.router.routes:
            template = getattr(route, "path_format", None)
            if isinstance(template, str) and not isinstance(route, Mount):
                paths.setdefault(template, set()).update(getattr(route, "methods", None) or ())
        table = [
            (template.count("{"), compile_path(template)[0], template, frozenset(methods))
            for template, methods in paths.items()
        ]
        table.sort(key=lambda row: row[0])
        return table


_MOUNT_REGEX = compile_path(INSTANCE_MOUNT + "/{path:path}")[0]


class ObserveRequests:
    """ASGI middleware: request ids, access log and HTTP metrics (see the module doc)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: RouteTemplates) -> None:
        self.app = app
        self.http = metrics.http
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        method = scope["method"] if scope["method"] in METHODS else "other"
        path = scope["path"]
        root = scope.get("root_path", "")
        route_path = path[len(root) :] or "/" if root and path.startswith(root) else path
        rid_header = (REQUEST_ID_HEADER, rid.encode())
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                for name, _ in headers:  # ASGI response header names are lower-case
                    if name == REQUEST_ID_HEADER:
                        break
                else:
                    message = {**message, "headers": [*headers, rid_header]}
            await send(message)

        token = request_id.set(rid)
        http = self.http
        http.in_progress += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            http.in_progress -= 1
            labels = (method, self.routes.label(scope, method, route_path), str(status))
            http.observe(labels, seconds)
            level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
            if access_log.isEnabledFor(level):  # the line's fields cost a kept answer a tenth
                access_log.log(
                    level,
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": path,
                        "route": labels[1],
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                    },
                )
            request_id.reset(token)


class _RequestIds:
    """New request ids: 32 hex digits, a random half drawn once per process (again in a
    forked worker) and a count. ``uuid4`` reads the system's random source per request,
    a system call that also lets another thread take the interpreter lock."""

    def __init__(self) -> None:
        self._draw()
        os.register_at_fork(after_in_child=self._draw)

    def _draw(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.count = itertools.count()

    def new(self) -> str:
        return f"{self.prefix}{next(self.count):016x}"


_new_ids = _RequestIds()


def _request_id(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == REQUEST_ID_HEADER:  # ASGI header names are lower-case
            if _SANE_ID.fullmatch(value):
                return value.decode()
            break
    # Under Lambda (Mangum), Lambda's own id, which its START/REPORT log lines carry.
    lambda_id = getattr(scope.get("aws.context"), "aws_request_id", None)
    if isinstance(lambda_id, str) and _SANE_ID.fullmatch(lambda_id.encode()):
        return lambda_id
    return _new_ids.new()


def install_metrics(app: FastAPI, services: Services) -> Callable[[ASGIApp], ASGIApp]:
    """Instrument ``app``'s stores and serve ``GET /metrics`` (call once, from
    ``create_app``). Returns the layer that observes requests, to wrap around all the
    others (Starlette's own included), so that every request counts."""
    install_request_ids()
    metrics = Metrics(services)
    app.state.metrics = metrics
    instrument_stores(services, metrics)

    async def scrape(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)
    routes = RouteTemplates(app)
    return lambda inner: ObserveRequests(inner, metrics, routes)
