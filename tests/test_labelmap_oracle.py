"""labelmap proofreading against a model (an oracle test), per /work/shared/spec/labelmap.md
§4-5.8.

Seeded random sequences of merges, cleaves, split-supervoxels (with and without explicit
split/remain ids, with and without downres), splits, renumbers and voxel writes (POST raw and
POST blocks), plus edits that must fail, run over a small version DAG: the root, a child and a
branch made after committing it, and a grandchild made after committing the child. The model
is plain numpy: per version node the scale-0 and scale-1 supervoxel volumes and the explicit
supervoxel -> body mapping entries (copied when a version is made), plus the label counters,
the last mutation id of each body and the supervoxel splits.

After every step every read endpoint at the edited node is compared with the model (voxels in
every form at both scales, points, mapping, sizes, listings, label indices, counters, the
mutation log, supervoxel splits), and the per-label endpoints for the labels the step touched
(or one random body); every few steps the other nodes are checked too, to show that an edit
changes nothing outside its version.

What the model holds to (DVID's semantics, and this server's where DVID has none):

* merge maps every supervoxel of the others to the target; cleave moves the listed supervoxels
  to a new label (mapped to 0 as a supervoxel); renumber moves a body to the new id (retired
  as a supervoxel unless it has a mapping entry); split-supervoxel gives the RLE's voxels the
  split id and the rest the remain id, both in the old body, and retires the old id; split
  moves the RLE's voxels to a new body, every crossed supervoxel becoming a split one (new
  body) and a remain one (old body), the ids read from the mutation record's SVSplits.
* Lower scales follow scale 0 block by block (DVID's incremental downres) unless the write
  skipped downres; then scale 1 keeps what it had until the client POSTs it.
* lastmod: an edit stamps its mutation id into the bodies it edits, and no others (DVID's
  merge/cleave/split index updates); a voxel write stamps one new id into every body that had
  or has a supervoxel in the blocks written (this server's choice: DVID does not stamp them).
* New ids (cleave, split, split-supervoxel) are above every label written or handed out
  before in the repo, so never reused; maxlabel is the largest label written or handed out at
  the version and its ancestors; nextlabel and MaxRepoLabel follow the repo's largest.
* A refused edit (400) changes nothing, the label counter included.
"""

from __future__ import annotations

import gzip
import itertools
from dataclasses import dataclass, field

import fastremap
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.datatypes.labelmap import codecs
from app.proto import labelmap_pb2 as pb
from tests.conftest import Api
from tests.label_checks import index_problems

NAME = "seg"
SIDE = 64
BLOCK = 32
LOW = SIDE // 2  # the side of scale 1
BLOCKS = [(x, y, z) for z in range(2) for y in range(2) for x in range(2)]
STEPS = 20
U64_MAX = np.uint64(2**64 - 1)
gz, gy, gx = np.mgrid[0:SIDE, 0:SIDE, 0:SIDE].astype(np.int16)


def block_slices(coord: tuple[int, int, int]) -> tuple[slice, slice, slice]:
    x, y, z = coord
    return (
        slice(z * BLOCK, (z + 1) * BLOCK),
        slice(y * BLOCK, (y + 1) * BLOCK),
        slice(x * BLOCK, (x + 1) * BLOCK),
    )


