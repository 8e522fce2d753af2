"""labelmap's versioned label state besides voxels: the supervoxel -> body mapping, the
per-body label index, and label counters.

All of it is copy-on-write per version node, like the voxels:

* **Mapping**: two :class:`app.storage.idmap.IdMap` levels (4096 partitions each), so a
  fresh process answers its first query after reading a few small objects, whatever the
  mapping's size.
* **Label index**: one DVID ``LabelIndex`` protobuf per body, as a keyed record
  (:class:`VersionedKeys`): per block, voxel counts of each supervoxel.
* **Counters**: the largest label written per version (keyed record); the repo-wide
  largest label handed out is an :class:`app.storage.counter.Counter`, and an admin-set
  start for new labels a :class:`NextLabel`.

Every helper here is built for one version (:class:`VersionContext`).
"""

from __future__ import annotations

import uuid

import numpy as np
import orjson

from app.context import VersionContext
from app.datatypes.labelmap import keys
from app.errors import BadRequest
from app.proto import labelmap_pb2 as pb
from app.storage import conditional, parallel
from app.storage.idmap import IdMap
from app.storage.keyed import KeyView, VersionedKeys
from backends import ObjectStore

#: uint64's largest value, which DVID keeps as a range sentinel: never a new label.
MAX_UINT64 = 2**64 - 1


