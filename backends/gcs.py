"""Google Cloud Storage as an object store, through google-cloud-storage.

Addressed as ``gs://bucket/optional/prefix``. Credentials and project come from Application
Default Credentials, except when ``STORAGE_EMULATOR_HOST`` is set (or an explicit
``endpoint`` is given): then the client talks anonymously to that emulator with project
``test``, which is what fake-gcs-server and friends expect.

Tokens are object generations (decimal strings). Conditional writes are GCS preconditions:
``if_absent`` is ``ifGenerationMatch=0`` and ``if_match`` is ``ifGenerationMatch=<token>``,
checked atomically by the service; a 412 raises :class:`PreconditionFailed`. Unlike S3
ETags, a generation changes on every write, even of identical bytes.

Transient failures (429, 408, 5xx, connection resets, timeouts) are retried with the
library's jittered exponential backoff until ``retry_timeout`` seconds have passed; then
:class:`StoreUnavailable` is raised. All writes are retried, not only generation-matched
ones as the library does by default: a put replaces the whole object, so repeating it is
harmless, and a generation-matched put that is repeated after a lost answer fails its own
precondition (the caller then re-reads and finds its data).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import google.api_core.exceptions as gexc
import google.auth.exceptions
import requests
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.cloud.storage.retry import DEFAULT_RETRY
from google.cloud.storage.retry import _should_retry as _is_transient

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

T = TypeVar("T")

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
EMULATOR_PROJECT = "test"

#: Errors other than google.api_core's: the network or auth transport failed, or the media
#: layer rejected a response (a bad status it did not convert, a checksum mismatch).
_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    InvalidResponse,
    DataCorruption,
    requests.exceptions.RequestException,
    google.auth.exceptions.TransportError,
    ConnectionError,
    TimeoutError,
)
#: Everything a call may raise that :meth:`GCSStore._call` translates.
_FAILURES: tuple[type[Exception], ...] = (gexc.GoogleAPIError, *_TRANSPORT_ERRORS)


def parse_gs_url(url: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b/")``; the prefix is empty or ends in ``/``."""
    parts = urlsplit(url)
    if parts.scheme != "gs" or not parts.netloc:
        raise ValueError(f"not a gs://bucket[/prefix] URL: {url!r}")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


