"""Amazon S3 (or any S3-compatible service) as an object store, through boto3.

Addressed as ``s3://bucket/optional/prefix``: every key lives under the prefix, so one
bucket can hold several independent stores. Endpoint, region and credentials come from
boto3's usual chain (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``, profiles, instance roles, ...) unless the
constructor is told otherwise.

Tokens are ETags. Conditional writes use S3's native ``If-None-Match: *`` and
``If-Match: <etag>`` on PutObject (S3 supports both since 2024), so the check and the write
are one atomic request; a lost race comes back as 412, or as 409 ConditionalRequestConflict
when two conditional writes overlap, and either raises :class:`PreconditionFailed`.

Caveats the callers should know:

* An ETag is the MD5 of the content (for single-part uploads), so writing the same bytes
  again gives the same token. Compare-and-swap therefore cannot tell "unchanged" from
  "changed and changed back"; for our metadata that is harmless, because equal bytes mean
  equal state.
* A conditional write whose first attempt reached S3 but whose answer was lost is retried
  and then fails its own precondition: the caller sees :class:`PreconditionFailed` although
  its data was written. Callers re-read on PreconditionFailed anyway, and will find it.
* moto (the test fake) checks ``If-Match`` non-atomically; ``If-None-Match`` is atomic.

Reads skip boto3's per-call machinery (:class:`_SignedGets`): a GET is signed by botocore's
own SigV4 signer and sent on the client's own connection pool, which costs about a
millisecond of CPU against boto3's three to four (event hooks, parameter handling,
response parsing), on every metadata read and conditional check of every request. Only
answers it can read plainly (200, 206, 304, 404) are taken from it; anything else is done
again through boto3, whose error handling stays the reference.
"""

from __future__ import annotations

import base64
import enum
import random
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import botocore.config
import botocore.exceptions
import urllib3.exceptions
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest

from backends.base import (
    UNCHANGED,
    Blob,
    ObjectInfo,
    ObjectStore,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
    Unchanged,
    validate_key,
)
from backends.tensorstore_errors import bound_stalled_requests, bounded_context

#: Error codes that mean "try again later" rather than "you asked for something wrong".
#: botocore's standard retry mode already retries these; seeing one here means it gave up.
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "ServiceUnavailable",
    }
)

#: Failures of the network rather than of the request. botocore wraps most of these, but
#: reading a response body happens outside its retry loop and can surface raw urllib3 errors.
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.IncompleteReadError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})


