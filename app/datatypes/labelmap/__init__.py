"""labelmap: 64-bit supervoxel segmentation with a versioned mapping to bodies, a label
index per body, and lower scales up to ``MaxDownresLevel``.

Voxels (always supervoxel ids) live in the shared versioned chunk arrays, one per scale;
the mapping, label indices and counters are in :mod:`.state` (keys in :mod:`.keys`);
writes go through :mod:`.ingest`, which keeps indices and lower scales current at the
version written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import numpy as np
from fastapi import APIRouter

from app.datatypes import register
from app.datatypes.base import parse_bool
from app.datatypes.labelmap import codecs, history, keys
from app.datatypes.labelmap.mutate import supervoxels_of as index_supervoxels
from app.datatypes.labelmap.state import MAX_UINT64, LabelIndices, Mapping, NextLabel
from app.diff import MergeSides, key_conflicts, key_diff, map_conflicts, map_diff
from app.errors import BadRequest, Conflict
from app.storage.counter import Counter
from app.storage.idmap import IdMap
from app.storage.keyed import VersionedKeys
from app.volumes.base import Layout, VolumeData

HELP_FILE = Path(__file__).parent / "help.txt"


@register
class Labelmap(VolumeData):
    typename = "labelmap"
    type_version = "0.1"
    help_text = HELP_FILE.read_text() if HELP_FILE.exists() else "labelmap"
    default_compression = "gzip"
    default_block_size = "64,64,64"
    interpolable = False
    dtype = np.dtype("<u8")
    values = [{"DataType": "uint64", "Label": "labelmap"}]  # noqa: RUF012 - DVID's JSON
    #: Batch reads whose request body names what to read: also answered to POST (for
    #: clients that cannot send a GET body), and so allowed at locked nodes.
    read_posts = frozenset({"labels", "sizes", "mapping"})
    admin_posts = frozenset({"maxlabel", "set-nextlabel"})

    @classmethod
    def own_routes(cls) -> APIRouter:
        from app.datatypes.labelmap.edit_routes import router as edits
        from app.datatypes.labelmap.routes import router

        combined = APIRouter()  # the routes, not included routers: each is analysed once
        combined.routes.extend(router.routes)
        combined.routes.extend(edits.routes)
        return combined

    @classmethod
    def parse_settings(cls, config: dict[str, str]) -> dict:
        settings = cls.parse_volume_settings(config)
        if any(b % 16 for b in settings["BlockSize"]):
            raise BadRequest("labelmap BlockSize must be multiples of 16 in every dimension")
        settings["IndexedLabels"] = parse_bool(config.get("indexedlabels", "true"), "IndexedLabels")
        settings["CountLabels"] = parse_bool(config.get("countlabels", "true"), "CountLabels")
        return settings

    # --- state ---------------------------------------------------------------------------

    @property
    def indexed(self) -> bool:
        return bool(self.settings.get("IndexedLabels", True))

    def require_indexed(self) -> None:
        """400 unless the instance keeps label indices (what every body query reads)."""
        if not self.indexed:
            raise BadRequest(f"instance {self.name!r} does not index labels")

    def _keyed(self, base: str) -> VersionedKeys:
        return VersionedKeys(self.store, base, self.services.index_cache, self.services.value_cache)

    def indices(self) -> LabelIndices:
        """The per-body label indices at the bound version."""
        return LabelIndices(self._keyed(keys.index(self.root)), self.at)

    def _counters(self) -> VersionedKeys:
        return self._keyed(keys.counters(self.root))

    def repo_counter(self) -> Counter:
        # Shared by every version: raised by conditional update, never in a transaction.
        return Counter(self.base_store, keys.max_repo_label(self.root), "the label counter")

    def next_label(self) -> NextLabel:
        """The admin-set start for new labels (shared by every version, like the counter)."""
        return NextLabel(self.base_store, keys.next_label(self.root))

    def new_labels(self, count: int, ceiling: int = MAX_UINT64 - 1) -> tuple[int, int]:
        """Hand out ``count`` new labels (first, last), as DVID's ``newLabels``: after the
        admin-set start if there is one, else after the repo-wide largest label (never
        past ``ceiling``); either way this version's max label becomes the last one."""
        taken = self.next_label().take(count)
        if taken is None:
            previous, last = self.repo_counter().advance(reserve=count, ceiling=ceiling)
            taken = (previous + 1, last)
        self.raise_max_label(taken[1])
        return taken

    def next_new_label(self) -> int:
        """The label the next allocation returns (``GET nextlabel``)."""
        last = self.next_label().current()[0] or self.repo_counter().current()
        if last >= MAX_UINT64 - 1:
            raise BadRequest(f"the label counter is at {last}: no new uint64 label follows it")
        return last + 1

    def _id_map(self, base: str) -> IdMap:
        cache = self.services.bitmap_cache
        return IdMap(self.store, base, cache, self.at)

    @property
    def mapping(self) -> Mapping:
        """The supervoxel -> body mapping at the bound version."""
        return Mapping(
            self._id_map(keys.mapping(self.root)),
            self._id_map(keys.renames(self.root)),
            self._keyed(keys.aliases(self.root)),
            self.at,
        )

    def seal(self) -> None:
        super().seal()
        for keyed in (
            self._keyed(keys.index(self.root)),
            self._keyed(keys.aliases(self.root)),
            self._counters(),
        ):
            keyed.seal(self.node.uuid)

    # --- diffs and merge conflicts (app.diff) ----------------------------------------------

    def diff(self, other: Self) -> dict[str, Any] | None:
        """Blocks, the labels whose label index changed (voxels or supervoxels moved in
        or out: writes, merges, cleaves, splits), and the mutations logged between."""
        found = super().diff(other) or {}
        if self.proxy is not None:
            return found or None
        index = self._keyed(keys.index(self.root))
        changes = key_diff(index, self.at.view(index), other.at.view(index))
        labels = {int(k, 16) for k in (*changes.added, *changes.changed, *changes.deleted)}
        labels.update(self._remapped(other))
        if labels:
            found["labels"] = sorted(labels)
        mutations = history.between(self, other)
        if mutations:
            found["mutations"] = mutations
        return found or None

    def _remapped(self, other: Labelmap) -> set[int]:
        """Bodies that gained or lost supervoxels through the mapping alone (``POST
        mappings``; edits also rewrite label indices): both bodies of a reassigned
        supervoxel, and both targets of a changed fold."""
        was, now = self.mapping, other.mapping
        svs, *assigned = map_diff(was.supervoxels, now.supervoxels)
        bodies, *targets = map_diff(was.renames, now.renames)
        moved = np.union1d(svs, bodies)
        if not moved.size:
            return set()
        try:
            found = {*was.lookup(moved).tolist(), *now.lookup(moved).tolist()}
        except Conflict:  # a merged version whose parents remapped the same partition
            found = {*bodies.tolist(), *np.concatenate([*assigned, *targets]).tolist()}
        return found - {0}

    def merge_conflicts(self, merge: MergeSides) -> dict[str, Any] | None:
        """Blocks, and labels changed on two or more sides to different values: label
        indices (bodies), supervoxel assignments and body folds of the mapping."""
        found = super().merge_conflicts(merge) or {}
        if self.proxy is None:
            index = self._keyed(keys.index(self.root))
            labels = {int(k, 16) for k in key_conflicts(index, self.dag, merge)}
            parents = [self.at_node(p).mapping for p in merge.parents]
            bases = [self.at_node(b).mapping for b in merge.bases]
            svs = map_conflicts(
                [m.supervoxels for m in parents], [m.supervoxels for m in bases], merge
            )
            folds = map_conflicts([m.renames for m in parents], [m.renames for m in bases], merge)
            labels.update(svs.tolist(), folds.tolist())
            if labels:
                found["labels"] = sorted(labels)
        return found or None

    def max_label(self) -> int | None:
        """The largest label written at this version or its ancestors."""
        values = self.at.view(self._counters()).values(keys.MAX_LABEL)
        return max((int(v) for v in values), default=None)

    def raise_max_label(self, label: int) -> None:
        """Record that ``label`` was written at the bound version (and in the repo)."""
        if label > (self.max_label() or 0):
            self._counters().write(self.version.uuid, keys.MAX_LABEL, str(label).encode())
        self.repo_counter().advance(at_least=label)

    def extended_json(self) -> dict:
        extended = super().extended_json()
        max_label = self.max_label()
        next_label, ceiling = self.next_label().current()
        extended.update(
            {
                "MaxLabel": {str(self.version.version_id): max_label} if max_label else {},
                "MaxRepoLabel": self.repo_counter().current(),
                # DVID's field: the admin-set start as advanced so far, 0 when unset.
                "NextLabel": next_label,
                "IndexedLabels": self.indexed,
                "CountLabels": self.settings.get("CountLabels", True),
            }
        )
        if ceiling:
            extended["NextLabelCeiling"] = ceiling
        return extended

    # --- reading labels ------------------------------------------------------------------

    def bodies(self, labels: np.ndarray) -> np.ndarray:
        """Supervoxels -> bodies. Labels come in long runs along x, so the distinct values
        are found among run heads and the result is rebuilt run by run (several times
        cheaper than ``np.unique(..., return_inverse=True)`` over every voxel). A proxy
        has no mapping: its bodies are the remote's labels."""
        flat = labels.ravel()
        if flat.size == 0 or self.proxy is not None:
            return labels
        starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
        heads = flat[starts]
        svs = np.unique(heads)
        bodies = self.mapping.lookup(svs)
        if np.array_equal(bodies, svs):
            return labels
        lengths = np.diff(np.append(starts, flat.size))
        return np.repeat(bodies[np.searchsorted(svs, heads)], lengths).reshape(labels.shape)

    def labels_at(
        self, points: np.ndarray, scale: int = 0, supervoxels: bool = False
    ) -> np.ndarray:
        """Labels at voxel points ``(n, 3)`` x,y,z, reading each block once."""
        volume = self.volume(scale)
        size = np.array(volume.grid.block_size, dtype=np.int64)
        blocks = volume.grid.blocks_of(points)
        block_keys, inverse = np.unique(codecs.encode_block_keys(blocks), return_inverse=True)
        unique = codecs.decode_block_keys(block_keys)
        found = dict(volume.read_blocks(unique))
        labels = np.zeros(len(points), dtype=np.uint64)
        inner = points - blocks * size
        order = np.argsort(inverse.ravel(), kind="stable")
        bounds = np.searchsorted(inverse.ravel()[order], np.arange(len(unique) + 1))
        for i, coord in enumerate(unique.tolist()):
            voxels = found.get(tuple(coord))
            if voxels is None:
                continue
            sel = order[bounds[i] : bounds[i + 1]]
            labels[sel] = voxels[inner[sel, 2], inner[sel, 1], inner[sel, 0]]
        if not supervoxels:
            labels = self.bodies_of(labels)
        return labels

    # --- as a label source for synced instances (capabilities.LabelSource) ---------------

    def label_block_size(self) -> tuple[int, int, int]:
        x, y, z = self.block_size
        return int(x), int(y), int(z)

    def supervoxels_at(self, points: np.ndarray) -> np.ndarray:
        return self.labels_at(np.asarray(points, dtype=np.int64).reshape(-1, 3), 0, True)

    def bodies_of(self, supervoxels: np.ndarray) -> np.ndarray:
        if self.proxy is not None:
            return np.asarray(supervoxels, dtype=np.uint64)
        bodies = self.mapping.lookup(np.asarray(supervoxels, dtype=np.uint64))
        bodies[supervoxels == 0] = 0
        return bodies

    # --- as a body's supervoxel list (capabilities.BodySupervoxels) ------------------------

    def supervoxels_of(self, body: int) -> np.ndarray:
        """From the body's label index at the bound version (``GET supervoxels`` serves
        the same), so merges and cleaves there show at once."""
        self.require_indexed()
        index = self.indices().get(body)
        found = sorted(index_supervoxels(index)) if index is not None else []
        return np.array(found, dtype=np.uint64)

    # --- as a precomputed volume ---------------------------------------------------------

    def precomputed_layout(self) -> Layout:
        return Layout("segmentation", "uint64", 1, "compressed_segmentation")

    def encode_precomputed(self, voxels: np.ndarray, encoding: str) -> bytes:
        """Body ids (supervoxels mapped at the version) as compressed_segmentation."""
        return codecs.encode_segmentation_chunk(self.bodies(voxels))

    def pyramid_source(self, level: int) -> tuple[VolumeData, int] | None:
        """Level k is this instance's own scale k, up to MaxDownresLevel."""
        return (self, level) if level <= self.max_level else None

    def pyramid_missing(self, level: int) -> str:
        return f"levels are s0..s{self.max_level}"
