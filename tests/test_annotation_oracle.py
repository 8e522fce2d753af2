"""annotation (and labelsz) synced to a labelmap, against a model (an oracle test), per
/work/shared/spec/annotation.md, labelsz.md and sync.md §1.3.

Seeded random sequences of element edits (POST elements with every kind, tags, props and
relationships, replacing ones included; DELETE element; POST move; edits that must fail)
and segmentation edits (merge, cleave, split-supervoxel, split, renumber, POST raw and
POST blocks) run over a small version DAG: the root, a child and a branch made after
committing it, and a grandchild made after committing the child.

The segmentation model and its edits are the labelmap oracle's
(:class:`tests.test_labelmap_oracle.Oracle`: plain numpy supervoxels plus the explicit
supervoxel -> body mapping, per version node). On top of it the model holds, per version
node, the elements by position, exactly as posted. Every derived answer is recounted from
that model alone, never from the server: an element belongs to the body its position's
supervoxel maps to at that version (none outside the volume or on background).

After every step, at the edited version and at one other version (a parent or a
sibling, to show that nothing leaked), the server must agree with the recount:

* ``elements`` over the whole volume and over a random box, and ``all-elements`` (each
  element filed under its block), with relationships;
* ``label/{l}`` for every body, for the labels the step touched and a few dead ones
  (whole elements without ``Rels``: Pos, Kind, Tags and Prop); one of them also with
  ``relationships=true``;
* ``tag/{t}`` for every tag;
* labelsz ``top`` (the whole ranking) of every index type, ``count`` of PreSyn, PostSyn
  and AllSyn, and ``top/{k}``, ``threshold`` (paged too) and ``counts`` of one index type
  in turn: ranking by count descending, ties by label ascending, zero counts not listed.

A run must also have dropped and retargeted relationships and moved elements between
bodies by segmentation edits, or it would prove little (the generator leans that way:
synapse pairs related both ways, deletes and moves of elements others name).

Relationship semantics the model holds to (spec, and this server's reading of DVID): the
server never makes reciprocal relationships; DELETE element drops every relationship
pointing at it held by elements of its own block and of the blocks its own Rels name;
move rewrites ``To`` in the same blocks (its old block and its Rels' blocks, seen after
the move).
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import numpy as np
import pytest

from tests.conftest import Api
from tests.test_labelmap_oracle import BLOCK, SIDE, Oracle, Version, grow_dag

ANNOT = "synapses"
SIZES = "sizes"

KINDS = ("PostSyn", "PreSyn", "Gap", "Note")
SYNAPTIC = frozenset({"PostSyn", "PreSyn", "Gap"})
INDEX_TYPES = (*KINDS, "AllSyn")
TAGS = ("t0", "t1", "t2")
RELS = ("PostSynTo", "PreSynTo", "ConvergentTo", "GroupedWith", "UnknownRelationship")
#: Elements may lie a little outside the segmentation (no body there).
LO, HI = -16, SIDE + 16
WIDE = HI - LO
STEPS = 22

Pos = tuple[int, int, int]
Element = dict[str, Any]

ELEMENT_OPS = {"post": 5, "delete": 3, "move": 4, "invalid_elements": 1}
LABEL_OPS = {
    "merge": 3,
    "cleave": 2,
    "split_supervoxel": 2,
    "split": 2,
    "renumber": 1,
    "write_raw": 2,
    "write_blocks": 1,
}


def nr(element: Element) -> Element:
    """The element as label and tag lists hold it (no ``Rels``)."""
    return {k: v for k, v in element.items() if k != "Rels"}


def block_of(p: Pos | list[int]) -> Pos:
    """The annotation block holding ``p``: the synced labelmap's block size."""
    return p[0] // BLOCK, p[1] // BLOCK, p[2] // BLOCK


