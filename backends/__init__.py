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


def open_store(url: str, *, endpoint: str | None = None, region: str | None = None) -> ObjectStore:
    """Open a store from a URL: ``s3://bucket/prefix``, ``gs://bucket/prefix``,
    ``memory://``, ``file:///path`` or a plain folder path. ``endpoint`` points S3 or GCS
    at a compatible service (MinIO, an emulator); ``region`` is the S3 region."""
    if url.startswith("memory://"):
        from backends.memory import MemoryStore

        return MemoryStore()
    if url.startswith("s3://"):
        from backends.s3 import S3Store

        return S3Store.from_url(url, endpoint_url=endpoint, region=region)
    if url.startswith("gs://"):
        from backends.gcs import GCSStore

        return GCSStore.from_url(url, endpoint=endpoint)
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
