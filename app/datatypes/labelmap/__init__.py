"""labelmap: 64-bit supervoxel segmentation with a versioned mapping to bodies, a label
index per body, and lower scales up to ``MaxDownresLevel``.

Voxels (always supervoxel ids) live in the shared versioned chunk arrays, one per scale;
the mapping, label indices and counters are in :mod:`.state`; writes go through
:mod:`.ingest`, which keeps indices and lower scales current at the version written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi import APIRouter

from app.cache import LRUCache
from app.context import InstanceContext
from app.datatypes import register
from app.datatypes.base import parse_bool
from app.datatypes.labelmap.state import LabelCounter, LabelIndices, Mapping
from app.datatypes.volume import VolumeType
from app.errors import BadRequest
from app.storage.keyed import KeyView, VersionedKeys
from app.repo import Instance
from app.services import Services

HELP_FILE = Path(__file__).parent / "help.txt"

#: Parsed mapping partitions of locked nodes, shared by every labelmap instance.
_PARTITION_CACHE: LRUCache = LRUCache(256 << 20, weigh=lambda kv: kv[0].nbytes * 2)


class LabelmapType(VolumeType):
    name = "labelmap"
    version = "0.1"
    help_text = HELP_FILE.read_text() if HELP_FILE.exists() else "labelmap"
    default_compression = "gzip"
    default_block_size = "64,64,64"
    interpolable = False
    dtype = np.dtype("<u8")
    values = [{"DataType": "uint64", "Label": "labelmap"}]  # noqa: RUF012 - DVID's JSON

    def own_routes(self) -> APIRouter:
        from app.datatypes.labelmap.routes import router

        return router

    def parse_settings(self, config: dict[str, str]) -> dict:
        settings = self.parse_volume_settings(config)
        if any(b % 16 for b in settings["BlockSize"]):
            raise BadRequest("labelmap BlockSize must be multiples of 16 in every dimension")
        settings["IndexedLabels"] = parse_bool(config.get("indexedlabels", "true"), "IndexedLabels")
        settings["CountLabels"] = parse_bool(config.get("countlabels", "true"), "CountLabels")
        return settings

    # --- state ---------------------------------------------------------------------------

    def _keys(self, services: Services, instance: Instance, name: str) -> VersionedKeys:
        return VersionedKeys(
            services.store(instance.store),
            f"data/{instance.data_uuid}/{name}",
            services.index_cache,
            services.value_cache,
        )

    def indices(self, services: Services, instance: Instance) -> LabelIndices:
        return LabelIndices(self._keys(services, instance, "index"))

    def index_view(self, ctx: InstanceContext) -> KeyView:
        return self._keys(ctx.services, ctx.instance, "index").at(
            ctx.repo.dag, ctx.version, ctx.mutable
        )

    def counters_view(self, ctx: InstanceContext) -> KeyView:
        return self._keys(ctx.services, ctx.instance, "counters").at(
            ctx.repo.dag, ctx.version, ctx.mutable
        )

    def counters(self, services: Services, instance: Instance) -> VersionedKeys:
        return self._keys(services, instance, "counters")

    def repo_counter(self, services: Services, instance: Instance) -> LabelCounter:
        return LabelCounter(
            services.store(instance.store), f"data/{instance.data_uuid}/maxrepolabel"
        )

    def mapping(self, services: Services, instance: Instance) -> Mapping:
        return Mapping(
            services.store(instance.store),
            f"data/{instance.data_uuid}/mapping",
            services.bitmap_cache,
            _PARTITION_CACHE,
        )

    def seal(self, services: Services, instance: Instance, node_uuid: str) -> None:
        super().seal(services, instance, node_uuid)
        for name in ("index", "counters"):
            self._keys(services, instance, name).seal(node_uuid)

    def max_label(self, ctx: InstanceContext) -> int | None:
        """The largest label written at this version or its ancestors."""
        values = self.counters_view(ctx).values("maxlabel")
        return max((int(v) for v in values), default=None)

    def extended_json(self, ctx: InstanceContext) -> dict:
        extended = super().extended_json(ctx)
        max_label = self.max_label(ctx)
        repo_max = self.repo_counter(ctx.services, ctx.instance).current()
        extended.update(
            {
                "MaxLabel": {str(ctx.version.version_id): max_label} if max_label else {},
                "MaxRepoLabel": repo_max,
                "NextLabel": repo_max + 1,
                "IndexedLabels": ctx.instance.settings.get("IndexedLabels", True),
                "CountLabels": ctx.instance.settings.get("CountLabels", True),
            }
        )
        return extended


LABELMAP = register(LabelmapType())
