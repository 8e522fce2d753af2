"""HTTP calls to a remote volume service, retried with jittered backoff.

One :class:`RemoteHTTP` per remote configuration: a pooled httpx client, a retry budget
and a thread pool for concurrent piece fetches. 5xx, 429, timeouts and broken
connections are retried; 401/403 become :class:`RemoteAuthFailed`, 404
:class:`RemoteNotFound`, other 4xx :class:`RemoteRejected` (the caller may handle a
status itself through ``accept``). Messages name the remote and the path, never headers.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

from backends.remote.base import (
    RemoteAuthFailed,
    RemoteError,
    RemoteNotFound,
    RemoteRejected,
    RemoteTimeout,
    RemoteUnavailable,
)

T = TypeVar("T")
R = TypeVar("R")

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class RemoteHTTP:
    """Retried requests to one remote service named ``name`` (e.g. ``BOSS at
    https://api.bossdb.io``)."""

    def __init__(
        self,
        name: str,
        *,
        timeout: float = 30.0,
        attempts: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        concurrency: int = 8,
    ) -> None:
        self.name = name
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.client = httpx.Client(
            timeout=timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="remote")
        #: Requests sent (each attempt counts), for tests and metrics.
        self.sent = 0

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: Callable[[], dict[str, str]] | None = None,
        accept: frozenset[int] = frozenset(),
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with retries. ``what`` names the request in errors (``"cutout of
        kasthuri/em/images"``). ``headers`` is called per attempt (tokens may refresh).
        A status in ``accept`` is returned to the caller instead of raised."""
        last = ""
        timed_out = False
        for attempt in range(self.attempts):
            if attempt:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                time.sleep(delay * (0.5 + random.random() / 2))
            try:
                self.sent += 1
                response = self.client.request(
                    method, url, headers=headers() if headers else None, **kwargs
                )
            except httpx.TimeoutException:
                last, timed_out = "timed out", True
                continue
            except httpx.TransportError as e:
                last, timed_out = f"connection failed ({type(e).__name__})", False
                continue
            status = response.status_code
            if status < 400 or status in accept:
                return response
            if status in RETRIED_STATUSES:
                last, timed_out = f"answered {status}", status == 504
                continue
            detail = _detail(response)
            if status in (401, 403):
                raise RemoteAuthFailed(
                    f"{self.name} refused authentication for {what} ({status}{detail})"
                )
            if status == 404:
                raise RemoteNotFound(f"{self.name} has no {what} (404{detail})")
            raise RemoteRejected(f"{self.name} rejected {what} ({status}{detail})")
        error = RemoteTimeout if timed_out else RemoteUnavailable
        raise error(f"{self.name} failed {what}: {last} after {self.attempts} attempts")

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``fn`` over ``items`` on the pool, in order; the first error is raised."""
        items = list(items)
        if len(items) <= 1:
            return [fn(item) for item in items]
        return list(self.pool.map(fn, items))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _detail(response: httpx.Response) -> str:
    """A short excerpt of an error body (JSON messages are short; HTML pages are not)."""
    text = response.text.strip().replace("\n", " ")
    if not text or text.startswith("<"):
        return ""
    return f": {text[:200]}"


__all__ = ["RemoteError", "RemoteHTTP"]
