"""tensorstore failures of the object store, told apart from genuine errors, and bounds on
how long tensorstore keeps trying.

tensorstore (chunk arrays) has its own HTTP stack, retries and error types, so a store that
keeps failing does not surface as :class:`~backends.base.StoreUnavailable` the way the
boto3 / google-cloud-storage paths do. Its Python binding raises ``ValueError`` (a few
codes map to other types) whose message starts with the absl status code. Measured on S3
(moto behind a fault-injecting proxy), tensorstore 0.1.86:

* 5xx, 429, 409, resets and stalls, once its retries are spent::

    ABORTED: Error reading "p/c/0/0": All 3 retry attempts failed: ServiceUnavailable: ...
    ABORTED: Error writing "p/c/0/0": All 3 retry attempts failed: CURL error Server
    returned nothing (no headers, no data): Empty reply from server [curl_code='52']
    ABORTED: Error reading "p/c/0/0": All 3 retry attempts failed: CURL error Timeout was
    reached: Operation too slow. ... [curl_code='28']

  (the same when opening an array: ``ABORTED: Error opening "zarr3" driver: Error reading
  "p/zarr.json": ...``);
* genuine errors, which must stay errors: ``FAILED_PRECONDITION: Error opening "zarr3"
  driver: Expected "shape" of [256,256] ...`` (metadata mismatch), ``FAILED_PRECONDITION:
  Error reading "p/c/1/1": Not enough data`` (corrupt chunk), ``DATA_LOSS: ... Invalid
  JSON``, ``NOT_FOUND: ...``, ``PERMISSION_DENIED: ...`` (403), ``OUT_OF_RANGE: ...``
  (bounds), and INVALID_ARGUMENT, which the binding strips of its prefix (``Error
  aligning dimensions: ...`` for a shape mismatch, ``Error reading ...: BadRequest`` for a
  400).

So ABORTED, UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED always mean "try again
later"; UNKNOWN, INTERNAL and FAILED_PRECONDITION only when the message shows the store's
transport failed (a curl error, or an HTTP 5xx / 429 / 408 / 409 answer). A
``TimeoutError`` (``Future.result(timeout=...)`` running out) is a store failure as well.

:func:`store_io` converts such exceptions into :class:`StoreUnavailable`; the HTTP layer
registers :func:`is_store_failure` so that one escaping a handler answers 503, never 500.

Bounds: tensorstore's defaults retry a transient failure 32 times with delays growing to
32 s (many minutes per request) and let a stalled connection hang forever. The S3 and GCS
backends put :func:`request_retries` into their kvstore specs and call
:func:`bound_stalled_requests`, so a request that keeps failing ends within seconds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from backends.base import StoreUnavailable

#: absl status codes that mean "the store failed, try again later" whatever the message.
TRANSIENT_CODES = frozenset({"ABORTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})
#: Codes that are store failures only with evidence of a failed request in the message.
AMBIGUOUS_CODES = frozenset({"UNKNOWN", "INTERNAL", "FAILED_PRECONDITION"})

_CODE = re.compile(r"^([A-Z_]+): ")
_TRANSPORT_FAILURE = re.compile(
    r"CURL error|curl_code=|http_response_code='(?:5\d\d|429|408|409)'|retry attempts failed"
)

#: Environment variables (read by this module) that override the retry bounds; the
#: defaults suit S3 and GCS: 6 retries with delays of 0.1 s doubling to at most 5 s
#: (about 6 s of waiting in all), so a request fails within seconds, not minutes.
RETRIES_ENV = "DVID_CLOUD_TENSORSTORE_RETRIES"
INITIAL_DELAY_ENV = "DVID_CLOUD_TENSORSTORE_INITIAL_DELAY"
MAX_DELAY_ENV = "DVID_CLOUD_TENSORSTORE_MAX_DELAY"
DEFAULT_RETRIES = 6
DEFAULT_INITIAL_DELAY = "100ms"
DEFAULT_MAX_DELAY = "5s"

#: tensorstore's own variable (libcurl's CURLOPT_LOW_SPEED_TIME): a transfer that moves
#: (almost) nothing for this many seconds is aborted and retried. Unset, a stalled
#: connection is waited on forever. Read once per process, when tensorstore first makes an
#: HTTP request.
STALL_ENV = "TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS"
DEFAULT_STALL_SECONDS = "30"


def status_code(error: BaseException) -> str | None:
    """The absl status code a tensorstore exception message starts with, if any."""
    match = _CODE.match(str(error))
    return match.group(1) if match else None


def is_store_failure(error: BaseException) -> bool:
    """Whether ``error`` (from tensorstore) means the store failed rather than the caller.

    Only plain ``ValueError`` (tensorstore's type for most status codes) and
    ``TimeoutError`` qualify: subclasses such as ``UnicodeDecodeError`` or a JSON decode
    error are never store failures.
    """
    if isinstance(error, StoreUnavailable | TimeoutError):
        return True
    if type(error) is not ValueError:
        return False
    code = status_code(error)
    if code in TRANSIENT_CODES:
        return True
    return code in AMBIGUOUS_CODES and _TRANSPORT_FAILURE.search(str(error)) is not None


def as_store_unavailable(error: BaseException) -> StoreUnavailable:
    """A :class:`StoreUnavailable` describing ``error`` (raise it ``from error``)."""
    if isinstance(error, StoreUnavailable):
        return error
    text = str(error) or type(error).__name__
    return StoreUnavailable(f"chunk I/O: {text[:500]}")


@contextmanager
def store_io() -> Iterator[None]:
    """Turn tensorstore store failures raised in the block into StoreUnavailable.

    Also usable as a decorator (``@store_io()``), like any ``contextmanager``.
    """
    try:
        yield
    except Exception as error:
        if isinstance(error, StoreUnavailable) or not is_store_failure(error):
            raise
        raise as_store_unavailable(error) from error


def request_retries() -> dict[str, Any]:
    """The bounded ``{max_retries, initial_delay, max_delay}`` for tensorstore's
    ``s3_request_retries`` / ``gcs_request_retries`` context resources."""
    return {
        "max_retries": max(1, int(os.environ.get(RETRIES_ENV) or DEFAULT_RETRIES)),
        "initial_delay": os.environ.get(INITIAL_DELAY_ENV) or DEFAULT_INITIAL_DELAY,
        "max_delay": os.environ.get(MAX_DELAY_ENV) or DEFAULT_MAX_DELAY,
    }


def bounded_context(retries_resource: str) -> Any:
    """A tensorstore ``Context`` whose ``retries_resource`` (``s3_request_retries``,
    ``gcs_request_retries``) is bounded by :func:`request_retries` (tensorstore's default
    is 32 retries with delays up to 32 s), with stalled transfers aborted: chunk I/O on a
    failing store then ends within seconds in an error the HTTP layer answers with 503."""
    import tensorstore as ts

    bound_stalled_requests()
    return ts.Context({retries_resource: request_retries()})


def bound_stalled_requests() -> None:
    """Make tensorstore abort transfers that stall (unless the deployment chose a value).

    Must run before tensorstore's first HTTP request in the process; the backends call it
    whenever they hand out a kvstore spec, which precedes any chunk I/O on them.
    """
    os.environ.setdefault(STALL_ENV, DEFAULT_STALL_SECONDS)
