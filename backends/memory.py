"""An in-memory object store: the reference semantics, used by unit tests."""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Iterator
from typing import Any

from backends.base import Blob, ObjectInfo, ObjectStore, PreconditionFailed, validate_key


class MemoryStore(ObjectStore):
    """A dict guarded by a lock; tokens come from a global counter so they never repeat."""

    description = "in-memory store"
    overlap_calls = False

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, str]] = {}
        self._sorted_keys: list[str] = []
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._ts_context: Any = None

    def get(self, key: str) -> Blob | None:
        with self._lock:
            entry = self._objects.get(key)
        return None if entry is None else Blob(entry[0], entry[1])

    def get_range(self, key: str, start: int, end: int | None = None) -> bytes | None:
        with self._lock:
            entry = self._objects.get(key)
        return None if entry is None else entry[0][start:end]

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False
    ) -> str:
        validate_key(key)
        with self._lock:
            current = self._objects.get(key)
            if if_absent and current is not None:
                raise PreconditionFailed(f"{key} already exists")
            if if_match is not None and (current is None or current[1] != if_match):
                raise PreconditionFailed(f"{key} changed since it was read")
            token = str(next(self._counter))
            if current is None:
                bisect.insort(self._sorted_keys, key)
            self._objects[key] = (bytes(data), token)
            return token

    def delete(self, key: str) -> None:
        with self._lock:
            if self._objects.pop(key, None) is not None:
                del self._sorted_keys[bisect.bisect_left(self._sorted_keys, key)]

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        with self._lock:
            lo = bisect.bisect_left(self._sorted_keys, prefix)
            if start_after is not None and start_after >= prefix:
                lo = bisect.bisect_right(self._sorted_keys, start_after)
            found = []
            for key in itertools.islice(self._sorted_keys, lo, None):
                if not key.startswith(prefix):
                    break
                found.append(ObjectInfo(key, len(self._objects[key][0])))
        yield from found

    def tensorstore_kvstore(self, path: str) -> dict[str, Any]:
        """A tensorstore ``memory`` kvstore spec for ``path``.

        Beware: tensorstore's memory kvstore is its own in-process map (shared by specs
        opened in one tensorstore context: :meth:`tensorstore_context`), not this store's
        dict, so objects written through tensorstore are invisible to :meth:`get` and
        :meth:`list` and vice versa. Good enough for tests of array code.
        """
        return {"driver": "memory", "path": path}

    def tensorstore_shares_keys(self) -> bool:
        return False

    def tensorstore_context(self) -> Any:
        """The one tensorstore context whose memory kvstore holds this store's arrays, so
        every server built on this store sees the same chunks."""
        if self._ts_context is None:
            import tensorstore as ts

            self._ts_context = ts.Context()
        return self._ts_context