def mode2(volume: np.ndarray) -> np.ndarray:
    """Reference 2x downsample (spec §6): per 2x2x2 cell the most frequent non-zero label,
    ties to the smallest, eight zeros give 0. Written here apart from the app's version."""
    nz, ny, nx = volume.shape
    cells = (
        volume.reshape(nz // 2, 2, ny // 2, 2, nx // 2, 2)
        .transpose(0, 2, 4, 1, 3, 5)
        .reshape(-1, 8)
    )
    counts = (cells[:, :, None] == cells[:, None, :]).sum(axis=2)
    counts[cells == 0] = 0
    best = counts.max(axis=1)
    pick = np.where(counts == best[:, None], cells, U64_MAX).min(axis=1)
    pick[best == 0] = 0
    return pick.reshape(nz // 2, ny // 2, nx // 2)


def rles(mask: np.ndarray) -> bytes:
    return codecs.encode_rles(codecs.rles_from_mask(mask))


@dataclass
class Version:
    """The model of one version node."""

    uuid: str
    vol: np.ndarray  # scale-0 supervoxels, ZYX
    low: np.ndarray  # scale-1 supervoxels, ZYX
    explicit: dict[int, int]  # supervoxel -> body entries (0: not a live supervoxel)
    lastmod: dict[int, int]  # body -> mutation id of the last edit that touched it
    maxlabel: int
    parent: Version | None = None
    locked: bool = False
    stale_low: bool = False  # scale 1 was left behind scale 0 (downres skipped)
    splits: list[list[int]] = field(default_factory=list)  # [mutid, old, remain, split]
    log: list[tuple[str, int]] = field(default_factory=list)  # (Action, MutationID)

    def child(self, uuid: str) -> Version:
        return Version(
            uuid,
            self.vol.copy(),
            self.low.copy(),
            dict(self.explicit),
            dict(self.lastmod),
            self.maxlabel,
            parent=self,
            stale_low=self.stale_low,
        )

    def body(self, sv: int) -> int:
        return self.explicit.get(sv, sv)

    def bodies_of(self, labels: np.ndarray) -> np.ndarray:
        return fastremap.remap(labels, self.explicit, preserve_missing_labels=True)

    def live(self) -> list[int]:
        return [s for s in np.unique(self.vol).tolist() if s]

    def index(self) -> dict[int, dict[int, dict[int, int]]]:
        """body -> block key -> supervoxel -> voxels, recounted from the volume."""
        out: dict[int, dict[int, dict[int, int]]] = {}
        for coord in BLOCKS:
            svs, counts = np.unique(self.vol[block_slices(coord)], return_counts=True)
            key = codecs.encode_block_key(*coord)
            for sv, n in zip(svs.tolist(), counts.tolist(), strict=True):
                if sv:
                    out.setdefault(self.body(sv), {}).setdefault(key, {})[sv] = n
        return out

    def body_svs(self) -> dict[int, list[int]]:
        found: dict[int, set[int]] = {}
        for sv in self.live():
            found.setdefault(self.body(sv), set()).add(sv)
        return {b: sorted(s) for b, s in found.items()}

    def redo_low(self, coords: list[tuple[int, int, int]]) -> None:
        """DVID's incremental downres: the octants of the changed scale-0 blocks."""
        half = BLOCK // 2
        for x, y, z in coords:
            cube = self.vol[block_slices((x, y, z))]
            self.low[
                z * half : (z + 1) * half, y * half : (y + 1) * half, x * half : (x + 1) * half
            ] = mode2(cube)


class Oracle:
    def __init__(self, api: Api, seed: int) -> None:
        self.api = api
        self.c: TestClient = api.c
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.versions: dict[str, Version] = {}
        self.repo_max = 0  # the largest label written or handed out anywhere in the repo
        self.seen: set[int] = set()  # every label written or handed out
        self.mutid = 0  # the largest mutation id seen
        self.history: list[str] = []
        self.sv_splits = 0

    # --- requests --------------------------------------------------------------------------

    def url(self, v: Version, path: str) -> str:
        return f"/api/node/{v.uuid}/{NAME}/{path}"

    def get(self, v: Version, path: str, **params: str | int) -> bytes:
        r = self.c.get(self.url(v, path), params=params)
        assert r.status_code == 200, f"GET {path} {params}: {r.status_code} {r.text}"
        return r.content

    def get_json(self, v: Version, path: str, body: object = None, **params: str | int):
        r = self.c.request("GET", self.url(v, path), json=body, params=params)
        assert r.status_code == 200, f"GET {path} {params}: {r.status_code} {r.text}"
        return r.json()

    def status(self, v: Version, path: str, **params: str | int) -> int:
        return self.c.get(self.url(v, path), params=params).status_code

    def post(self, v: Version, path: str, expect: int = 200, **kw):
        r = self.c.post(self.url(v, path), **kw)
        assert r.status_code == expect, f"POST {path}: {r.status_code} {r.text}"
        return r

    # --- bookkeeping -----------------------------------------------------------------------

    def note(self, text: str) -> None:
        self.history.append(text)

    def new_mutation(self, mutid: int) -> int:
        assert mutid > self.mutid, f"mutation id {mutid} after {self.mutid}"
        self.mutid = mutid
        return mutid

    def written(self, v: Version, labels: np.ndarray) -> None:
        top = int(labels.max()) if labels.size else 0
        self.seen.update(int(x) for x in np.unique(labels) if x)
        self.repo_max = max(self.repo_max, top)
        v.maxlabel = max(v.maxlabel, top)

    def handed_out(self, v: Version, ids: list[int], given: tuple[int, ...] = ()) -> None:
        """New ids the server chose: never written or handed out before, all distinct."""
        before = self.repo_max
        for label in ids:
            if label in given:
                continue
            assert label not in self.seen, f"id {label} reused"
            assert label > before, f"new id {label} not above the repo's largest {before}"
        assert len(set(ids)) == len(ids), f"ids handed out twice in one edit: {ids}"
        self.seen.update(ids)
        self.repo_max = max(self.repo_max, *ids)
        v.maxlabel = max(v.maxlabel, *ids)

    def fresh(self) -> int:
        return self.repo_max + int(self.rng.integers(1, 60))

    def never_seen(self) -> int:
        return 2**52 + int(self.rng.integers(1, 2**20))

    # --- versions --------------------------------------------------------------------------

    def start(self) -> Version:
        root = self.api.new_repo()
        self.api.new_instance(
            root, "labelmap", NAME, BlockSize=f"{BLOCK},{BLOCK},{BLOCK}", MaxDownresLevel="1"
        )
        vol = initial_volume(self.rng)
        v = Version(root, np.zeros_like(vol), np.zeros((LOW, LOW, LOW), np.uint64), {}, {}, 0)
        self.versions[root] = v
        assert self.status(v, "maxlabel") == 400  # nothing written yet
        self.write_raw(v, (0, 0, 0), (SIDE, SIDE, SIDE), vol)
        return v

    def commit(self, v: Version) -> None:
        self.api.commit(v.uuid)
        v.locked = True
        self.note(f"commit {v.uuid}")

    def newversion(self, parent: Version, branch: str | None = None) -> Version:
        uuid = self.api.branch(parent.uuid, branch) if branch else self.api.newversion(parent.uuid)
        v = parent.child(uuid)
        self.versions[uuid] = v
        self.note(f"version {uuid} from {parent.uuid}")
        return v

    # --- voxel writes ----------------------------------------------------------------------

    def stamp_write(self, v: Version, bodies: set[int]) -> None:
        """A voxel write stamps one new mutation id into the index of every body that had
        or has a supervoxel in the blocks written (the id is not returned: read it)."""
        alive = v.body_svs()
        stamped = {b: self.get_json(v, f"lastmod/{b}")["mutation id"] for b in bodies if b in alive}
        for b in bodies - set(alive):
            v.lastmod.pop(b, None)
        if stamped:
            assert len(set(stamped.values())) == 1, f"one write, several mutation ids {stamped}"
            mutid = self.new_mutation(next(iter(stamped.values())))
            for b in stamped:
                v.lastmod[b] = mutid

    def write_raw(self, v: Version, offset, size, labels: np.ndarray) -> set[int]:
        (ox, oy, oz), (sx, sy, sz) = offset, size
        box = np.s_[oz : oz + sz, oy : oy + sy, ox : ox + sx]
        touched = {v.body(s) for s in np.unique(np.concatenate([v.vol[box], labels]).ravel()) if s}
        self.post(v, f"raw/0_1_2/{sx}_{sy}_{sz}/{ox}_{oy}_{oz}", content=labels.tobytes())
        v.vol[box] = labels
        self.written(v, labels)
        coords = [
            (x, y, z)
            for x, y, z in BLOCKS
            if ox <= x * BLOCK < ox + sx and oy <= y * BLOCK < oy + sy and oz <= z * BLOCK < oz + sz
        ]
        v.redo_low(coords)  # POST raw always recomputes lower scales
        self.stamp_write(v, touched)
        self.note(f"raw {size}@{offset} at {v.uuid}")
        return touched

    def paint(self, v: Version, labels: np.ndarray, origin: tuple[int, int, int]) -> None:
        """Paint one or two shapes into ``labels`` (a box of the volume at ``origin``) with
        a live supervoxel, a new one, or background."""
        ox, oy, oz = origin
        nz, ny, nx = labels.shape
        z, y, x = gz[:nz, :ny, :nx] + oz, gy[:nz, :ny, :nx] + oy, gx[:nz, :ny, :nx] + ox
        for _ in range(int(self.rng.integers(1, 3))):
            live = v.live()
            kind = self.rng.random()
            if kind < 0.4 or not live:
                value = self.fresh()
            elif kind < 0.55:
                value = 0
            else:
                value = int(self.rng.choice(live))
            cx, cy, cz = (
                int(self.rng.integers(o, o + n)) for o, n in ((ox, nx), (oy, ny), (oz, nz))
            )
            r = int(self.rng.integers(3, 14))
            if self.rng.random() < 0.5:
                shape = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 < r * r
            else:
                shape = (abs(x - cx) < r) & (abs(y - cy) < r) & (abs(z - cz) < r)
            labels[shape] = value

    def op_write_raw(self, v: Version) -> set[int]:
        size = [BLOCK, BLOCK, BLOCK]
        size[int(self.rng.integers(3))] = int(self.rng.choice([BLOCK, SIDE]))
        offset = tuple(0 if s == SIDE else BLOCK * int(self.rng.integers(2)) for s in size)
        box = np.s_[
            offset[2] : offset[2] + size[2],
            offset[1] : offset[1] + size[1],
            offset[0] : offset[0] + size[0],
        ]
        labels = v.vol[box].copy()
        self.paint(v, labels, offset)
        return self.write_raw(v, offset, tuple(size), labels)

    def op_write_blocks(self, v: Version) -> set[int]:
        picks = self.rng.choice(len(BLOCKS), size=int(self.rng.integers(1, 4)), replace=False)
        coords = [BLOCKS[i] for i in sorted(picks)]
        downres = bool(self.rng.random() < 0.5)
        records, touched = [], set()
        new = {}
        for coord in coords:
            old = v.vol[block_slices(coord)]
            labels = old.copy()
            self.paint(v, labels, tuple(c * BLOCK for c in coord))
            touched |= {v.body(s) for s in np.unique(np.concatenate([old, labels]).ravel()) if s}
            records.append((coord, gzip.compress(codecs.encode_block(labels))))
            new[coord] = labels
        params = {"downres": "true"} if downres else {}
        self.post(v, "blocks", params=params, content=codecs.write_block_stream(records))
        for coord, labels in new.items():
            v.vol[block_slices(coord)] = labels
            self.written(v, labels)
        if downres:
            v.redo_low(coords)
        else:
            v.stale_low = True
        self.stamp_write(v, touched)
        self.note(f"blocks {coords} downres={downres} at {v.uuid}")
        return touched

    def op_repair_low(self, v: Version) -> set[int]:
        """What a client does after writes without downres: POST scale 1 itself."""
        low = mode2(v.vol)
        stream = codecs.write_block_stream([((0, 0, 0), gzip.compress(codecs.encode_block(low)))])
        self.post(v, "blocks", params={"scale": 1}, content=stream)
        v.low = low
        v.stale_low = False
        self.note(f"scale 1 POSTed at {v.uuid}")
        return set()

    # --- edits -----------------------------------------------------------------------------

    def op_merge(self, v: Version) -> set[int] | None:
        bodies = sorted(v.body_svs())
        if len(bodies) < 2:
            return None
        count = int(self.rng.integers(2, min(4, len(bodies)) + 1))
        target, *others = (int(b) for b in self.rng.choice(bodies, size=count, replace=False))
        r = self.post(v, "merge", json=[target, *others])
        mutid = self.new_mutation(r.json()["MutationID"])
        for sv in v.live():
            if v.body(sv) in others:
                v.explicit[sv] = target
        v.lastmod[target] = mutid
        for b in others:
            del v.lastmod[b]
        v.log.append(("merge-complete", mutid))
        self.note(f"merge {[target, *others]} at {v.uuid}: {mutid}")
        return {target, *others}

    def op_cleave(self, v: Version) -> set[int] | None:
        bodies = {b: s for b, s in v.body_svs().items() if len(s) > 1}
        if not bodies:
            return None
        label = int(self.rng.choice(sorted(bodies)))
        svs = bodies[label]
        cut = [
            int(s)
            for s in self.rng.choice(svs, size=int(self.rng.integers(1, len(svs))), replace=False)
        ]
        r = self.post(v, f"cleave/{label}", json=cut).json()
        new, mutid = r["CleavedLabel"], self.new_mutation(r["MutationID"])
        self.handed_out(v, [new])
        for sv in cut:
            v.explicit[sv] = new
        v.explicit[new] = 0
        v.lastmod[label] = v.lastmod[new] = mutid
        v.log.append(("cleave-complete", mutid))
        self.note(f"cleave {label} {cut} at {v.uuid}: {new}, {mutid}")
        return {label, new}

    def op_renumber(self, v: Version) -> set[int] | None:
        bodies = v.body_svs()
        count = int(self.rng.integers(1, 3))
        if len(bodies) < count:
            return None
        olds = [int(b) for b in self.rng.choice(sorted(bodies), size=count, replace=False)]
        dead = sorted(self.seen - set(bodies) - set(olds))
        news: list[int] = []
        for _ in olds:
            if dead and self.rng.random() < 0.3:  # an id that is no body here: allowed
                new = int(self.rng.choice(dead))
                dead.remove(new)
            else:
                new = max([self.repo_max, *news]) + int(self.rng.integers(1, 60))
            news.append(new)
        pairs = [x for pair in zip(news, olds, strict=True) for x in pair]
        self.post(v, "renumber", json=pairs)
        for new, old in zip(news, olds, strict=True):
            if new not in v.explicit:
                v.explicit[new] = 0
            for sv in v.live():
                if v.body(sv) == old:
                    v.explicit[sv] = new
            del v.lastmod[old]
            self.seen.add(new)
            self.repo_max = max(self.repo_max, new)
            v.maxlabel = max(v.maxlabel, new)
        # renumber returns no mutation ids: each pair's is in its body's lastmod, in order
        for new in news:
            v.lastmod[new] = self.new_mutation(self.get_json(v, f"lastmod/{new}")["mutation id"])
            v.log.append(("renumber-complete", v.lastmod[new]))
        self.note(f"renumber {pairs} at {v.uuid}")
        return {*news, *olds}

    def piece(self, mask: np.ndarray) -> np.ndarray | None:
        """A non-empty proper part of ``mask``: a half-space, box or ball cut of it."""
        total = int(mask.sum())
        if total < 2:
            return None
        zs, ys, xs = np.nonzero(mask)
        lo = np.array([xs.min(), ys.min(), zs.min()])
        hi = np.array([xs.max(), ys.max(), zs.max()])
        for _ in range(12):
            kind = self.rng.integers(3)
            if kind == 0:
                axis = int(self.rng.integers(3))
                cut = int(self.rng.integers(lo[axis], hi[axis] + 1))
                region = (gx, gy, gz)[axis] <= cut
            elif kind == 1:
                a = self.rng.integers(lo, hi + 1)
                b = self.rng.integers(lo, hi + 1)
                c0, c1 = np.minimum(a, b), np.maximum(a, b)
                region = np.ones_like(mask)
                for grid, a0, a1 in zip((gx, gy, gz), c0.tolist(), c1.tolist(), strict=True):
                    region &= (grid >= a0) & (grid <= a1)
            else:
                i = int(self.rng.integers(total))
                r = int(self.rng.integers(2, 12))
                region = (gx - xs[i]) ** 2 + (gy - ys[i]) ** 2 + (gz - zs[i]) ** 2 < r * r
            part = mask & region
            if 0 < int(part.sum()) < total:
                return part
        part = np.zeros_like(mask)
        part[zs[0], ys[0], xs[0]] = True
        return part

    def op_split_supervoxel(self, v: Version) -> set[int] | None:
        live = v.live()
        sv = int(self.rng.choice(live))
        mask = v.vol == sv
        part = self.piece(mask)
        if part is None:
            return None
        owner = v.body(sv)
        # The ids to ask for, in turn: none, both, or one of them just above the repo's
        # largest label (the next id the server would hand out).
        mode = SPLIT_ID_MODES[(self.seed + self.sv_splits) % len(SPLIT_ID_MODES)]
        self.sv_splits += 1
        params: dict[str, str | int] = {}
        if mode == "both":
            params = {"split": self.repo_max + 7, "remain": self.repo_max + 3}
        elif mode != "none":
            params = {mode: self.repo_max + 1}
        downres = bool(self.rng.random() < 0.7)
        if not downres:
            params["downres"] = "false"
        r = self.post(v, f"split-supervoxel/{sv}", params=params, content=rles(part)).json()
        a, b = r["SplitSupervoxel"], r["RemainSupervoxel"]
        mutid = self.new_mutation(r["MutationID"])
        for key, got in (("split", a), ("remain", b)):
            if key in params:
                assert got == params[key], f"asked for {key} id {params[key]}, got {got}"
        assert a != b, f"split and remain supervoxels are both {a} ({params})"
        given = tuple(int(params[k]) for k in ("split", "remain") if k in params)
        self.handed_out(v, [a, b], given)
        coords = [c for c in BLOCKS if mask[block_slices(c)].any()]
        v.vol[part] = a
        v.vol[mask & ~part] = b
        v.explicit.update({sv: 0, a: owner, b: owner})
        if downres:
            v.redo_low(coords)
        else:
            v.stale_low = True
        v.lastmod[owner] = mutid
        v.splits.append([mutid, sv, b, a])
        v.log.append(("split-supervoxel-complete", mutid))
        self.note(f"split-supervoxel {sv} {params} at {v.uuid}: {a}, {b}, {mutid}")
        return {owner}

    def op_split(self, v: Version) -> set[int] | None:
        bodies = v.body_svs()
        label = int(self.rng.choice(sorted(bodies)))
        mask = np.isin(v.vol, bodies[label])
        part = self.piece(mask)
        if part is None:
            return None
        r = self.post(v, f"split/{label}", content=rles(part)).json()
        new, mutid = r["label"], self.new_mutation(r["MutationID"])
        records = [m for m in self.get_json(v, "mutations") if m["MutationID"] == mutid]
        assert [m["Action"] for m in records] == ["split-complete"], records
        sv_splits = {int(k): (s["Split"], s["Remain"]) for k, s in records[0]["SVSplits"].items()}
        crossed = sorted(int(s) for s in np.unique(v.vol[part]))
        assert sorted(sv_splits) == crossed, f"split crossed {crossed}, record {sv_splits}"
        self.handed_out(v, [new, *itertools.chain(*sv_splits.values())])
        coords = [c for c in BLOCKS if np.isin(v.vol[block_slices(c)], crossed).any()]
        for sv, (s, rem) in sv_splits.items():
            mine = v.vol == sv
            v.vol[mine & part] = s
            v.vol[mine & ~part] = rem
            v.explicit.update({sv: 0, s: new, rem: label})
            v.splits.append([mutid, sv, rem, s])
        v.redo_low(coords)
        v.lastmod[label] = v.lastmod[new] = mutid
        v.log.append(("split-complete", mutid))
        self.note(f"split {label} at {v.uuid}: {new} {sv_splits}, {mutid}")
        return {label, new}

    # --- edits that must fail ----------------------------------------------------------------

    def op_invalid(self, v: Version) -> set[int] | None:
        """Edits DVID refuses with 400, every kind in turn; the check that follows shows
        that nothing changed."""
        bodies = v.body_svs()
        names = sorted(bodies)
        label = int(self.rng.choice(names))
        svs = bodies[label]
        others = [b for b in names if b != label]
        retired = sorted(self.retired_svs(v))
        dead = sorted(self.seen - set(bodies))
        kinds = ["merge-unknown", "merge-self", "cleave-all", "renumber-existing", "split-all"]
        kinds += ["split-same-ids", "split-outside", "body-outside"]
        if others:
            kinds.append("cleave-stranger")
        if dead:
            kinds.append("merge-dead")
        if retired:
            kinds.append("split-retired")
        self.rng.shuffle(kinds)
        for kind in kinds:
            if kind == "merge-unknown":
                unknown = self.never_seen()
                pair = [label, unknown] if self.rng.random() < 0.5 else [unknown, label]
                self.post(v, "merge", 400, json=pair)
            elif kind == "merge-dead":  # a label that was a body once, but no longer here
                self.post(v, "merge", 400, json=[label, int(self.rng.choice(dead))])
            elif kind == "merge-self":
                self.post(v, "merge", 400, json=[label, *others[:1], label])
            elif kind == "cleave-stranger":
                stranger = int(self.rng.choice(bodies[int(self.rng.choice(others))]))
                self.post(v, f"cleave/{label}", 400, json=[stranger, *svs[:1]])
            elif kind == "cleave-all":
                self.post(v, f"cleave/{label}", 400, json=svs)
            elif kind == "renumber-existing":
                self.post(v, "renumber", 400, json=[others[0] if others else label, label])
            elif kind == "split-all":
                sv = int(self.rng.choice(svs))
                self.post(v, f"split-supervoxel/{sv}", 400, content=rles(v.vol == sv))
            elif kind == "split-same-ids":
                sv = int(self.rng.choice(svs))
                part = self.piece(v.vol == sv)
                if part is not None:
                    same = {"split": self.fresh(), "remain": 0}
                    same["remain"] = same["split"]
                    path = f"split-supervoxel/{sv}"
                    self.post(v, path, 400, params=same, content=rles(part))
            elif kind == "split-retired":
                sv = int(self.rng.choice(retired))
                one = np.zeros_like(v.vol, dtype=bool)
                one[0, 0, 0] = True
                self.post(v, f"split-supervoxel/{sv}", 400, content=rles(one))
            else:  # split RLEs that reach outside the supervoxel / the body
                sv = int(self.rng.choice(svs))
                mask = v.vol == sv if kind == "split-outside" else np.isin(v.vol, svs)
                part = self.piece(mask)
                if part is None:
                    part = np.zeros_like(mask)
                outside = np.flatnonzero(~mask.ravel())
                part.ravel()[int(self.rng.choice(outside))] = True
                path = f"split-supervoxel/{sv}" if kind == "split-outside" else f"split/{label}"
                self.post(v, path, 400, content=rles(part))
        self.note(f"invalid {kinds} at {v.uuid}")
        locked = [w for w in self.versions.values() if w.locked]
        if locked:  # edits and writes at a committed version
            w = locked[int(self.rng.integers(len(locked)))]
            self.post(w, "merge", 400, json=sorted(w.body_svs())[:2])
            self.post(w, f"cleave/{label}", 400, json=svs[:1])
            block = np.zeros((BLOCK, BLOCK, BLOCK), np.uint64)
            self.post(w, f"raw/0_1_2/{BLOCK}_{BLOCK}_{BLOCK}/0_0_0", 400, content=block.tobytes())
            self.note(f"invalid edits at locked {w.uuid}")
            self.check(w, set())
        return {label}

    def retired_svs(self, v: Version) -> set[int]:
        return {old for w in self.ancestry(v) for _, old, _, _ in w.splits}

    def ancestry(self, v: Version) -> list[Version]:
        out = []
        w: Version | None = v
        while w is not None:
            out.append(w)
            w = w.parent
        return out

    # --- checks ------------------------------------------------------------------------------

    def check(self, v: Version, focus: set[int]) -> None:
        """Every read endpoint at ``v`` against the model; the per-label endpoints for the
        labels in ``focus`` (or one random body) and for a live and a retired supervoxel."""
        index = v.index()
        body_svs = v.body_svs()
        live = v.live()
        self.check_voxels(v)
        self.check_points(v)
        self.check_mapping(v, live)
        self.check_listing(v, index)
        self.check_counters(v)
        for label in sorted(focus or {int(self.rng.choice(sorted(index)))}):
            self.check_label(v, label, index.get(label), body_svs)
        svs = {int(self.rng.choice(live))}
        retired = sorted(self.retired_svs(v))
        if retired:
            svs.add(int(self.rng.choice(retired)))
        for sv in sorted(svs):
            self.check_supervoxel(v, int(sv))
        if not v.explicit:
            # tests/label_checks.py recounts supervoxels as labels: exact while every
            # supervoxel is its own body (before the first edit).
            candidates = sorted(focus | set(index))
            problems = index_problems(
                self.c,
                "",
                v.uuid,
                NAME,
                SIDE,
                BLOCK,
                candidates,
                v.maxlabel,
                max_scale=int(not v.stale_low),
            )
            assert not problems, problems

    def raw(self, v: Version, scale: int, supervoxels: bool) -> np.ndarray:
        side = SIDE >> scale
        params = {"scale": scale, "supervoxels": "true"} if supervoxels else {"scale": scale}
        data = self.get(v, f"raw/0_1_2/{side}_{side}_{side}/0_0_0", **params)
        return np.frombuffer(data, "<u8").reshape(side, side, side)

    def check_voxels(self, v: Version) -> None:
        svs0 = self.raw(v, 0, True)
        assert np.array_equal(svs0, v.vol), "scale 0 supervoxels differ from the model"
        assert np.array_equal(self.raw(v, 0, False), v.bodies_of(v.vol)), "scale 0 bodies differ"
        svs1 = self.raw(v, 1, True)
        assert np.array_equal(svs1, v.low), "scale 1 supervoxels differ from the model"
        assert np.array_equal(self.raw(v, 1, False), v.bodies_of(v.low)), "scale 1 bodies differ"
        if not v.stale_low:
            assert np.array_equal(svs1, mode2(svs0)), "scale 1 is not the mode of scale 0"
        mapped = bool(self.rng.random() < 0.5)
        for scale, side, want in ((0, SIDE, v.vol), (1, LOW, v.low)):
            params = {"compression": "blocks", "scale": scale}
            if not mapped:
                params["supervoxels"] = "true"
            stream = codecs.read_block_stream(
                self.get(v, f"blocks/{side}_{side}_{side}/0_0_0", **params)
            )
            expected = [c for c in BLOCKS if max(c) * BLOCK < side]
            assert sorted(c for c, _ in stream) == sorted(expected)
            for coord, payload in stream:
                got = codecs.decode_block_payload(payload, "blocks", (BLOCK, BLOCK, BLOCK))
                cube = want[block_slices(coord)]
                assert np.array_equal(got, v.bodies_of(cube) if mapped else cube), (scale, coord)

    def check_points(self, v: Version) -> None:
        pts = self.rng.integers(0, SIDE, size=(40, 3))
        xyz = [[int(a) for a in p] for p in pts] + [[SIDE + 5, 1, 1]]
        svs = [int(v.vol[z, y, x]) for x, y, z in xyz[:-1]] + [0]
        assert self.get_json(v, "labels", xyz, supervoxels="true") == svs
        assert self.get_json(v, "labels", xyz) == [v.body(s) if s else 0 for s in svs]
        half = [[p // 2 for p in q] for q in xyz[:-1]]
        low = [int(v.low[z, y, x]) for x, y, z in half]
        assert self.get_json(v, "labels", half, scale=1, supervoxels="true") == low
        x, y, z = xyz[0]
        got = self.get_json(v, f"label/{x}_{y}_{z}")
        assert got == {"Label": v.body(svs[0]) if svs[0] else 0}

    def check_mapping(self, v: Version, live: list[int]) -> None:
        ids = sorted({*live, *v.explicit, self.never_seen()})
        want = [v.explicit.get(s, s if s in live else 0) for s in ids]
        assert self.get_json(v, "mapping", ids) == want
        text = self.get(v, "mappings").decode()
        got = sorted(tuple(int(x) for x in line.split()) for line in text.splitlines())
        assert got == sorted(v.explicit.items()), "GET mappings differs from the model"

    def check_listing(self, v: Version, index: dict[int, dict[int, dict[int, int]]]) -> None:
        labels = sorted(index)
        sizes = {b: sum(sum(c.values()) for c in blocks.values()) for b, blocks in index.items()}
        assert np.frombuffer(self.get(v, "listlabels"), "<u8").tolist() == labels
        pairs = np.frombuffer(self.get(v, "listlabels", sizes="true"), "<u8").tolist()
        assert pairs == [x for b in labels for x in (b, sizes[b])]
        assert sorted(self.get_json(v, "existing-labels")) == labels
        absent = [self.never_seen(), *sorted(self.seen - set(labels))[:5]]
        asked = labels + absent
        assert self.get_json(v, "sizes", asked) == [sizes.get(b, 0) for b in asked]
        live = v.live()
        sv_sizes = dict(zip(*np.unique(v.vol, return_counts=True), strict=True))
        asked = live + sorted(self.retired_svs(v))[:5]
        want = [int(sv_sizes.get(s, 0)) for s in asked]
        assert self.get_json(v, "sizes", asked, supervoxels="true") == want
        got = pb.LabelIndices()
        got.ParseFromString(
            self.c.request("GET", self.url(v, "indices"), json=labels + absent).content
        )
        assert [i.label for i in got.indices] == labels + absent
        for i in got.indices:
            blocks = {k: dict(e.counts) for k, e in i.blocks.items()}
            assert blocks == index.get(i.label, {}), f"index of {i.label} differs from voxels"
            if i.label in index:
                assert i.last_mutid == v.lastmod[i.label], f"last mutid of {i.label}"

    def check_counters(self, v: Version) -> None:
        assert self.get_json(v, "maxlabel") == {"maxlabel": v.maxlabel}
        assert self.get_json(v, "nextlabel") == {"nextlabel": self.repo_max + 1}
        info = self.get_json(v, "info")["Extended"]
        assert info["MaxRepoLabel"] == self.repo_max
        want: list[object] = []
        for w in self.ancestry(v):
            if w.splits:
                want += [w.uuid, sorted(w.splits)]
        got = self.get_json(v, "supervoxel-splits")
        assert [sorted(x) if isinstance(x, list) else x for x in got] == want
        log = [(m["Action"], m["MutationID"]) for m in self.get_json(v, "mutations")]
        assert log == v.log, "the mutation log differs"

    def check_label(
        self,
        v: Version,
        label: int,
        index: dict[int, dict[int, int]] | None,
        body_svs: dict[int, list[int]],
    ) -> None:
        if index is None:
            for path in ("size", "sparsevol", "sparsevol-coarse", "supervoxels", "lastmod"):
                assert self.status(v, f"{path}/{label}") == 404, (path, label)
            assert self.c.head(self.url(v, f"sparsevol/{label}")).status_code == 204
            return
        svs = body_svs[label]
        mask = np.isin(v.vol, svs)
        voxels = int(mask.sum())
        assert self.get_json(v, f"size/{label}") == {"voxels": voxels}
        assert sorted(self.get_json(v, f"supervoxels/{label}")) == svs
        sizes = self.get_json(v, f"supervoxel-sizes/{label}")
        got = dict(zip(sizes["supervoxels"], sizes["sizes"], strict=True))
        assert got == {s: int((v.vol == s).sum()) for s in svs}
        self.check_sparse(v, f"sparsevol/{label}", mask, {})
        self.check_sparse(v, f"sparsevol/{label}", np.isin(v.low, svs), {"scale": 1})
        coords = sorted(codecs.decode_block_key(k) for k in index)
        lo = np.min(coords, axis=0) * BLOCK
        hi = (np.max(coords, axis=0) + 1) * BLOCK - 1
        assert self.get_json(v, f"sparsevol-size/{label}") == {
            "voxels": voxels,
            "numblocks": len(coords),
            "minvoxel": lo.tolist(),
            "maxvoxel": hi.tolist(),
        }
        coarse = codecs.decode_rles(self.get(v, f"sparsevol-coarse/{label}"))
        blocks = sorted((x + i, y, z) for x, y, z, n in coarse.tolist() for i in range(n))
        assert blocks == coords
        assert self.get_json(v, f"lastmod/{label}")["mutation id"] == v.lastmod[label]
        got_index = pb.LabelIndex()
        got_index.ParseFromString(self.get(v, f"index/{label}"))
        assert got_index.label == label
        assert {k: dict(e.counts) for k, e in got_index.blocks.items()} == index

    def check_sparse(self, v: Version, path: str, mask: np.ndarray, params: dict) -> None:
        # A body with blocks but no voxels at scale 1 (lost in the downsample) still
        # answers 200, with no runs.
        runs = codecs.decode_rles(self.get(v, path, **params))
        got = codecs.rles_to_mask(runs, (0, 0, 0), mask.shape)
        assert int(runs[:, 3].sum()) == int(got.sum()), f"{path}: overlapping runs"
        assert np.array_equal(got, mask), f"{path} {params} differs from the model"

    def check_supervoxel(self, v: Version, sv: int) -> None:
        mask = v.vol == sv
        if not mask.any():
            assert self.status(v, f"size/{sv}", supervoxels="true") == 404
            assert self.status(v, f"sparsevol/{sv}", supervoxels="true") == 404
            return
        assert self.get_json(v, f"size/{sv}", supervoxels="true") == {"voxels": int(mask.sum())}
        self.check_sparse(v, f"sparsevol/{sv}", mask, {"supervoxels": "true"})


def initial_volume(rng: np.random.Generator) -> np.ndarray:
    """Nine supervoxels (Voronoi cells, two with large ids) and some background."""
    count = 9
    centers = rng.integers(0, SIDE, size=(count, 3))
    ids = rng.choice(np.arange(2, 200), size=count - 2, replace=False).tolist()
    ids += [2**33 + int(rng.integers(1, 1000)), 2**40 + int(rng.integers(1, 1000))]
    dist = np.stack(
        [(gx - cx) ** 2 + (gy - cy) ** 2 + (gz - cz) ** 2 for cx, cy, cz in centers.tolist()]
    )
    vol = np.array(ids, np.uint64)[dist.argmin(axis=0)]
    cx, cy, cz = rng.integers(0, SIDE, size=3).tolist()
    vol[(gx - cx) ** 2 + (gy - cy) ** 2 + (gz - cz) ** 2 < 100] = 0
    vol[:, :2, :] = 0
    return vol


SPLIT_ID_MODES = ["none", "split", "both", "remain"]

OPS = {
    "merge": 5,
    "cleave": 4,
    "split_supervoxel": 4,
    "split": 3,
    "renumber": 2,
    "write_raw": 2,
    "write_blocks": 2,
    "invalid": 3,
}


def grow_dag(
    oracle: Oracle, root: Version, open_: list[Version], step: int, first: int, second: int
) -> list[Version]:
    """The open versions edits go to at ``step``: at ``first`` the root is committed and a
    child and a branch open; at ``second`` the child is committed and a grandchild opens."""
    if step == first:
        oracle.commit(root)
        return [oracle.newversion(root), oracle.newversion(root, f"side{oracle.seed}")]
    if step == second:
        oracle.commit(open_[0])
        return [oracle.newversion(open_[0]), *open_[1:]]
    return open_


def run(oracle: Oracle) -> None:
    rng = oracle.rng
    root = oracle.start()
    oracle.check(root, set(root.body_svs()))
    first, second = int(rng.integers(4, 8)), int(rng.integers(11, 15))
    open_: list[Version] = [root]
    names, weights = list(OPS), np.array(list(OPS.values()), float)
    pending = list(names)
    rng.shuffle(pending)
    for step in range(STEPS):
        open_ = grow_dag(oracle, root, open_, step, first, second)
        v = open_[int(rng.integers(len(open_)))]
        try:
            focus, op = None, ""
            if v.stale_low and rng.random() < 0.3:
                focus, op = oracle.op_repair_low(v), "repair_low"
            untried = iter(list(pending))
            while focus is None:  # each kind of step at least once, then at random
                op = next(untried, None) or str(rng.choice(names, p=weights / weights.sum()))
                focus = getattr(oracle, f"op_{op}")(v)
            if op in pending:
                pending.remove(op)
            oracle.check(v, focus)
            others = [w for w in oracle.versions.values() if w is not v]
            if step == STEPS - 1:  # in the end, every version is as the model says
                for w in others:
                    oracle.check(w, set())
            elif step % 6 == 5 and others:  # now and then, the parent or a sibling
                oracle.check(others[int(rng.integers(len(others)))], set())
        except AssertionError as e:
            raise AssertionError(f"seed {oracle.seed}, after: {oracle.history}\n{e}") from e
    assert not pending, f"never applicable: {pending}"


# Every run tries each kind of step at least once. make test runs one seed, on a real
# folder; make reliability adds the memory seed.
@pytest.mark.parametrize(
    ("backend", "seed"), [pytest.param("memory", 1, marks=pytest.mark.reliability), ("local", 3)]
)
def test_edits_match_the_model(api: Api, backend: str, seed: int) -> None:
    with api.c:  # one event-loop portal for every request, not one each
        run(Oracle(api, seed))


# --- regressions the oracle found (minimal reproductions) ---------------------------------------


def labelmap(api: Api, vol: np.ndarray) -> str:
    """A labelmap of 32³ blocks holding ``vol`` at the origin; its URL prefix."""
    root = api.new_repo()
    api.new_instance(root, "labelmap", NAME, BlockSize=f"{BLOCK},{BLOCK},{BLOCK}")
    nz, ny, nx = vol.shape
    r = api.c.post(f"/api/node/{root}/{NAME}/raw/0_1_2/{nx}_{ny}_{nz}/0_0_0", content=vol.tobytes())
    assert r.status_code == 200, r.text
    return f"/api/node/{root}/{NAME}"


def first_voxel(shape: tuple[int, int, int]) -> bytes:
    mask = np.zeros(shape, bool)
    mask[0, 0, 0] = True
    return rles(mask)


@pytest.mark.parametrize("backend", ["memory"])
def test_split_supervoxel_leaves_lastmod_of_other_bodies(api: Api) -> None:
    vol = np.full((BLOCK, BLOCK, BLOCK), 2, np.uint64)
    vol[:, :, : BLOCK // 2] = 1  # supervoxels 1 and 2 share the block
    u = labelmap(api, vol)
    before = api.c.get(f"{u}/lastmod/2").json()["mutation id"]
    r = api.c.post(f"{u}/split-supervoxel/1", content=first_voxel(vol.shape))
    assert r.status_code == 200, r.text
    assert api.c.get(f"{u}/lastmod/1").json()["mutation id"] == r.json()["MutationID"]
    assert api.c.get(f"{u}/lastmod/2").json()["mutation id"] == before


@pytest.mark.parametrize("backend", ["memory"])
@pytest.mark.parametrize("given", ["split", "remain"])
def test_split_supervoxel_new_id_is_not_the_given_one(api: Api, given: str) -> None:
    vol = np.ones((BLOCK, BLOCK, BLOCK), np.uint64)
    u = labelmap(api, vol)
    next_label = api.c.get(f"{u}/nextlabel").json()["nextlabel"]
    r = api.c.post(
        f"{u}/split-supervoxel/1", params={given: next_label}, content=first_voxel(vol.shape)
    )
    assert r.status_code == 200, r.text
    ids = r.json()
    assert ids["SplitSupervoxel" if given == "split" else "RemainSupervoxel"] == next_label
    assert ids["SplitSupervoxel"] != ids["RemainSupervoxel"], ids


@pytest.mark.parametrize("backend", ["memory"])
def test_split_drops_the_old_supervoxel_from_blocks_it_leaves(api: Api) -> None:
    vol = np.ones((BLOCK, BLOCK, 2 * BLOCK), np.uint64)  # supervoxel 1 in blocks (0,0,0), (1,0,0)
    u = labelmap(api, vol)
    right = np.zeros(vol.shape, bool)
    right[:, :, BLOCK:] = True  # all of block (1,0,0) goes to the new body
    r = api.c.post(f"{u}/split/1", content=rles(right))
    assert r.status_code == 200, r.text
    new = r.json()["label"]
    assert api.c.get(f"{u}/size/1").json() == {"voxels": BLOCK**3}
    assert api.c.get(f"{u}/size/{new}").json() == {"voxels": BLOCK**3}
    assert 1 not in api.c.get(f"{u}/supervoxels/1").json()
    assert api.c.get(f"{u}/sparsevol-size/1").json()["numblocks"] == 1
