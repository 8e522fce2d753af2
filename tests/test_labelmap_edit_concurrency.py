"""Concurrent proofreading edits through two real server processes on one moto bucket.

A 64³ labelmap (blocks of 32³) holds twelve supervoxels, grouped into five bodies by a
bulk mapping load and two merges, in a root that is then committed and branched twice.
Client threads, half on each server, each make a fixed number of edits at the same open
branch: merges of two or three bodies and cleaves of some supervoxels of a body, chosen
from the mapping as the thread last read it (through either server), so rivals often
change a body before an edit of it arrives. Once each thread reserves new labels
(``POST nextlabel/{n}``) instead: half of them at that branch (serialized with the edits
by its lock), half at the sibling branch (racing them for the instance's label counter).
A 503 (a busy lock) is retried; a 400 is taken as the edit having become invalid, and is
checked below.

Afterwards, through both servers:

1. The acknowledged edits' MutationIDs are unique, and ``mutations`` lists exactly the
   acknowledged edits, in MutationID order, each as it was asked for (at the root, the
   setup merges; ``mutations-range`` from the root lists both).
2. Replaying those records in MutationID order on a plain dict (supervoxel -> body) from
   the bulk mapping load gives the servers' end state: ``mapping`` of every supervoxel,
   ``listlabels``, ``supervoxels`` and ``size`` of every body, and the body view of the
   voxels (and the sibling branch still shows the root's state). Each record must also
   be valid in the state the replay applies it to (an edit of a body a rival had already
   changed means two edits were not serialized), and every refused edit must be invalid
   in some state from the last acknowledgement its client had seen on (else it was
   refused for no reason).
3. Every body's label index holds, per block and per supervoxel, exactly the voxels a
   recount finds, and carries the MutationID of the last record that changed the body
   (:func:`tests.label_checks.index_problems` itself assumes that labels are their own
   bodies, so its recount helpers are used against the replayed mapping).
4. New labels, from cleaves and from reservations on both servers and branches, never
   overlap, all lie above every label ever written, and ``nextlabel`` lies above them.

The bucket keeps every object version (the ``replicas`` fixture of test_replicas), so a
failure also reports any conditional write that moto let two writers win (see
``test_replicas.MOTO_NOTE``): a mutation-log entry or redo record written twice, or a
counter value handed out twice.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from app.proto import labelmap_pb2 as pb
from tests import fixtures_stores, test_replicas
from tests import live_http as live
from tests.label_checks import block_counts, node_url, read_labels
from tests.test_replicas import PREFIX, Replicas, ok, run_threads, verdict

# The shared fixtures, bound here so this module also runs without a conftest.
s3_endpoint = fixtures_stores.s3_endpoint
replicas = test_replicas.replicas

pytestmark = pytest.mark.timeout(180)

SIZE, BLOCK = 64, 32
NAME = "seg"
SUPERVOXELS = list(range(1, 13))
#: The bulk mapping load: supervoxel -> body (the others start as their own bodies).
MAPPINGS = {2: 1, 3: 1, 5: 4, 8: 7, 9: 7}
#: Merges made before the race, [target, merged...].
SETUP_MERGES = [[10, 11], [12, 6]]
THREADS_PER_SERVER = 4
#: Each thread's operations: one of them a label reservation, the others edits.
OPS_PER_THREAD = 4
MAX_RESERVE = 4
RETRIES_503 = 40
SEED = 20261


def volume() -> np.ndarray:
    """Twelve supervoxels: four z slabs (one per half block) by three x slabs (the middle
    one crosses the block boundary), each spanning both y blocks."""
    z, _, x = np.mgrid[0:SIZE, 0:SIZE, 0:SIZE]
    return (1 + 3 * (z // 16) + np.minimum(x // 22, 2)).astype(np.uint64)


# --- the edits and what the clients saw ----------------------------------------------------


@dataclass
class Edit:
    """One edit a client sent: ``merge`` of ``labels`` or ``cleave`` of ``svs`` from
    ``label``, with the answer it finally got (after retrying 503s)."""

    kind: str
    thread: int
    server: int
    label: int = 0
    labels: list[int] = field(default_factory=list)
    svs: list[int] = field(default_factory=list)
    #: The largest MutationID acknowledged to any client when this edit was sent.
    seen: int = 0
    status: int = 0
    answer: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    def describe(self) -> str:
        if self.kind == "merge":
            what = f"merge {self.labels}"
        else:
            what = f"cleave {self.svs} from {self.label}"
        return f"t{self.thread} via {'AB'[self.server]}: {what} -> {self.status} {self.text}"


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    edits: list[Edit] = field(default_factory=list)
    #: (first, last, who asked): the labels nextlabel/{n} reserved.
    reservations: list[tuple[int, int, str]] = field(default_factory=list)
    acked_max: int = 0
    retries: int = 0
    failures: list[str] = field(default_factory=list)

    def acknowledged(self, mutid: int) -> None:
        with self.lock:
            self.acked_max = max(self.acked_max, mutid)


def post_retrying(
    client: httpx.Client, path: str, body: Any, tally: Tally, rng: random.Random
) -> httpx.Response:
    """POST, retrying while the server answers 503 (a busy transaction lock)."""
    for _ in range(RETRIES_503):
        response = client.post(path, content=orjson.dumps(body) if body is not None else b"")
        if response.status_code != 503:
            return response
        with tally.lock:
            tally.retries += 1
        time.sleep(rng.uniform(0.05, 0.3))
    return response


def read_view(client: httpx.Client, uuid: str, base: str = "") -> dict[int, int]:
    """supervoxel -> body, as one server shows it now."""
    r = ok(client.request("GET", node_url(base, uuid, NAME, "mapping"), json=SUPERVOXELS))
    return dict(zip(SUPERVOXELS, r.json(), strict=True))


def choose(rng: random.Random, view: dict[int, int], thread: int, server: int) -> Edit:
    """A merge of 2-3 bodies or a cleave of a proper subset of a body's supervoxels,
    valid in ``view`` (which may be stale by the time the edit arrives)."""
    members: dict[int, list[int]] = {}
    for sv, body in sorted(view.items()):
        if body:
            members.setdefault(body, []).append(sv)
    bodies = sorted(members)
    cleavable = [b for b in bodies if len(members[b]) > 1]
    if len(bodies) > 1 and (not cleavable or rng.random() < 0.5):
        labels = rng.sample(bodies, min(len(bodies), rng.choice((2, 2, 3))))
        return Edit("merge", thread, server, labels=labels)
    body = rng.choice(cleavable)
    svs = rng.sample(members[body], rng.randint(1, len(members[body]) - 1))
    return Edit("cleave", thread, server, label=body, svs=svs)


def worker(t: int, urls: list[str], uuid: str, sibling: str, tally: Tally) -> None:
    """Thread ``t``: edits at ``uuid`` through server ``t % 2``, and one reservation, at
    ``sibling`` for the first half of the threads."""
    server = t % 2
    rng = random.Random(SEED + t)
    clients = [httpx.Client(base_url=u, timeout=60) for u in urls]
    mine = clients[server]
    try:
        for op in range(OPS_PER_THREAD):
            if (op + t) % OPS_PER_THREAD == OPS_PER_THREAD - 1:  # one op, at staggered times
                n = rng.randint(1, MAX_RESERVE)
                node = sibling if t < THREADS_PER_SERVER else uuid
                who = f"t{t} via {'AB'[server]}: nextlabel/{n} at {node[:6]}"
                path = node_url("", node, NAME, f"nextlabel/{n}")
                r = post_retrying(mine, path, None, tally, rng)
                if r.status_code != 200:
                    with tally.lock:
                        tally.failures.append(f"{who} -> {r.status_code} {r.text}")
                    continue
                first, last = r.json()["start"], r.json()["end"]
                if last - first + 1 != n:
                    with tally.lock:
                        tally.failures.append(f"{who} reserved {first}..{last}")
                with tally.lock:
                    tally.reservations.append((first, last, who))
                continue
            edit = choose(rng, read_view(rng.choice(clients), uuid), t, server)
            with tally.lock:
                edit.seen = tally.acked_max
            if edit.kind == "merge":
                path, body = "merge", edit.labels
            else:
                path, body = f"cleave/{edit.label}", edit.svs
            r = post_retrying(mine, node_url("", uuid, NAME, path), body, tally, rng)
            edit.status, edit.text = r.status_code, r.text.strip()[:300]
            if r.status_code == 200:
                edit.answer = r.json()
                tally.acknowledged(edit.answer["MutationID"])
            with tally.lock:
                tally.edits.append(edit)
            if r.status_code not in (200, 400):
                with tally.lock:
                    tally.failures.append(f"unexpected answer: {edit.describe()}")
    except Exception as e:  # reported by the test
        with tally.lock:
            tally.failures.append(f"t{t} crashed: {e!r}")
    finally:
        for client in clients:
            client.close()


# --- the model -------------------------------------------------------------------------------

State = dict[int, int]  # supervoxel -> body


def members_of(state: State, body: int) -> set[int]:
    return {sv for sv, b in state.items() if b == body}


def why_invalid(state: State, kind: str, target: int, others: list[int], svs: list[int]) -> str:
    """Why the edit cannot apply to ``state`` (as the server decides it), or ''."""
    bodies = set(state.values())
    if kind == "merge":
        gone = [label for label in [target, *others] if label not in bodies]
        if gone:
            return f"labels {gone} are no bodies"
        if target in others:
            return "merges a body into itself"
        return ""
    mine = members_of(state, target)
    if not mine:
        return f"label {target} is no body"
    if not set(svs) <= mine:
        return f"supervoxels {sorted(set(svs) - mine)} are not in body {target}"
    if set(svs) == mine:
        return f"cleaves every supervoxel of body {target}"
    return ""


def apply_record(state: State, record: dict[str, Any]) -> State:
    after = dict(state)
    if record["Action"] == "merge-complete":
        merged = set(record["Labels"])
        for sv, body in state.items():
            if body in merged:
                after[sv] = record["Target"]
    else:
        for sv in record["CleavedSupervoxels"]:
            after[sv] = record["CleavedLabel"]
    return after


def initial_state() -> State:
    return {sv: MAPPINGS.get(sv, sv) for sv in SUPERVOXELS}


# --- store forks (what moto's non-atomic conditional writes may cause) ---------------------


def _written_twice(r: Replicas, prefix: str) -> list[str]:
    """Keys under ``prefix`` with more than one stored version (delete markers aside)."""
    seen: Counter[str] = Counter()
    pages = r.s3.get_paginator("list_object_versions").paginate(
        Bucket=r.bucket, Prefix=PREFIX + prefix
    )
    for page in pages:
        seen.update(v["Key"] for v in page.get("Versions", []))
    return sorted(key for key, n in seen.items() if n > 1)


def _repeated_values(r: Replicas, key: str) -> list[int]:
    contents, _ = test_replicas._versions(r, key)
    counts = Counter(int(c.split()[0]) for c in contents)
    return sorted(v for v, n in counts.items() if n > 1)


def edit_forks(r: Replicas, setup: Setup, nodes: list[str]) -> list[str]:
    """Conditional writes at the instance's versions that moto let two writers win."""
    forks = []
    data = f"data/{setup.data_uuid}"
    for node in nodes:
        for prefix in (f"{data}/log/{node}/", f"{data}/txn/{node}/redo-"):
            twice = _written_twice(r, prefix)
            if twice:
                forks.append(f"written by two transactions: {twice[:6]}")
    for key, what in (
        (f"meta/mutation-ids/{setup.root}", "MutationIDs"),
        (f"{data}/maxrepolabel", "label counter values"),
    ):
        repeated = _repeated_values(r, key)
        if repeated:
            forks.append(f"{what} stored more than once: {repeated[:10]}")
    return forks


