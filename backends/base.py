"""The object-store interface every backend implements.

Everything dvid-cloud keeps lives in one flat key space of immutable-looking objects, the
least common denominator of S3, GCS and a local folder. Keys are ``/``-separated strings
made of printable ASCII; callers (never the backend) decide what they mean.

Metadata that several stateless servers update concurrently is kept safe by *conditional
writes*: every read returns an opaque ``token`` (an S3 ETag, a GCS generation, a local
change stamp) and :meth:`ObjectStore.put` can demand that the object still carries that
token (``if_match``) or does not exist yet (``if_absent``). A lost race raises
:class:`PreconditionFailed` and the caller retries on fresh data.
"""

from __future__ import annotations

import abc
import enum
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class StoreError(Exception):
    """A store operation failed for a reason the caller cannot fix (I/O, network)."""


class StoreUnavailable(StoreError):
    """The store kept failing (5xx, throttling, timeouts) after retries: answer 503."""


class PreconditionFailed(StoreError):
    """A conditional put lost: the object changed (or appeared) since it was read."""


@dataclass(frozen=True, slots=True)
class Blob:
    """An object's bytes with the token that a conditional put can later demand."""

    data: bytes
    token: str


class Unchanged(enum.Enum):
    """What :meth:`ObjectStore.get_if_changed` answers for an object that still carries
    the token the caller holds."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listing entry."""

    key: str
    size: int


class ObjectStore(abc.ABC):
    """Get, put, conditional put, delete, list by prefix and ranged get."""

    #: Short human description, shown as ``KVStore`` in instance JSON and in server info.
    description: str = "object store"
    #: Whether independent calls are worth overlapping on threads
    #: (:func:`app.storage.parallel.each`): each is a network round trip, mostly waiting.
    #: A store whose call is a few microseconds of the caller's CPU (a local folder, memory)
    #: says no: overlapped, such calls only take turns for the GIL. A labelmap POST's 370
    #: mapping-partition loads from a local folder took 20-30 ms one after another, 75-98
    #: ms on the pool's threads.
    overlap_calls: bool = True

    @abc.abstractmethod
    def get(self, key: str) -> Blob | None:
        """The object and its token, or None if it does not exist."""

    def get_if_changed(self, key: str, token: str) -> Blob | Unchanged | None:
        """The object, unless it still carries ``token`` (then :data:`UNCHANGED`); None
        if it does not exist. Stores override this with a conditional read (S3
        ``If-None-Match``, a GCS generation precondition, a local stat), so that checking
        a cached object for freshness transfers nothing when it has not changed."""
        blob = self.get(key)
        if blob is not None and blob.token == token:
            return UNCHANGED
        return blob

    @abc.abstractmethod
    def get_range(self, key: str, start: int, end: int | None = None) -> bytes | None:
        """Bytes ``[start, end)`` of the object (to its end if ``end`` is None), or None."""

    @abc.abstractmethod
    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False
    ) -> str:
        """Store ``data`` under ``key`` and return its new token.

        ``if_absent`` fails unless the object does not exist; ``if_match`` fails unless the
        object exists with that token. Either failure raises :class:`PreconditionFailed`
        and leaves the object as it was.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""

    @abc.abstractmethod
    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in ascending key order.

        ``start_after`` skips keys up to and including it, as S3's StartAfter does.
        """

    def check(self, writable: bool = True) -> None:
        """Fail fast (StoreError) if the store cannot be listed, or written when
        ``writable``: a missing bucket, bad credentials or an unreachable endpoint."""
        next(iter(self.list("meta/")), None)
        if writable:
            probe = f"meta/probe-{uuid.uuid4().hex}"  # app.storage.keys.PROBE
            self.put(probe, b"")
            self.delete(probe)

    def copy(self, source: str, target: str) -> bool:
        """Copy ``source`` over ``target`` (whole, atomically, as a put is); False if
        ``source`` does not exist. Stores with a server-side copy override this."""
        blob = self.get(source)
        if blob is None:
            return False
        self.put(target, blob.data)
        return True

    def exists(self, key: str) -> bool:
        """Whether the object exists (a cheap HEAD where the store has one)."""
        return self.get_range(key, 0, 0) is not None

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; returns how many were removed."""
        keys = [info.key for info in self.list(prefix)]
        for key in keys:
            self.delete(key)
        return len(keys)

    def size_of_prefix(self, prefix: str) -> int:
        """Total bytes stored under ``prefix``."""
        return sum(info.size for info in self.list(prefix))

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections or handles."""

    def tensorstore_kvstore(self, path: str) -> dict[str, Any]:
        """A tensorstore kvstore spec addressing ``path`` (a key prefix) in this store.

        Lets array data be read and written by tensorstore's own I/O stack while small
        metadata goes through this interface. Stores tensorstore cannot reach raise.
        """
        raise NotImplementedError(f"{type(self).__name__} has no tensorstore equivalent")

    def tensorstore_context(self) -> Any:
        """A tensorstore ``Context`` the kvstore specs must be opened in, or None for any."""
        return None

    def tensorstore_shares_keys(self) -> bool:
        """Capability: whether objects tensorstore writes through :meth:`tensorstore_kvstore`
        are the objects :meth:`get`, :meth:`list` and :meth:`copy` see (False for a store
        whose tensorstore space is separate, such as the in-memory one)."""
        return True


@runtime_checkable
class Renames(Protocol):
    """Capability of a store that can rename an object in place (a local folder): the
    object at ``source`` becomes the object at ``target`` without its bytes moving.

    Renames are system calls of microseconds, so callers SHOULD issue them one after
    another: overlapped on threads they queue for the directories' locks and the
    interpreter (65 staged chunks published by link-and-rename: 1.7 ms in one thread,
    40 ms on 16 at load 10). Stores without it copy, overlapped (network round trips).
    A wrapper that forwards unknown attributes to its store (metrics) keeps it."""

    def rename(self, source: str, target: str, *, keep: str | None = None) -> bool:
        """Move ``source`` over ``target``, whole and atomically as a put is (a reader
        sees the old or the new object); ``source`` is gone afterwards. False if
        ``source`` does not exist. With ``keep``, the object ``target`` held is kept
        there (if any, and unless ``keep`` exists already), so that the move frees
        none of its space: removing ``keep`` later does."""
        ...


def validate_key(key: str) -> str:
    """Reject keys that are not portable across S3, GCS and a POSIX folder."""
    if not key or key.startswith("/") or key.endswith("/") or "//" in key:
        raise ValueError(f"bad object key {key!r}")
    if any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"bad object key {key!r}")
    if not key.isascii() or not key.isprintable():
        raise ValueError(f"object key {key!r} must be printable ASCII")
    return key
