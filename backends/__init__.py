"""Storage backends: object stores addressed by URL, unaware of what they hold."""

from __future__ import annotations

from backends.base import (
    Blob,
    ObjectInfo,
    ObjectStore,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
)


def open_store(url: str) -> ObjectStore:
    """Open a store from a URL: ``memory://``, ``file:///path`` or a plain folder path."""
    if url.startswith("memory://"):
        from backends.memory import MemoryStore

        return MemoryStore()
    if url.startswith("s3://"):
        from backends.s3 import S3Store

        return S3Store.from_url(url)
    if url.startswith("gs://"):
        from backends.gcs import GCSStore

        return GCSStore.from_url(url)
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"unsupported store URL {url!r}: use a folder, s3://, gs:// or memory://")
    from backends.local import LocalStore

    return LocalStore(url.removeprefix("file://"))


__all__ = [
    "Blob",
    "ObjectInfo",
    "ObjectStore",
    "PreconditionFailed",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]