class Mapping:
    """The supervoxel -> body mapping of one instance as seen from one version.

    Two :class:`IdMap` levels: ``supervoxels`` maps a supervoxel to the body it was last
    assigned to (by POST mappings, cleave, a split, or a fold of its own body); ``renames``
    maps a body that merge or renumber folded into another to that one. An assigned
    supervoxel's body is ``renames[supervoxels[sv]]``; an id never assigned is its own
    body (so DVID's flat mapping is exactly the assigned supervoxels, resolved).

    Renames are kept flat (no value is itself renamed): folding body B into T also points
    every body folded into B before (B's *aliases*, a keyed record per body) at T. So a
    merge writes one rename per alias of the merged bodies, whatever their sizes and
    supervoxel counts, where rewriting every supervoxel's entry would cost a mapping
    partition per supervoxel.
    """

    def __init__(
        self, supervoxels: IdMap, renames: IdMap, aliases: VersionedKeys, at: VersionContext
    ) -> None:
        self.supervoxels = supervoxels
        self.renames = renames
        self.aliases = aliases
        self.at = at

    def lookup(self, svs: np.ndarray) -> np.ndarray:
        """Bodies of ``svs``; unmapped supervoxels map to themselves."""
        return self.lookup_explicit(svs)[0]

    def lookup_explicit(self, svs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bodies of ``svs``, and a mask of the ids that have an entry in DVID's flat
        mapping (exactly the assigned ones: an id never assigned is its own body)."""
        assigned, explicit = self.supervoxels.lookup_explicit(svs)
        return self._resolve(assigned, explicit), explicit

    def _resolve(self, assigned: np.ndarray, explicit: np.ndarray) -> np.ndarray:
        """Assigned bodies -> the bodies they were folded into (0 and unassigned ids stay)."""
        bodies = assigned.copy()
        follow = explicit & (assigned != 0)
        if follow.any():
            live, at = np.unique(assigned[follow], return_inverse=True)
            bodies[follow] = self.renames.lookup(live)[at.ravel()]
        return bodies

    def update(self, svs: np.ndarray, bodies: np.ndarray) -> None:
        """Assign ``svs`` to ``bodies`` (live bodies, or 0 to retire) at the bound node."""
        self.supervoxels.update(svs, bodies)

    def _aliases(self, label: int) -> np.ndarray:
        data = self.at.view(self.aliases).get(keys.label_key(label))
        return np.frombuffer(data, "<u8").astype(np.uint64) if data else np.empty(0, np.uint64)

    def _set_aliases(self, label: int, aliases: np.ndarray) -> None:
        key = keys.label_key(label)
        if aliases.size:
            self.aliases.write(self.at.node.uuid, key, np.unique(aliases).astype("<u8").tobytes())
        else:
            self.aliases.delete(self.at.node.uuid, key)

    def fold(self, bodies: list[int], target: int, own_ids: list[int]) -> None:
        """Merge or renumber: ``bodies`` (and every body folded into them before) now
        resolve to ``target``. ``own_ids`` are the bodies whose own id is one of their
        supervoxels: unassigned so far, they are assigned to themselves, so that the
        rename carries them along."""
        own = np.array(own_ids, np.uint64)
        fresh = own[~self.supervoxels.lookup_explicit(own)[1]]
        if fresh.size:
            self.supervoxels.update(fresh, fresh)
        folded = np.concatenate([np.array(bodies, np.uint64), *(self._aliases(b) for b in bodies)])
        folded = folded[folded != target]
        self.renames.update(folded, np.full(folded.size, target, np.uint64))
        self._set_aliases(target, np.concatenate([self._aliases(target), folded]))
        for body in bodies:
            self._set_aliases(body, np.empty(0, np.uint64))

    def revive(self, label: int, members: np.ndarray) -> None:
        """Before ``label``, once folded into another body, names a body again (renumber
        or POST mappings to it): the supervoxels of the body it was folded into that are
        still assigned to ``label`` (``members`` lists that body's supervoxels) are
        assigned to that body explicitly, and the rename is undone."""
        target, renamed = self.renames.lookup_explicit(np.array([label], np.uint64))
        into = int(target[0])
        if not renamed[0] or into == label:
            return
        members = np.asarray(members, np.uint64)
        pinned = members[self.supervoxels.lookup(members) == label]
        if pinned.size:
            self.supervoxels.update(pinned, np.full(pinned.size, into, np.uint64))
        self.renames.update(np.array([label], np.uint64), np.array([label], np.uint64))
        rest = self._aliases(into)
        self._set_aliases(into, rest[rest != label])

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """Every entry of DVID's flat mapping visible at the bound node (``GET
        /mappings``): the assigned supervoxels, with the bodies they resolve to."""
        svs, assigned = self.supervoxels.entries()
        return svs, self._resolve(assigned, np.ones(svs.size, bool))


class LabelIndices:
    """Per-body ``LabelIndex`` records of one instance, as seen from one version."""

    def __init__(self, keyed: VersionedKeys, at: VersionContext) -> None:
        self.keyed = keyed
        self.at = at
        self.view: KeyView = at.view(keyed)

    def get(self, label: int) -> pb.LabelIndex | None:
        data = self.view.get(keys.label_key(label))
        if data is None:
            return None
        index = pb.LabelIndex()
        index.ParseFromString(data)
        return index if index.blocks else None

    def get_many(self, labels: list[int]) -> list[pb.LabelIndex | None]:
        """:meth:`get` of each label, the store round trips overlapped (a voxel write
        rewrites the index of every body its blocks touch)."""
        return parallel.each(self.get, labels, overlap=self.view.overlap_calls)

    def put(self, index: pb.LabelIndex) -> None:
        """Store ``index`` at the bound (open) node; an index without blocks is deleted."""
        node_uuid = self.at.node.uuid
        if index.blocks:
            self.keyed.write(node_uuid, keys.label_key(index.label), index.SerializeToString())
        else:
            self.keyed.delete(node_uuid, keys.label_key(index.label))

    def labels(self, start: int = 0, end: int | None = None) -> list[int]:
        lo = keys.label_key(start)
        hi = keys.label_key(end) if end is not None else None
        return [int(k, 16) for k in self.view.keys_in_range(lo, hi)]


class NextLabel:
    """An admin-set start for new labels (DVID's ``NextLabel`` and ``NextLabelCeiling``),
    shared by every version of the instance: JSON ``{"next", "ceiling", "nonce"}``,
    changed only by conditional update. ``next`` 0 means unset: new labels then come from
    the repo-wide counter."""

    def __init__(self, store: ObjectStore, path: str) -> None:
        self.store = store
        self.path = path

    @staticmethod
    def _parse(data: bytes | None) -> tuple[int, int]:
        if not data:
            return 0, 0
        parsed = orjson.loads(data)
        return int(parsed["next"]), int(parsed["ceiling"])

    @staticmethod
    def _dump(next_label: int, ceiling: int) -> bytes:
        return orjson.dumps({"next": next_label, "ceiling": ceiling, "nonce": uuid.uuid4().hex})

    def current(self) -> tuple[int, int]:
        """(the last label handed out from the admin-set start, or 0; the ceiling, or 0)."""
        blob = self.store.get(self.path)
        return self._parse(blob.data if blob is not None else None)

    def set(self, label: int, ceiling: int | None) -> None:
        """Next allocations return ``label+1``...; ``ceiling`` None keeps the current one,
        0 clears it."""

        def edit(current: bytes | None) -> bytes:
            kept = self._parse(current)[1]
            limit = kept if ceiling is None else ceiling
            if limit and label > limit:
                raise BadRequest(
                    f"next label start {label} would exceed next label ceiling {limit}"
                )
            return self._dump(label, limit)

        conditional.update(self.store, self.path, edit, what="the next label")

    def take(self, count: int) -> tuple[int, int] | None:
        """Reserve ``count`` labels after the admin-set start: (first, last), or None when
        no start is set."""
        taken: tuple[int, int] | None = None

        def edit(current: bytes | None) -> bytes | None:
            nonlocal taken
            last, ceiling = self._parse(current)
            if last == 0:
                taken = None
                return None
            end = last + count
            if end >= MAX_UINT64 or (ceiling and end > ceiling):
                raise BadRequest(
                    f"allocating {count} new labels would exceed "
                    + (f"the next label ceiling {ceiling}" if ceiling else "the uint64 labels")
                )
            taken = (last + 1, end)
            return self._dump(end, ceiling)

        conditional.update(self.store, self.path, edit, what="the next label")
        return taken
