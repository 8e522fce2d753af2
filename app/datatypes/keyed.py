"""The shared base of datatypes whose data is records by key (copy-on-write per node)."""

from __future__ import annotations

from app.context import InstanceContext
from app.dag import Node
from app.datatypes.base import DataType
from app.storage.keyed import KeyView, VersionedKeys, decode_key
from app.repo import Instance, Repo
from app.services import Services


class KeyedDataType(DataType):
    """A datatype storing its data through :class:`VersionedKeys`."""

    def keys(self, services: Services, instance: Instance) -> VersionedKeys:
        return VersionedKeys(
            services.store(instance.store),
            f"data/{instance.data_uuid}",
            services.index_cache,
            services.value_cache,
        )

    def view(self, ctx: InstanceContext) -> KeyView:
        """What a read at the request's node sees."""
        return self.keys(ctx.services, ctx.instance).at(ctx.repo.dag, ctx.version, ctx.mutable)

    def seal(self, services: Services, instance: Instance, node_uuid: str) -> None:
        self.keys(services, instance).seal(node_uuid)

    def conflicts(
        self, services: Services, repo: Repo, instance: Instance, parents: list[Node]
    ) -> dict[str, list[str]]:
        keys = self.keys(services, instance)
        views = [keys.at(repo.dag, parent, mutable=False) for parent in parents]
        candidates = set().union(*(view.candidate_keys() for view in views))
        doomed: dict[str, list[str]] = {}
        for hexkey in sorted(candidates):
            first = None
            for parent, view in zip(parents, views, strict=True):
                version = view.visible_version(hexkey)
                if version is None:
                    continue
                if first is None:
                    first = version
                elif version != first:
                    doomed.setdefault(parent.uuid, []).append(decode_key(hexkey))
        return doomed

    def tombstone(self, ctx: InstanceContext, keys: list[str]) -> None:
        store = self.keys(ctx.services, ctx.instance)
        for key in keys:
            store.delete(ctx.version.uuid, key)
