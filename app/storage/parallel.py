"""Independent store round trips, overlapped.

An edit or a commit often needs many small objects that do not depend on each other (the
mapping partitions of a merge's supervoxels, the records a transaction publishes). One
after another they cost a round trip each, which on S3 or GCS is most of the request;
overlapped they cost a few. Store clients (boto3, google-cloud-storage, files) are safe
to share between threads.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

#: Round trips in flight at once, process-wide.
WORKERS = 16
_POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="store-io")


def each(fn: Callable[[T], R], items: Iterable[T], *, overlap: bool = True) -> list[R]:
    """``[fn(item) for item in items]``, overlapped; the first exception is raised after
    every call has finished. A single item, or any number without ``overlap`` (calls of a
    store whose :attr:`~backends.ObjectStore.overlap_calls` is false), runs in the caller's
    thread. Tasks given to the pool MUST NOT call :func:`each` themselves (the pool could
    wait on itself)."""
    work = list(items)
    if len(work) <= 1 or not overlap:
        return [fn(item) for item in work]
    futures = [_POOL.submit(fn, item) for item in work]
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
    return [f.result() for f in futures]


@contextlib.contextmanager
def background() -> Iterator[Callable[[Callable[[], object]], None]]:
    """A ``start(fn)`` whose calls run in the pool while the body goes on (a write's
    chunk uploads overlap the bookkeeping computed from the same voxels). The exit waits
    for every call, even when the body raises, so that nothing is still writing behind a
    failed request; then the first error of a call is raised. The same rule as
    :func:`each`: a started call MUST NOT call :func:`each` itself."""
    futures: list[Future[object]] = []
    try:
        yield lambda fn: futures.append(_POOL.submit(fn))
    finally:
        errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


def detach(fn: Callable[[], object]) -> None:
    """Run ``fn`` in the pool and do not wait for it: for best-effort cleanup that no
    answer depends on (its failure is logged, nothing else). The same rule as
    :func:`each`: ``fn`` MUST NOT call :func:`each` itself."""

    def done(future: Future[object]) -> None:
        error = future.exception()
        if error is not None:
            log.warning("background cleanup failed", extra={"error": str(error)})

    _POOL.submit(fn).add_done_callback(done)
