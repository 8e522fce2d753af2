"""The shared base of datatypes whose data is records by key (copy-on-write per node)."""

from __future__ import annotations

from collections.abc import Iterator

from app.context import InstanceContext
from app.datatypes.base import DataType
from app.keyed import KeyView, VersionedKeys, decode_key
from app.repo import Instance
from app.services import Services


class KeyedDataType(DataType):
    """A datatype storing its data through :class:`VersionedKeys`."""

    def keys(self, services: Services, instance: Instance) -> VersionedKeys:
        return VersionedKeys(
            services.store(instance.store), f"data/{instance.data_uuid}", services.index_cache
        )

    def view(self, ctx: InstanceContext) -> KeyView:
        """What a read at the request's node sees."""
        return self.keys(ctx.services, ctx.instance).at(ctx.repo.dag, ctx.version, ctx.mutable)

    def seal(self, services: Services, instance: Instance, node_uuid: str) -> None:
        self.keys(services, instance).seal(node_uuid)

    def conflicting_keys(self, ctx: InstanceContext) -> Iterator[tuple[str, frozenset[int]]]:
        view = self.view(ctx)
        for hexkey in sorted(view.candidate_keys()):
            versions = view.conflicts(hexkey)
            if versions:
                yield decode_key(hexkey), frozenset(versions)

    def tombstone(self, ctx: InstanceContext, keys: list[str]) -> None:
        store = self.keys(ctx.services, ctx.instance)
        for key in keys:
            store.delete(ctx.version.uuid, key)