# --- the test --------------------------------------------------------------------------------


@dataclass
class Setup:
    """The committed, grouped root and its two open branches."""

    root: str
    data_uuid: str
    merges: list[dict[str, Any]]  # the setup merges' answers
    edits: str  # the branch edited
    sibling: str  # its sibling


def setup_labelmap(a: str, b: str) -> Setup:
    """The labelmap and its bodies at a committed root (steps alternate between the
    servers), branched twice."""
    root = ok(live.post(f"{a}/api/repos", json={"alias": "edit-race"})).json()["root"]
    ok(
        live.post(
            f"{a}/api/repo/{root}/instance",
            json={
                "typename": "labelmap",
                "dataname": NAME,
                "BlockSize": f"{BLOCK},{BLOCK},{BLOCK}",
            },
        )
    )
    data_uuid = ok(live.get(node_url(b, root, NAME, "info"))).json()["Base"]["DataUUID"]
    # The grouping first, so the voxel ingest files each supervoxel under its body.
    ops = pb.MappingOps()
    for body in sorted(set(MAPPINGS.values())):
        svs = [sv for sv, mapped in MAPPINGS.items() if mapped == body]
        ops.mappings.append(pb.MappingOp(mapped=body, original=svs))
    ok(live.post(node_url(b, root, NAME, "mappings"), content=ops.SerializeToString()))
    raw = f"raw/0_1_2/{SIZE}_{SIZE}_{SIZE}/0_0_0"
    ok(live.post(node_url(a, root, NAME, raw), content=volume().tobytes(), timeout=60))
    merged = [
        ok(live.post(node_url(url, root, NAME, "merge"), json=labels)).json()
        for url, labels in zip((b, a), SETUP_MERGES, strict=True)
    ]
    ok(live.post(f"{b}/api/node/{root}/commit", json={"note": "grouped"}))
    edits, sibling = (
        ok(live.post(f"{url}/api/node/{root}/branch", json={"branch": name})).json()["child"]
        for url, name in ((a, "edits"), (b, "sibling"))
    )
    return Setup(root, data_uuid, merged, edits, sibling)


