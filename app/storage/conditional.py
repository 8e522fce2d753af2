"""The one conditional-update helper: read, edit, write only if nobody wrote in between.

Every object that more than one request (or replica) may change concurrently goes through
:func:`update`: the repo catalog, the VersionID counter, chunk ownership bitmaps, label
counters, transaction locks. It

1. reads the object and its token,
2. asks ``edit`` for the new bytes (``None``: nothing to change),
3. writes them with ``if_match`` (or ``if_absent`` for a new object),
4. settles a lost response by reading back: a 503 or a lost race whose stored bytes equal
   ours means our write landed (payloads that must not be confused with a rival's carry a
   nonce),
5. retries on a lost race with jittered exponential backoff, and past the budget raises
   :class:`Contention`, which answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from app.errors import Contention
from backends import ObjectStore, PreconditionFailed, StoreUnavailable

log = logging.getLogger(__name__)

#: Attempts before giving up with :class:`Contention`.
MAX_ATTEMPTS = 64
#: Backoff grows from BASE_DELAY to MAX_DELAY seconds (full jitter).
BASE_DELAY = 0.002
MAX_DELAY = 0.25
#: Read-backs allowed to settle a write whose response was lost.
VERIFY_ATTEMPTS = 4

Edit = Callable[[bytes | None], bytes | None]


def backoff(attempt: int) -> float:
    """Full-jitter exponential backoff for the ``attempt``-th retry (0-based)."""
    return random.uniform(0, min(MAX_DELAY, BASE_DELAY * (2**attempt)))


def put_settled(store: ObjectStore, key: str, data: bytes, token: str | None) -> str:
    """A conditional put (``if_match=token``, or ``if_absent`` without a token) whose lost
    response is settled by reading the object back; returns the new token. Raises
    :class:`PreconditionFailed` only when the object holds something else."""
    try:
        return store.put(key, data, if_match=token, if_absent=token is None)
    except (StoreUnavailable, PreconditionFailed):
        blob = None
        for attempt in range(VERIFY_ATTEMPTS):
            try:
                blob = store.get(key)
                break
            except StoreUnavailable:
                if attempt == VERIFY_ATTEMPTS - 1:
                    raise
        if blob is None or blob.data != data:
            raise
        return blob.token


def update(store: ObjectStore, key: str, edit: Edit, *, what: str = "") -> bytes | None:
    """Apply ``edit`` to the object's current bytes (None if absent) and store the result
    conditionally; returns the bytes now stored (the current ones when ``edit`` returns
    None). ``edit`` may be called several times and may raise to abort."""
    for attempt in range(MAX_ATTEMPTS):
        blob = store.get(key)
        current = blob.data if blob is not None else None
        new = edit(current)
        if new is None:
            return current
        try:
            put_settled(store, key, new, blob.token if blob is not None else None)
            return new
        except PreconditionFailed:
            log.debug("conditional update lost a race", extra={"key": key, "attempt": attempt})
            time.sleep(backoff(attempt))
    raise Contention(f"{what or key} is too busy: gave up after {MAX_ATTEMPTS} attempts")
