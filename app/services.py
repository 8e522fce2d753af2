"""What one server process holds: its settings, its stores and its caches.

There is no other state: repos, versions and data all live in the stores, so any number
of processes built from the same settings serve the same data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pyroaring import BitMap64

from app.buffers import BodyBuffers
from app.cache import LRUCache
from app.catalog import Catalog
from app.immutable import ImmutableAnswers
from app.inflight import InflightWrites
from app.remotes import Remotes
from app.settings import Settings
from app.storage.format import check_format
from app.storage.keyed import NodeIndex
from app.volumes.arrays import ArrayHandles
from backends import ObjectStore, StoreError, open_store
from backends.remote import RemoteVolume


@dataclass
class Counters:
    """Request and byte counters reported by ``/api/load``."""

    requests: int = 0
    get_requests: int = 0
    put_requests: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    active: int = 0


@dataclass
class Services:
    settings: Settings
    stores: dict[str, ObjectStore]
    default_store: str
    catalog: Catalog
    index_cache: LRUCache[NodeIndex]
    value_cache: LRUCache[bytes]
    bitmap_cache: LRUCache[BitMap64]
    arrays: ArrayHandles
    inflight: InflightWrites
    remotes: Remotes
    answers: ImmutableAnswers
    buffers: BodyBuffers
    counters: Counters = field(default_factory=Counters)
    started: float = field(default_factory=time.time)

    @classmethod
    def from_settings(
        cls, settings: Settings, stores: dict[str, ObjectStore] | None = None
    ) -> Services:
        """Open every configured store (or use the given ones, as tests do)."""
        if stores is None:
            stores = {
                name: open_store(cfg.path, endpoint=cfg.endpoint, region=cfg.region)
                for name, cfg in settings.stores().items()
            }
        default = settings.default_store_name() if settings.store else next(iter(stores))
        return cls(
            settings=settings,
            stores=stores,
            default_store=default,
            catalog=Catalog(stores[default]),
            index_cache=LRUCache(settings.index_cache_entries),
            value_cache=LRUCache(settings.cache_bytes, weigh=len),
            bitmap_cache=LRUCache(settings.index_cache_entries),
            arrays=ArrayHandles(chunk_cache_bytes=settings.chunk_cache_bytes),
            inflight=InflightWrites(stores[default], max_age=settings.max_request_seconds),
            remotes=Remotes(settings.proxy_config(), settings.proxy_cache_bytes),
            answers=ImmutableAnswers(settings.response_cache_bytes),
            buffers=BodyBuffers(settings.body_buffer_bytes),
        )

    def check(self) -> None:
        """Raise StoreError naming the first store that cannot be used."""
        for name, store in self.stores.items():
            try:
                store.check(writable=not self.settings.read_only)
            except StoreError as e:
                raise StoreError(f"store {name!r} ({store.description}) is unusable: {e}") from e
        check_format(self.stores[self.default_store], writable=not self.settings.read_only)

    def store(self, name: str) -> ObjectStore:
        return self.stores[name]

    def remote(self, url: str) -> RemoteVolume:
        """The remote volume a proxy URL names, opened once per process."""
        return self.remotes.open(url)

    def close(self) -> None:
        self.remotes.close()
        for store in self.stores.values():
            store.close()