class GCSStore(ObjectStore):
    """Objects under ``prefix`` in one GCS bucket."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        project: str | None = None,
        credentials: Credentials | None = None,
        retry_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        client: storage.Client | None = None,
    ) -> None:
        """``endpoint`` (e.g. ``http://127.0.0.1:4443``) targets an emulator without
        touching ``STORAGE_EMULATOR_HOST``; ``client`` overrides all client settings."""
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.bucket_name = bucket
        self.prefix = prefix.lstrip("/")
        self.description = f"gs://{bucket}/{self.prefix}"
        self._timeout = (connect_timeout, read_timeout)
        self._retry: Retry = DEFAULT_RETRY.with_timeout(retry_timeout)
        self._client = client or self._make_client(endpoint, project, credentials)
        self._bucket = self._client.bucket(bucket)

    @staticmethod
    def _make_client(
        endpoint: str | None, project: str | None, credentials: Credentials | None
    ) -> storage.Client:
        if endpoint is not None:
            return storage.Client(
                project=project or EMULATOR_PROJECT,
                credentials=credentials or AnonymousCredentials(),
                client_options={"api_endpoint": endpoint.rstrip("/")},
                use_auth_w_custom_endpoint=credentials is not None,
            )
        if os.environ.get(EMULATOR_ENV):
            # The library reads the variable itself; it only needs a project and no ADC.
            return storage.Client(
                project=project or EMULATOR_PROJECT,
                credentials=credentials or AnonymousCredentials(),
            )
        return storage.Client(project=project, credentials=credentials)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> GCSStore:
        """Open ``gs://bucket[/prefix]``; keyword arguments go to the constructor."""
        bucket, prefix = parse_gs_url(url)
        return cls(bucket, prefix, **kwargs)

    @property
    def client(self) -> storage.Client:
        """The underlying client (for tests and administrative tasks)."""
        return self._client

    def _blob(self, key: str) -> storage.Blob:
        return self._bucket.blob(self.prefix + key)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` and translate what the library's own retries let through."""
        try:
            return fn()
        except gexc.RetryError as error:
            raise StoreUnavailable(f"GCS {what}: gave up retrying: {error.cause}") from error
        except _FAILURES as error:
            if _is_transient(error):
                raise StoreUnavailable(f"GCS {what}: {error}") from error
            raise StoreError(f"GCS {what}: {error}") from error

    def get(self, key: str) -> Blob | None:
        found = self._download(key, None)
        return None if found is UNCHANGED else found

    def get_if_changed(self, key: str, token: str) -> Blob | Unchanged | None:
        found = self._download(key, int(token))
        # An emulator may ignore the precondition and send the object anyway.
        if isinstance(found, Blob) and found.token == token:
            return UNCHANGED
        return found

    def _download(self, key: str, not_generation: int | None) -> Blob | Unchanged | None:
        """The object, or UNCHANGED when it still has generation ``not_generation``."""
        blob = self._blob(key)
        try:
            # The download also fills in blob.generation from the response headers, so the
            # token belongs to exactly these bytes.
            data = self._call(
                f"get {key}",
                lambda: blob.download_as_bytes(
                    retry=self._retry,
                    timeout=self._timeout,
                    if_generation_not_match=not_generation,
                ),
            )
        except StoreError as error:
            if isinstance(error.__cause__, gexc.NotFound):
                return None
            if isinstance(error.__cause__, gexc.NotModified):
                return UNCHANGED
            raise
        if blob.generation is None:
            raise StoreError(f"GCS get {key}: response without generation")
        return Blob(data, str(blob.generation))

    def get_range(self, key: str, start: int, end: int | None = None) -> bytes | None:
        if start < 0 or (end is not None and end < 0):
            raise ValueError("negative offsets are not supported")
        if end is not None and end <= start:
            return b"" if self.exists(key) else None  # HTTP cannot ask for zero bytes
        blob = self._blob(key)
        # A whole-object read sends no Range header (an empty object would answer 416).
        first = None if start == 0 and end is None else start
        last = None if end is None else end - 1  # GCS ranges are inclusive
        try:
            return self._call(
                f"get {key}",
                lambda: blob.download_as_bytes(
                    start=first, end=last, retry=self._retry, timeout=self._timeout
                ),
            )
        except StoreError as error:
            if isinstance(error.__cause__, gexc.NotFound):
                return None
            if isinstance(error.__cause__, gexc.RequestRangeNotSatisfiable):
                return b""  # the object exists; the range starts at or past its end
            raise

    def exists(self, key: str) -> bool:
        blob = self._blob(key)
        return self._call(
            f"exists {key}", lambda: blob.exists(retry=self._retry, timeout=self._timeout)
        )

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False
    ) -> str:
        validate_key(key)
        if if_absent and if_match is not None:
            raise ValueError("if_absent and if_match exclude each other")
        generation: int | None = None
        if if_absent:
            generation = 0
        elif if_match is not None:
            try:
                generation = int(if_match)
            except ValueError:
                raise PreconditionFailed(f"{key}: {if_match!r} is not a generation") from None
            if generation <= 0:
                raise PreconditionFailed(f"{key}: {if_match!r} is not a generation")
        blob = self._blob(key)
        try:
            self._call(
                f"put {key}",
                lambda: blob.upload_from_string(
                    bytes(data),
                    content_type="application/octet-stream",
                    if_generation_match=generation,
                    retry=self._retry,
                    timeout=self._timeout,
                ),
            )
        except StoreError as error:
            if isinstance(error.__cause__, gexc.PreconditionFailed):
                raise PreconditionFailed(f"{key} changed since it was read") from error
            raise
        if blob.generation is None:
            raise StoreError(f"GCS put {key}: response without generation")
        return str(blob.generation)

    def copy(self, source: str, target: str) -> bool:
        validate_key(target)
        try:
            self._call(
                f"copy {source}",
                lambda: self._bucket.copy_blob(
                    self._blob(source),
                    self._bucket,
                    self.prefix + target,
                    retry=self._retry,
                    timeout=self._timeout,
                ),
            )
        except StoreError as error:
            if isinstance(error.__cause__, gexc.NotFound):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        blob = self._blob(key)
        try:
            self._call(
                f"delete {key}", lambda: blob.delete(retry=self._retry, timeout=self._timeout)
            )
        except StoreError as error:
            if not isinstance(error.__cause__, gexc.NotFound):
                raise

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        full_after = self.prefix + start_after if start_after else None
        blobs = self._call(
            f"list {prefix}",
            lambda: self._client.list_blobs(
                self._bucket,
                prefix=self.prefix + prefix,
                # start_offset is inclusive; the key itself is skipped below.
                start_offset=full_after,
                fields="items(name,size),nextPageToken",
                retry=self._retry,
                timeout=self._timeout,
            ),
        )
        strip = len(self.prefix)
        pages = iter(blobs)  # pages are fetched lazily, each fetch can fail
        while True:
            item = self._call(f"list {prefix}", lambda: next(pages, None))
            if item is None:
                return
            if item.name == full_after:
                continue
            yield ObjectInfo(item.name[strip:], int(item.size or 0))

    def close(self) -> None:
        self._client.close()

    def tensorstore_kvstore(self, path: str) -> dict[str, Any]:
        """A tensorstore ``gcs`` kvstore spec for ``path`` under this store's prefix.

        The spec has no endpoint member: to reach an emulator, tensorstore needs
        ``TENSORSTORE_GCS_HTTP_URL`` (and ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` to skip its
        credential lookup) in the environment of the process that opens it.
        """
        bound_stalled_requests()
        return {"driver": "gcs", "bucket": self.bucket_name, "path": self.prefix + path}

    def tensorstore_context(self) -> Any:
        """This store's tensorstore context (:func:`bounded_context`), made on first use:
        one per store, as array handles are cached by context."""
        context = getattr(self, "_ts_context", None)
        if context is None:
            context = self._ts_context = bounded_context("gcs_request_retries")
        return context