def check_log(url: str, records: list[dict[str, Any]], acked: list[tuple[Edit, int]]) -> list[str]:
    """Check 1: the log lists exactly the acknowledged edits, in MutationID order."""
    where = f"[via {url}]"
    problems = []
    ids = [r.get("MutationID") for r in records]
    if ids != sorted(ids):
        problems.append(f"{where} mutations are not in MutationID order: {ids}")
    for mutid, n in Counter(ids).items():
        if n > 1:
            problems.append(f"{where} MutationID {mutid} is logged {n} times")
    by_id = {r.get("MutationID"): r for r in records}
    wanted = {mutid for _, mutid in acked}
    for mutid in sorted(set(by_id) - wanted):
        problems.append(f"{where} logged edit {by_id[mutid]} was never acknowledged")
    for edit, mutid in acked:
        record = by_id.get(mutid)
        if record is None:
            problems.append(f"{where} acknowledged edit {mutid} is not logged: {edit.describe()}")
            continue
        if edit.kind == "merge":
            expected = {"Action": "merge-complete", "Target": edit.labels[0]}
            expected["Labels"] = edit.labels[1:]
        else:
            expected = {
                "Action": "cleave-complete",
                "OrigLabel": edit.label,
                "CleavedSupervoxels": edit.svs,
                "CleavedLabel": edit.answer.get("CleavedLabel"),
            }
        got = {k: record.get(k) for k in expected}
        if got != expected:
            problems.append(f"{where} record {mutid} is {got}, the edit asked for {expected}")
    return problems


