"""The on-store format version (docs/format.md), kept in the store as ``meta/format``.

A store written by a newer, unknown format is refused at start-up: reading it with older
code could misread or damage it. An empty store is stamped with the current version, and
a store of an older, readable version is restamped (this code writes objects its
predecessors would misread, so they must refuse the store from then on).
"""

from __future__ import annotations

from app.storage import keys
from backends import ObjectStore, PreconditionFailed, StoreError

#: The format this code reads and writes; docs/format.md documents it.
FORMAT_VERSION = 3
#: Formats this code can still read (1: before transactions, 2: before labelmap's body
#: renames; their data is compatible).
READABLE = frozenset({1, 2, 3})


class UnknownFormat(StoreError):
    """The store holds a format this code does not know."""


def check_format(store: ObjectStore, writable: bool) -> int:
    """The store's format version, stamping the current one on a store without one."""
    blob = store.get(keys.FORMAT)
    if blob is None:
        if not writable:
            return FORMAT_VERSION
        try:
            store.put(keys.FORMAT, f"{FORMAT_VERSION}\n".encode(), if_absent=True)
            return FORMAT_VERSION
        except PreconditionFailed:
            blob = store.get(keys.FORMAT)
            if blob is None:
                raise
    try:
        version = int(blob.data.split()[0])
    except (ValueError, IndexError):
        raise UnknownFormat(f"{keys.FORMAT} holds {blob.data[:40]!r}, not a version") from None
    if version not in READABLE:
        raise UnknownFormat(
            f"store format {version} is newer than this server's ({FORMAT_VERSION}): "
            "upgrade dvid-cloud"
        )
    if version < FORMAT_VERSION and writable:
        try:
            store.put(keys.FORMAT, f"{FORMAT_VERSION}\n".encode(), if_match=blob.token)
        except PreconditionFailed:
            return check_format(store, writable)  # a rival restamped it first
        return FORMAT_VERSION
    return version