def by_pos(elements: list[Element] | None, what: str) -> dict[Pos, Element]:
    """Elements keyed by position; a position listed twice is a failure."""
    out: dict[Pos, Element] = {}
    for e in elements or []:
        p = (e["Pos"][0], e["Pos"][1], e["Pos"][2])
        assert p not in out, f"{what}: {p} listed twice"
        out[p] = e
    return out


def same(got: list[Element] | None, want: dict[Pos, Element], what: str) -> None:
    """``got`` holds exactly ``want`` (order free); the message names the differences."""
    have = by_pos(got, what)
    if have != want:
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        differ = [
            (p, have[p], want[p]) for p in sorted(set(have) & set(want)) if have[p] != want[p]
        ]
        raise AssertionError(f"{what}: missing {missing}, extra {extra}, differ {differ[:3]}")


class AnnotationOracle(Oracle):
    """The labelmap oracle's segmentation model and edits, plus the elements per version."""

    def __init__(self, api: Api, seed: int) -> None:
        super().__init__(api, seed)
        self.points: dict[str, dict[Pos, Element]] = {}
        #: What the run exercised (relationships dropped and retargeted, elements moved
        #: between bodies by segmentation edits): each must happen, or the run proved little.
        self.exercised: Counter[str] = Counter()
        self.checks = 0  # labelsz checks so far: they take the index types in turn

    # --- requests --------------------------------------------------------------------------

    def aurl(self, v: Version, path: str, data: str = ANNOT) -> str:
        return f"/api/node/{v.uuid}/{data}/{path}"

    def aget(
        self, v: Version, path: str, data: str = ANNOT, body: object = None, **params: Any
    ) -> Any:
        r = self.c.request("GET", self.aurl(v, path, data), json=body, params=params)
        assert r.status_code == 200, f"GET {data}/{path} {params}: {r.status_code} {r.text}"
        return r.json()

    def asend(self, method: str, v: Version, path: str, expect: int = 200, **kw: Any) -> None:
        r = self.c.request(method, self.aurl(v, path), **kw)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"

    # --- versions --------------------------------------------------------------------------

    def start(self) -> Version:
        """The labelmap oracle's root (a volume written), then the annotation synced to it
        and labelsz synced to the annotation, before any element is posted."""
        root = super().start()
        self.api.new_instance(root.uuid, "annotation", ANNOT)
        r = self.c.post(self.aurl(root, "sync"), json={"sync": "seg"})
        assert r.status_code == 200, r.text
        self.api.new_instance(root.uuid, "labelsz", SIZES)
        r = self.c.post(self.aurl(root, "sync", SIZES), json={"sync": ANNOT})
        assert r.status_code == 200, r.text
        self.points[root.uuid] = {}
        self.op_post(root, count=40)
        return root

    def newversion(self, parent: Version, branch: str | None = None) -> Version:
        v = super().newversion(parent, branch)
        self.points[v.uuid] = copy.deepcopy(self.points[parent.uuid])
        return v

    # --- the model's labels ----------------------------------------------------------------

    def body_at(self, v: Version, p: Pos) -> int:
        x, y, z = p
        if not (0 <= x < SIDE and 0 <= y < SIDE and 0 <= z < SIDE):
            return 0
        sv = int(v.vol[z, y, x])
        return v.body(sv) if sv else 0

    def bodies(self, v: Version, ps: list[Pos]) -> set[int]:
        return {b for b in (self.body_at(v, p) for p in ps) if b}

    # --- elements --------------------------------------------------------------------------

    def random_pos(self) -> Pos:
        if self.rng.random() < 0.1:
            x, y, z = (int(c) for c in self.rng.integers(LO, HI, size=3))
        else:
            x, y, z = (int(c) for c in self.rng.integers(0, SIDE, size=3))
        return x, y, z

    def free_pos(self, v: Version) -> Pos:
        pts = self.points[v.uuid]
        while True:
            p = self.random_pos()
            if p not in pts:
                return p

    def random_element(self, v: Version, p: Pos) -> Element:
        rng = self.rng
        tags: list[str] | None = None
        if rng.random() < 0.7:
            tags = [str(t) for t in rng.choice(TAGS, size=int(rng.integers(0, 3)), replace=False)]
        prop = {"conf": f"0.{int(rng.integers(10))}", "user": "o"} if rng.random() < 0.5 else None
        rels: list[dict[str, Any]] | None = None
        if rng.random() < 0.8:
            others = [q for q in self.points[v.uuid] if q != p]
            near = [q for q in others if block_of(q) == block_of(p)]
            rels = []
            for _ in range(int(rng.integers(0, 3))):
                pick = rng.random()
                if near and pick < 0.4:
                    to = near[int(rng.integers(len(near)))]
                elif others and pick < 0.85:
                    to = others[int(rng.integers(len(others)))]
                else:
                    to = self.random_pos()
                rels.append({"Rel": str(rng.choice(RELS)), "To": list(to)})
        return {
            "Pos": list(p),
            "Kind": str(rng.choice(KINDS)),
            "Tags": tags,
            "Prop": prop,
            "Rels": rels,
        }

    def synapse(self, v: Version) -> list[Element]:
        """A PreSyn and a PostSyn close by, each naming the other (as clients post them)."""
        pre = self.free_pos(v)
        while True:
            x, y, z = (
                int(c + d) for c, d in zip(pre, self.rng.integers(-6, 7, size=3), strict=True)
            )
            post = (x, y, z)
            if post != pre and post not in self.points[v.uuid]:
                break
        a = {**self.random_element(v, pre), "Kind": "PreSyn"}
        b = {**self.random_element(v, post), "Kind": "PostSyn"}
        a["Rels"] = [*(a["Rels"] or ()), {"Rel": "PreSynTo", "To": list(post)}]
        b["Rels"] = [{"Rel": "PostSynTo", "To": list(pre)}, *(b["Rels"] or ())]
        return [a, b]

    def op_post(self, v: Version, count: int = 0) -> set[int]:
        """New elements and replacements of existing ones (the last of a repeated position
        wins), and now and then a synapse (two elements related both ways)."""
        pts = self.points[v.uuid]
        posted: list[Element] = []
        for _ in range(count // 5 or int(self.rng.random() < 0.4)):
            posted += self.synapse(v)
        for _ in range(count or int(self.rng.integers(1, 6))):
            if pts and self.rng.random() < 0.3:
                keys = list(pts)
                p = keys[int(self.rng.integers(len(keys)))]
            elif posted and self.rng.random() < 0.1:
                x, y, z = posted[int(self.rng.integers(len(posted)))]["Pos"]
                p = (x, y, z)
            else:
                p = self.free_pos(v)
            posted.append(self.random_element(v, p))
        self.asend("POST", v, "elements", json=posted)
        for e in posted:
            pts[(e["Pos"][0], e["Pos"][1], e["Pos"][2])] = copy.deepcopy(e)
        where = [(e["Pos"][0], e["Pos"][1], e["Pos"][2]) for e in posted]
        self.note(f"post {where} at {v.uuid}")
        return self.bodies(v, where)

    def drop_rels(self, v: Version, blocks: set[Pos], old: Pos, new: Pos | None) -> None:
        """Relationships to ``old`` held by elements in ``blocks``: dropped, or pointed at
        ``new``. Counts them, to show the run exercised both."""
        for q, e in self.points[v.uuid].items():
            if block_of(q) not in blocks or not e["Rels"]:
                continue
            hits = sum(tuple(r["To"]) == old for r in e["Rels"])
            self.exercised["relationships dropped" if new is None else "retargeted"] += hits
            if new is None:
                e["Rels"] = [r for r in e["Rels"] if tuple(r["To"]) != old]
            else:
                e["Rels"] = [
                    {**r, "To": list(new)} if tuple(r["To"]) == old else r for r in e["Rels"]
                ]

    def reach(self, v: Version, p: Pos) -> set[Pos]:
        """The blocks whose relationships to ``p`` a delete or move of ``p`` rewrites."""
        return {block_of(p)} | {block_of(r["To"]) for r in self.points[v.uuid][p]["Rels"] or ()}

    def pick(self, v: Version) -> Pos:
        """An element, more often one named by relationships that deleting or moving it
        rewrites."""
        pts = self.points[v.uuid]
        named: dict[tuple[int, ...], set[Pos]] = {}
        for q, e in pts.items():
            for r in e["Rels"] or ():
                named.setdefault(tuple(r["To"]), set()).add(block_of(q))
        hit = [p for p in pts if named.get(p, set()) & self.reach(v, p)]
        keys = hit if hit and self.rng.random() < 0.85 else list(pts)
        x, y, z = keys[int(self.rng.integers(len(keys)))]
        return x, y, z

    def op_delete(self, v: Version) -> set[int] | None:
        pts = self.points[v.uuid]
        if not pts:
            return None
        p = self.pick(v)
        self.asend("DELETE", v, "element/{}_{}_{}".format(*p))
        gone = pts.pop(p)
        blocks = {block_of(p)} | {block_of(r["To"]) for r in gone["Rels"] or ()}
        self.drop_rels(v, blocks, p, None)
        self.note(f"delete {p} at {v.uuid}")
        return self.bodies(v, [p])

    def op_move(self, v: Version) -> set[int] | None:
        pts = self.points[v.uuid]
        if not pts:
            return None
        p = self.pick(v)
        q = self.free_pos(v)
        self.asend("POST", v, "move/{}_{}_{}/{}_{}_{}".format(*p, *q))
        e = pts.pop(p)
        e["Pos"] = list(q)
        pts[q] = e
        blocks = {block_of(p)} | {block_of(r["To"]) for r in e["Rels"] or ()}
        self.drop_rels(v, blocks, p, q)
        self.note(f"move {p} -> {q} at {v.uuid}")
        return self.bodies(v, [p, q])

    def op_invalid_elements(self, v: Version) -> set[int]:
        """Element edits refused with 400, and a move onto itself (200, a no-op); the check
        that follows shows nothing changed."""
        pts = self.points[v.uuid]
        missing = self.free_pos(v)
        self.asend("DELETE", v, "element/{}_{}_{}".format(*missing), 400)
        self.asend("POST", v, "move/{}_{}_{}/{}_{}_{}".format(*missing, *self.free_pos(v)), 400)
        bad = self.random_element(v, self.free_pos(v))
        self.asend("POST", v, "elements", 400, json=[bad, {**bad, "Kind": "Synapse"}])
        touched: list[Pos] = [missing]
        if len(pts) >= 2:
            keys = list(pts)
            i, j = self.rng.choice(len(keys), size=2, replace=False)
            a, b = keys[int(i)], keys[int(j)]
            self.asend("POST", v, "move/{}_{}_{}/{}_{}_{}".format(*a, *b), 400)
            self.asend("POST", v, "move/{}_{}_{}/{}_{}_{}".format(*a, *a))
            touched += [a, b]
        locked = [w for w in self.versions.values() if w.locked]
        if locked:
            w = locked[int(self.rng.integers(len(locked)))]
            element = self.random_element(w, self.free_pos(w))
            self.asend("POST", w, "elements", 400, json=[element])
            if self.points[w.uuid]:
                p = next(iter(self.points[w.uuid]))
                self.asend("DELETE", w, "element/{}_{}_{}".format(*p), 400)
        self.note(f"invalid element edits at {v.uuid}")
        return self.bodies(v, touched)

    # --- checks ------------------------------------------------------------------------------

    def check_all(self, v: Version, focus: set[int]) -> None:
        pts = self.points[v.uuid]
        where = list(pts)
        body = {p: self.body_at(v, p) for p in where}
        if where:  # the segmentation model agrees with the server where elements lie
            got = self.get_json(v, "labels", [list(p) for p in where])
            assert got == [body[p] for p in where], "labelmap differs from the model"
        self.check_elements(v, pts)
        self.check_labels(v, pts, body, focus)
        for tag in TAGS:
            want = {p: nr(e) for p, e in pts.items() if tag in (e["Tags"] or ())}
            same(self.aget(v, f"tag/{tag}"), want, f"tag {tag}")
        self.check_labelsz(v, pts, body, focus)

    def check_elements(self, v: Version, pts: dict[Pos, Element]) -> None:
        got = self.aget(v, f"elements/{WIDE}_{WIDE}_{WIDE}/{LO}_{LO}_{LO}")
        assert (got is None) == (not pts), f"no elements: null, not {got}"
        same(got, pts, "elements")
        lo = self.rng.integers(LO, HI, size=3)
        size = self.rng.integers(1, HI - lo + 1)
        inside = {
            p: e for p, e in pts.items() if all(lo[i] <= p[i] < lo[i] + size[i] for i in range(3))
        }
        box = "{}_{}_{}/{}_{}_{}".format(*size.tolist(), *lo.tolist())
        same(self.aget(v, f"elements/{box}"), inside, f"elements/{box}")
        blocks = self.aget(v, "all-elements")
        filed = {}
        for name, elements in blocks.items():
            bx, by, bz = (int(c) for c in name.split(","))
            for e in elements:
                assert block_of(e["Pos"]) == (bx, by, bz), f"{e['Pos']} filed under {name}"
            filed.update(by_pos(elements, "all-elements"))
        assert filed == pts, "all-elements differs from the model"

    def check_labels(
        self, v: Version, pts: dict[Pos, Element], body: dict[Pos, int], focus: set[int]
    ) -> None:
        lists: dict[int, dict[Pos, Element]] = {}
        for p, e in pts.items():
            if body[p]:
                lists.setdefault(body[p], {})[p] = nr(e)
        live = set(v.body_svs())
        dead = sorted(self.seen - live)
        sample = {int(d) for d in self.rng.choice(dead, size=min(3, len(dead)), replace=False)}
        for label in sorted(live | focus | sample):
            same(self.aget(v, f"label/{label}"), lists.get(label, {}), f"label {label}")
        if lists:
            label = sorted(lists)[int(self.rng.integers(len(lists)))]
            want = {p: pts[p] for p in lists[label]}
            got = self.aget(v, f"label/{label}", relationships="true")
            same(got, want, f"label {label} with relationships")

    def check_labelsz(
        self, v: Version, pts: dict[Pos, Element], body: dict[Pos, int], focus: set[int]
    ) -> None:
        counts: dict[str, Counter[int]] = {t: Counter() for t in INDEX_TYPES}
        for p, e in pts.items():
            if body[p]:
                counts[e["Kind"]][body[p]] += 1
                if e["Kind"] in SYNAPTIC:
                    counts["AllSyn"][body[p]] += 1
        asked = sorted(focus | {self.never_seen()})
        # Every ranking in full; the other views of one index type in turn (they read the
        # same counts: enough to show each view ranks, cuts and pages as DVID's).
        turn = INDEX_TYPES[self.checks % len(INDEX_TYPES)]
        self.checks += 1
        for t in INDEX_TYPES:
            ranking = [
                {"Label": label, "Size": n}
                for label, n in sorted(counts[t].items(), key=lambda ln: (-ln[1], ln[0]))
            ]
            assert self.aget(v, f"top/1000/{t}", SIZES) == ranking, f"top {t}"
            if t != turn:
                continue
            k = int(self.rng.integers(1, 4))
            assert self.aget(v, f"top/{k}/{t}", SIZES) == ranking[:k], f"top {k} {t}"
            low = int(self.rng.integers(1, 4))
            want = [r for r in ranking if r["Size"] >= low]
            assert self.aget(v, f"threshold/{low}/{t}", SIZES) == want, f"threshold {low} {t}"
            start, n = int(self.rng.integers(0, 4)), int(self.rng.integers(1, 4))
            page = self.aget(v, f"threshold/1/{t}", SIZES, offset=start, n=n)
            assert page == ranking[start : start + n], f"threshold page {start},{n} {t}"
            got = self.aget(v, f"counts/{t}", SIZES, body=asked)
            assert got == [{"Label": b, t: counts[t][b]} for b in asked], f"counts {t}"
        label = int(self.rng.choice(asked))
        for t in ("PreSyn", "PostSyn", "AllSyn"):
            got = self.aget(v, f"count/{label}/{t}", SIZES)
            assert got == {"Label": label, t: counts[t][label]}, f"count {label} {t}"


def run(oracle: AnnotationOracle, steps: int) -> None:
    """``steps`` random edits over the DAG, each checked at its version and another; in
    the end every version is checked, and the open ones again after rebuilding their
    derived lists and counts (``POST reload`` must change nothing)."""
    rng = oracle.rng
    root = oracle.start()
    oracle.check_all(root, set())
    first, second = int(steps * rng.uniform(0.2, 0.35)), int(steps * rng.uniform(0.55, 0.7))
    open_: list[Version] = [root]
    ops = {**ELEMENT_OPS, **LABEL_OPS}
    names, weights = list(ops), np.array(list(ops.values()), float)
    pending = list(names)
    rng.shuffle(pending)
    for step in range(steps):
        open_ = grow_dag(oracle, root, open_, step, first, second)
        v = open_[int(rng.integers(len(open_)))]
        try:
            focus, op = None, ""
            untried = iter(list(pending))
            before = {p: oracle.body_at(v, p) for p in oracle.points[v.uuid]}
            while focus is None:  # each kind of step at least once, then at random
                op = next(untried, None) or str(rng.choice(names, p=weights / weights.sum()))
                focus = getattr(oracle, f"op_{op}")(v)
            if op in LABEL_OPS:
                moved = sum(oracle.body_at(v, p) != b for p, b in before.items())
                oracle.exercised["elements relabelled"] += moved
            if op in pending:
                pending.remove(op)
            focus = {int(label) for label in focus}  # voxel writes name numpy labels
            oracle.check_all(v, focus)
            others = [w for w in oracle.versions.values() if w is not v]
            if step == steps - 1:  # in the end, every version is as the model says
                for w in others:
                    oracle.check_all(w, set())
                for w in open_:
                    oracle.asend("POST", w, "reload")
                    oracle.c.post(oracle.aurl(w, "reload", SIZES)).raise_for_status()
                    oracle.note(f"reload at {w.uuid}")
                    oracle.check_all(w, set())
            elif others:  # a parent or a sibling: the edit did not leak
                oracle.check_all(others[int(rng.integers(len(others)))], focus)
        except AssertionError as e:
            raise AssertionError(f"seed {oracle.seed}, after: {oracle.history}\n{e}") from e
    assert not pending, f"never applicable: {pending}"
    for what in ("relationships dropped", "retargeted", "elements relabelled"):
        assert oracle.exercised[what], f"seed {oracle.seed}: no {what} ({oracle.exercised})"


@pytest.mark.parametrize(
    ("backend", "seed", "steps"),
    [
        ("memory", 1, STEPS),
        pytest.param("memory", 2, STEPS, marks=pytest.mark.reliability),  # make reliability
        ("local", 4, 12),
    ],
    indirect=["backend"],
)
def test_annotations_follow_the_model(api: Api, seed: int, steps: int) -> None:
    """The memory store runs the long sequences; one short one shows the records
    round-trip through files the same."""
    with api.c:  # one event-loop portal for every request, not one each
        run(AnnotationOracle(api, seed), steps)