@dataclass
class Replay:
    """The states after each record in MutationID order (``states[0]`` is the initial
    one), the records' ids, per body the last record that changed it, and records that
    did not fit the state they were applied to."""

    states: list[State] = field(default_factory=lambda: [initial_state()])
    ids: list[int] = field(default_factory=list)
    last_change: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def replay(records: list[dict[str, Any]], sizes: dict[int, int]) -> Replay:
    """Check 2's replay of the logged records on a plain dict."""
    out = Replay()
    problems, states, ids = out.problems, out.states, out.ids
    for record in sorted(records, key=lambda r: r["MutationID"]):
        state = states[-1]
        if record["Action"] == "merge-complete":
            args = ("merge", record["Target"], record["Labels"], [])
        elif record["Action"] == "cleave-complete":
            args = ("cleave", record["OrigLabel"], [], record["CleavedSupervoxels"])
        else:
            problems.append(f"unexpected record {record}")
            continue
        reason = why_invalid(state, *args)
        if reason:
            problems.append(
                f"record {record['MutationID']} ({record['Action']}) was applied where it is "
                f"invalid ({reason}): it was not serialized with the edits before it"
            )
        if record["Action"] == "cleave-complete":
            cut = set(record["CleavedSupervoxels"])
            remain = members_of(state, record["OrigLabel"]) - cut
            got = (record["CleavedSize"], record["RemainSize"])
            expected = (sum(sizes[s] for s in cut), sum(sizes[s] for s in remain))
            if got != expected:
                problems.append(
                    f"record {record['MutationID']}: cleaved/remain sizes {got} != {expected}"
                )
        states.append(apply_record(state, record))
        ids.append(record["MutationID"])
        changed = [record.get("Target"), record.get("OrigLabel"), record.get("CleavedLabel")]
        for body in changed:
            if body is not None:
                out.last_change[body] = record["MutationID"]
    return out