def _code(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: botocore.exceptions.ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _is_not_found(error: botocore.exceptions.ClientError) -> bool:
    return _code(error) in _NOT_FOUND_CODES or _status(error) == 404


def _is_transient(error: botocore.exceptions.ClientError) -> bool:
    return _code(error) in _TRANSIENT_CODES or _status(error) >= 500 or _status(error) == 429


def _translate(error: BaseException, what: str) -> StoreError:
    """Map a boto/urllib3 failure to our error types (the caller raises it ``from`` error)."""
    if isinstance(error, botocore.exceptions.ClientError):
        if _is_transient(error):
            return StoreUnavailable(f"S3 {what}: {error}")
        return StoreError(f"S3 {what}: {error}")
    if isinstance(error, _NETWORK_ERRORS):
        return StoreUnavailable(f"S3 {what}: {error}")
    return StoreError(f"S3 {what}: {error}")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b/")``; the prefix is empty or ends in ``/``."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3://bucket[/prefix] URL: {url!r}")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


def _backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt + 1``: jittered, exponential, capped."""
    return random.uniform(0, min(20.0, 0.1 * 2**attempt))


def _check_crc32(body: bytes, expected: str | None) -> None:
    """Compare a whole object with the CRC32 S3 stored for it (boto3 puts one by default),
    as boto3's response validation would; a mismatch is a damaged transfer, fetched again.
    Objects stored with another checksum, or none, are taken as they are."""
    if expected is not None:
        found = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
        if found != expected:
            raise ConnectionError(f"CRC32 {found} of the body, not the stored {expected}")


class _Fallback(enum.Enum):
    """What :class:`_SignedGets` answers when boto3 must do the request instead."""

    BOTO3 = "boto3"


class _Probe(Exception):
    """Stops :meth:`_SignedGets._bucket_url`'s probe before it is sent; holds its URL."""


class _SignedGets:
    """GETs signed by botocore's SigV4 signer and sent on the boto3 client's own HTTP
    session (its pool, proxies, TLS settings and timeouts), without the client's per-call
    machinery.

    It answers 200 and 206 (the body, checked against Content-Length and, whole, against
    the CRC32 stored with it, and the ETag), 304
    (:data:`UNCHANGED`) and 404 (None); it retries 5xx, 429 and network failures as
    botocore's standard mode would, then raises :class:`StoreUnavailable`. Every other
    answer (a redirect to another region, 403, 400, 416...) is :data:`_Fallback.BOTO3`:
    the caller repeats the request through boto3. Stores whose client has no such session
    or no credentials (anonymous access) always fall back.
    """

    def __init__(self, client: Any, session: boto3.session.Session, max_attempts: int) -> None:
        self._client = client
        self._session = session
        self._max_attempts = max_attempts
        self._http: Any = getattr(getattr(client, "_endpoint", None), "http_session", None)
        #: The URL of the bucket's root: "" until the first GET, None when unusable.
        self._base: str | None = "" if callable(getattr(self._http, "send", None)) else None
        self._probing = threading.Lock()

    def _bucket_url(self, bucket: str) -> str | None:
        """The URL of the bucket's root, learnt once from the URL boto3 itself would send
        a GET to (a probe stopped before it leaves), so that the client's endpoint,
        region and addressing style are followed; None if there is none to learn."""
        if self._base == "":
            with self._probing:
                if self._base == "":
                    self._probe(bucket)
        return self._base

    def _probe(self, bucket: str) -> None:
        probe = f"dvid-cloud-probe-{uuid.uuid4().hex}"

        def stop(request: Any, **_: Any) -> None:
            if str(request.url).split("?")[0].endswith("/" + probe):
                raise _Probe(str(request.url).split("?")[0])

        events = self._client.meta.events
        events.register("before-send.s3.GetObject", stop)
        try:
            self._client.get_object(Bucket=bucket, Key=probe)
            self._base = None  # the probe was sent after all: do not guess
        except _Probe as found:
            self._base = str(found)[: -len(probe)]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            self._base = None  # no credentials, say
        finally:
            events.unregister("before-send.s3.GetObject", stop)

    def get(
        self, bucket: str, key: str, headers: dict[str, str], what: str
    ) -> tuple[bytes, str] | Unchanged | _Fallback | None:
        base = self._bucket_url(bucket)
        credentials = self._session.get_credentials()
        if base is None or credentials is None:
            return _Fallback.BOTO3
        url = base + quote(key, safe="/~")
        region = self._client.meta.region_name or "us-east-1"
        # As boto3 does by default: S3 then sends the checksum stored with the object.
        headers = {**headers, "x-amz-checksum-mode": "ENABLED"}
        for attempt in range(self._max_attempts):
            request = AWSRequest("GET", url, headers=dict(headers))
            S3SigV4Auth(credentials.get_frozen_credentials(), "s3", region).add_auth(request)
            try:
                response = self._http.send(request.prepare())
                status = int(response.status_code)
                if status in (200, 206):
                    body = response.content
                    length = response.headers.get("Content-Length")
                    if length is not None and int(length) != len(body):
                        raise ConnectionError(f"body of {len(body)} bytes, not {length}")
                    if status == 200:
                        _check_crc32(body, response.headers.get("x-amz-checksum-crc32"))
                    return body, str(response.headers.get("ETag", ""))
                if status == 304:
                    return UNCHANGED
                if status == 404:
                    return None
                if status < 500 and status != 429:
                    if status in (301, 307, 400):  # another region or addressing: boto3's
                        self._base = None
                    return _Fallback.BOTO3
                error: BaseException = StoreUnavailable(f"S3 {what}: HTTP {status}")
            except _NETWORK_ERRORS as failure:
                error = failure
            if attempt + 1 >= self._max_attempts:
                if isinstance(error, StoreError):
                    raise error
                raise _translate(error, what) from error
            time.sleep(_backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover


class S3Store(ObjectStore):
    """Objects under ``prefix`` in one S3 bucket.

    ``max_attempts`` counts the first try: botocore's "standard" retry mode retries 5xx,
    throttling and connection errors with jittered exponential backoff, and this class
    additionally retries failures while streaming a response body. When attempts run out,
    :class:`StoreUnavailable` is raised so the HTTP layer can answer 503.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_pool_connections: int = 32,
        session: boto3.session.Session | None = None,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.bucket = bucket
        self.prefix = prefix.lstrip("/")
        self.max_attempts = max(1, max_attempts)
        self._session = session or boto3.session.Session()
        config = botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
        )
        # endpoint_url=None lets botocore apply AWS_ENDPOINT_URL(_S3) and profile settings.
        self._client = self._session.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
        self.endpoint_url: str = self._client.meta.endpoint_url
        self.region: str = self._client.meta.region_name or "us-east-1"
        self.description = f"s3://{bucket}/{self.prefix}"
        self._gets = _SignedGets(self._client, self._session, self.max_attempts)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> S3Store:
        """Open ``s3://bucket[/prefix]``; keyword arguments go to the constructor."""
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, **kwargs)

    @property
    def client(self) -> Any:
        """The underlying boto3 client (for tests and administrative tasks)."""
        return self._client

    @property
    def has_custom_endpoint(self) -> bool:
        """Whether requests go somewhere other than AWS itself (MinIO, moto, R2, ...)."""
        host = urlsplit(self.endpoint_url).hostname or ""
        return not (host == "amazonaws.com" or host.endswith(".amazonaws.com"))

    def _full(self, key: str) -> str:
        return self.prefix + key

    def _get_object(
        self, key: str, range_header: str | None, if_none_match: str | None = None
    ) -> tuple[bytes, str] | Unchanged | None:
        """GET (optionally ranged, or conditional) and read the body; None if missing.

        The body is read outside botocore's retry loop, so a connection dropped mid-body is
        retried here with the same jittered exponential backoff.
        """
        headers = {}
        if range_header is not None:
            headers["Range"] = range_header
        if if_none_match is not None:
            headers["If-None-Match"] = if_none_match
        found = self._gets.get(self.bucket, self._full(key), headers, f"get {key}")
        if found is not _Fallback.BOTO3:
            return found
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(key)}
        if range_header is not None:
            kwargs["Range"] = range_header
        if if_none_match is not None:
            kwargs["IfNoneMatch"] = if_none_match
        for attempt in range(self.max_attempts):
            try:
                response = self._client.get_object(**kwargs)
                with response["Body"] as body:
                    return body.read(), str(response.get("ETag", ""))
            except botocore.exceptions.ClientError as error:
                if _is_not_found(error):
                    return None
                if if_none_match is not None and _status(error) == 304:
                    return UNCHANGED
                if _code(error) == "InvalidRange" or _status(error) == 416:
                    return b"", ""  # the object exists; the range starts at or past its end
                raise _translate(error, f"get {key}") from error
            except _NETWORK_ERRORS as error:
                if attempt + 1 >= self.max_attempts:
                    raise _translate(error, f"get {key}") from error
                time.sleep(_backoff(attempt))
            except botocore.exceptions.BotoCoreError as error:
                raise StoreError(f"S3 get {key}: {error}") from error
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, key: str) -> Blob | None:
        return self._blob(key, self._get_object(key, None))

    def get_if_changed(self, key: str, token: str) -> Blob | Unchanged | None:
        found = self._get_object(key, None, if_none_match=token)
        return found if found is UNCHANGED else self._blob(key, found)

    def _blob(self, key: str, found: tuple[bytes, str] | Unchanged | None) -> Blob | None:
        if found is None or found is UNCHANGED:
            return None
        data, etag = found
        if not etag:
            raise StoreError(f"S3 get {key}: response without ETag")
        return Blob(data, etag)

    def get_range(self, key: str, start: int, end: int | None = None) -> bytes | None:
        if start < 0 or (end is not None and end < 0):
            raise ValueError("negative offsets are not supported")
        if end is not None and end <= start:
            # HTTP cannot express an empty range; answer from a HEAD.
            return b"" if self.exists(key) else None
        if start == 0 and end is None:
            range_header = None
        else:
            range_header = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        found = self._get_object(key, range_header)
        return None if found is None or found is UNCHANGED else found[0]

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except botocore.exceptions.ClientError as error:
            if _is_not_found(error):
                return False
            raise _translate(error, f"head {key}") from error
        except _NETWORK_ERRORS as error:
            raise _translate(error, f"head {key}") from error
        return True

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False
    ) -> str:
        validate_key(key)
        if if_absent and if_match is not None:
            raise ValueError("if_absent and if_match exclude each other")
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._full(key),
            "Body": bytes(data),
        }
        if if_absent:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            response = self._client.put_object(**kwargs)
        except botocore.exceptions.ClientError as error:
            if _code(error) in _PRECONDITION_CODES or _status(error) in (409, 412):
                raise PreconditionFailed(f"{key}: {_code(error) or 'precondition'}") from error
            if if_match is not None and _is_not_found(error):
                # If-Match on a missing object: S3 answers 404 NoSuchKey.
                raise PreconditionFailed(f"{key} does not exist") from error
            raise _translate(error, f"put {key}") from error
        except _NETWORK_ERRORS as error:
            raise _translate(error, f"put {key}") from error
        except botocore.exceptions.BotoCoreError as error:
            raise StoreError(f"S3 put {key}: {error}") from error
        return str(response["ETag"])

    def copy(self, source: str, target: str) -> bool:
        validate_key(target)
        try:
            self._client.copy_object(
                Bucket=self.bucket,
                Key=self._full(target),
                CopySource={"Bucket": self.bucket, "Key": self._full(source)},
            )
        except botocore.exceptions.ClientError as error:
            if _is_not_found(error):
                return False
            raise _translate(error, f"copy {source}") from error
        except _NETWORK_ERRORS as error:
            raise _translate(error, f"copy {source}") from error
        return True

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except botocore.exceptions.ClientError as error:
            if _is_not_found(error):
                return
            raise _translate(error, f"delete {key}") from error
        except _NETWORK_ERRORS as error:
            raise _translate(error, f"delete {key}") from error

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._full(prefix)}
        if start_after:  # an empty start_after skips nothing and is best not sent
            kwargs["StartAfter"] = self._full(start_after)
        strip = len(self.prefix)
        pages = self._client.get_paginator("list_objects_v2").paginate(**kwargs)
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield ObjectInfo(item["Key"][strip:], int(item["Size"]))
        except (botocore.exceptions.ClientError, *_NETWORK_ERRORS) as error:
            raise _translate(error, f"list {prefix}") from error

    def close(self) -> None:
        self._client.close()

    def tensorstore_kvstore(self, path: str) -> dict[str, Any]:
        """A tensorstore ``s3`` kvstore spec for ``path`` under this store's prefix.

        tensorstore has its own HTTP and credential code, so the spec must carry the
        endpoint (only for non-AWS services) and region explicitly. Credentials are taken
        from the environment when boto3 found them there (tensorstore's default chain also
        probes config files and the metadata service, which is slow and noisy elsewhere);
        otherwise tensorstore's default chain is used.
        """
        bound_stalled_requests()
        spec: dict[str, Any] = {
            "driver": "s3",
            "bucket": self.bucket,
            "path": self.prefix + path,
            "aws_region": self.region,
        }
        if self.has_custom_endpoint:
            spec["endpoint"] = self.endpoint_url
        credentials = self._session.get_credentials()
        method = getattr(credentials, "method", None)
        spec["aws_credentials"] = {"type": "environment" if method == "env" else "default"}
        return spec

    def tensorstore_context(self) -> Any:
        """This store's tensorstore context (:func:`bounded_context`), made on first use:
        one per store, as array handles are cached by context."""
        context = getattr(self, "_ts_context", None)
        if context is None:
            context = self._ts_context = bounded_context("s3_request_retries")
        return context
