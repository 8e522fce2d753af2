"""A counter shared by every replica, only ever raised: the repo-wide largest label and
the repo-wide mutation id.

The object holds the value and a nonce, and is raised through
:func:`app.storage.conditional.update`: two rivals reserving the same range must not
mistake each other's write for their own, and a reserved range is never handed out twice,
on any branch or replica.
"""

from __future__ import annotations

import uuid

from app.errors import BadRequest
from app.storage import conditional
from backends import ObjectStore


class Counter:
    """One conditionally raised uint64 counter object."""

    def __init__(self, store: ObjectStore, path: str, what: str) -> None:
        self.store = store
        self.path = path
        self.what = what

    @staticmethod
    def _value(data: bytes | None) -> int:
        return int(data.split()[0]) if data else 0

    def current(self) -> int:
        blob = self.store.get(self.path)
        return self._value(blob.data if blob is not None else None)

    def advance(
        self, at_least: int = 0, reserve: int = 0, ceiling: int | None = None
    ) -> tuple[int, int]:
        """Raise the counter to ``max(current, at_least) + reserve``; returns the
        (previous, new) values. Reserved ids are ``previous+1 .. new``. A reservation that
        would pass ``ceiling`` is refused (400), checked on the value it replaces."""
        seen = (0, 0)

        def edit(current: bytes | None) -> bytes | None:
            nonlocal seen
            previous = self._value(current)
            new = max(previous, at_least) + reserve
            if ceiling is not None and reserve and new > ceiling:
                raise BadRequest(
                    f"cannot reserve {reserve} from {self.what}: it is at {previous} "
                    f"and stops at {ceiling}"
                )
            seen = (previous, new)
            return None if new == previous else f"{new} {uuid.uuid4().hex}".encode()

        conditional.update(self.store, self.path, edit, what=self.what)
        return seen

    def next(self) -> int:
        """Reserve and return one new value."""
        return self.advance(reserve=1)[1]