def check_refusals(edits: list[Edit], replayed: Replay) -> list[str]:
    """A refused edit must be invalid in some state from the one its client had seen on."""
    problems = []
    for edit in edits:
        if edit.status != 400:
            continue
        first = sum(1 for mutid in replayed.ids if mutid <= edit.seen)
        if edit.kind == "merge":
            args = (edit.kind, edit.labels[0], edit.labels[1:], [])
        else:
            args = (edit.kind, edit.label, [], edit.svs)
        if not any(why_invalid(state, *args) for state in replayed.states[first:]):
            problems.append(
                f"refused, though valid in every state it could meet: {edit.describe()}"
            )
    return problems


def check_end_state(
    client: httpx.Client, url: str, uuid: str, replayed: Replay, sizes: dict[int, int]
) -> list[str]:
    """Checks 2 and 3 through one server."""
    where = f"[via {url}]"
    problems = []
    state = replayed.states[-1]
    got = read_view(client, uuid, url)
    if got != state:
        problems.append(f"{where} mapping {got} != replayed {state}")
    bodies = sorted(set(state.values()))
    listed = np.frombuffer(ok(client.get(node_url(url, uuid, NAME, "listlabels"))).content, "<u8")
    if sorted(listed.tolist()) != bodies:
        problems.append(f"{where} listlabels {sorted(listed.tolist())} != replayed {bodies}")
    voxels = read_labels(client, url, uuid, NAME, SIZE)
    if not np.array_equal(voxels, volume()):
        problems.append(f"{where} the supervoxels changed, though no edit moves voxels")
    truth = block_counts(voxels, BLOCK)  # supervoxel -> {block key: voxels}
    for label in sorted(set(bodies) | set(listed.tolist())):
        mine = sorted(members_of(state, label))
        svs = client.get(node_url(url, uuid, NAME, f"supervoxels/{label}"))
        if svs.status_code != 200 or svs.json() != mine:
            problems.append(f"{where} supervoxels/{label}: {svs.status_code} {svs.text} != {mine}")
        size = client.get(node_url(url, uuid, NAME, f"size/{label}"))
        expected = {"voxels": sum(sizes[s] for s in mine)}
        if size.status_code != 200 or size.json() != expected:
            problems.append(f"{where} size/{label}: {size.status_code} {size.text} != {expected}")
        r = client.get(node_url(url, uuid, NAME, f"index/{label}"))
        if r.status_code != 200:
            problems.append(f"{where} index/{label}: {r.status_code} {r.text}")
            continue
        index = pb.LabelIndex()
        index.ParseFromString(r.content)
        found = {key: dict(entry.counts) for key, entry in index.blocks.items()}
        recount: dict[int, dict[int, int]] = {}
        for sv in mine:
            for key, n in truth[sv].items():
                recount.setdefault(key, {})[sv] = n
        if found != recount:
            problems.append(f"{where} index/{label} blocks {found} != voxel recount {recount}")
        last = replayed.last_change.get(label)
        if last is not None and index.last_mutid != last:
            problems.append(
                f"{where} index/{label} was last changed by mutation {index.last_mutid}, "
                f"the replay says {last}"
            )
    r = ok(client.get(node_url(url, uuid, NAME, f"raw/0_1_2/{SIZE}_{SIZE}_{SIZE}/0_0_0")))
    shown = np.frombuffer(r.content, "<u8").reshape(SIZE, SIZE, SIZE)
    lut = np.zeros(max(SUPERVOXELS) + 1, np.uint64)
    for sv, body in state.items():
        lut[sv] = body
    if not np.array_equal(shown, lut[volume()]):
        problems.append(f"{where} the body view of the voxels is not the replayed mapping's")
    return problems


def check_labels(
    acked: list[tuple[Edit, int]],
    tally: Tally,
    client: httpx.Client,
    urls: list[str],
    nodes: list[str],
) -> list[str]:
    """Check 4: new labels (of cleaves and reservations) never overlap, lie above every
    label written, and the next label lies above them all."""
    problems = []
    ranges = [
        (e.answer["CleavedLabel"], e.answer["CleavedLabel"], e.describe())
        for e, _ in acked
        if e.kind == "cleave"
    ]
    ranges += tally.reservations
    ranges.sort()
    widest: tuple[int, int, str] | None = None  # the range reaching furthest so far
    for first, last, who in ranges:
        if widest is not None and first <= widest[1]:
            problems.append(
                f"new labels handed out twice: {first}..{last} to {who}, "
                f"{widest[0]}..{widest[1]} to {widest[2]}"
            )
        if widest is None or last > widest[1]:
            widest = (first, last, who)
    low = [r for r in ranges if r[0] <= max(SUPERVOXELS)]
    if low:
        problems.append(f"new labels not above the written ones: {low}")
    for url in urls:
        for node in nodes:
            nxt = ok(client.get(node_url(url, node, NAME, "nextlabel"))).json()["nextlabel"]
            if widest is not None and nxt <= widest[1]:
                problems.append(f"[via {url}] nextlabel {nxt} at {node} was handed out already")
    return problems


def test_concurrent_merges_and_cleaves_replay_exactly(replicas: Replicas) -> None:
    a, b = replicas.urls
    setup = setup_labelmap(a, b)
    node = setup.edits
    sizes = dict(zip(*(v.tolist() for v in np.unique(volume(), return_counts=True)), strict=True))
    setup_edits = [
        (Edit("merge", -1, 0, labels=labels, status=200, answer=answer), answer["MutationID"])
        for labels, answer in zip(SETUP_MERGES, setup.merges, strict=True)
    ]
    tally = Tally(acked_max=max(m for _, m in setup_edits))

    work = [
        (worker, (t, replicas.urls, node, setup.sibling, tally))
        for t in range(2 * THREADS_PER_SERVER)
    ]
    elapsed = run_threads(work, 150)

    edits = tally.edits
    acked = [(e, e.answer["MutationID"]) for e in edits if e.status == 200]
    kinds = Counter((e.kind, e.status) for e in edits)
    summary = (
        f"{len(edits)} edits in {elapsed:.1f}s: {dict(kinds)}, {tally.retries} 503 retries, "
        f"{len(tally.reservations)} reservations"
    )
    problems = [f"client: {f}" for f in tally.failures]
    for mutid, n in Counter(m for _, m in setup_edits + acked).items():
        if n > 1:
            problems.append(f"MutationID {mutid} acknowledged {n} times")

    with httpx.Client(timeout=60) as client:
        records: list[list[dict[str, Any]]] = []
        at_root: list[dict[str, Any]] = []
        for url in replicas.urls:
            at_root = ok(client.get(node_url(url, setup.root, NAME, "mutations"))).json()
            problems += check_log(url, at_root, setup_edits)
            at_node = ok(client.get(node_url(url, node, NAME, "mutations"))).json()
            problems += check_log(url, at_node, acked)
            ranged = client.get(node_url(url, node, NAME, f"mutations-range/{setup.root}/{node}"))
            if ok(ranged).json() != at_root + at_node:
                problems.append(f"[via {url}] mutations-range is not the root's then the branch's")
            records.append(at_root + at_node)
        if records[0] != records[1]:
            problems.append(
                f"the servers list different mutations:\nA {records[0]}\nB {records[1]}"
            )
        replayed = replay(records[0], sizes)
        problems += replayed.problems
        problems += check_refusals(edits, replayed)
        grouped = replay(at_root, sizes)  # what the sibling holds: none of the edits
        for url in replicas.urls:
            problems += check_end_state(client, url, node, replayed, sizes)
            problems += check_end_state(client, url, setup.sibling, grouped, sizes)
        problems += check_labels(acked, tally, client, replicas.urls, [node, setup.sibling])

    forks = edit_forks(replicas, setup, [setup.root, node, setup.sibling])
    report = f"{summary}\n{verdict(replicas, problems, forks)}"
    print(report)
    if problems:
        pytest.fail(report, pytrace=False)
    # The race really ran: both kinds of edit were acknowledged.
    assert kinds[("merge", 200)] and kinds[("cleave", 200)], summary
