"""Store faults under a mixed workload through two server processes (issue 17).

Two real ``dvid-cloud serve`` processes share one S3 bucket (a moto server) through a
:class:`tests.fault_proxy.FaultProxy` on 127.0.0.1, which fails 10 % of all store requests
(metadata through boto3, chunks through tensorstore) with 500/503 errors, 503 SlowDown
throttling, lost responses (forwarded, then 503), stalls past the clients' patience, and
reset connections. One repo is set up (faults off), committed and branched once per
client; seeded clients then work at once, each on its own branch and the versions it makes
there, each sending every request to either server at random and, like a real client,
retrying a 502/503/504 a bounded number of times:

* voxel writes: uint8blk ``POST raw`` of random boxes, labelmap ``POST raw`` of whole
  blocks with new supervoxels;
* label edits: labelmap ``merge`` and ``cleave``;
* keyvalue ``POST`` and ``DELETE``, annotation ``POST elements``, neuronjson ``POST key``;
* ``commit``, ``newversion`` and ``branch``; and reads, checked against the model as they
  come back.

A serial model applies each acknowledged request. A request that ended without one (every
attempt answered 502/503/504) may or may not have taken effect, but never partly: it is
settled at once by reading what it touched (through either server, faults still on),
which must be all old or all new; the model then takes what was read. The same holds for
edits and version operations that got a fault and were retried, since a retry of a merge,
cleave, commit or newversion that had already taken effect is refused (400) or makes a
second child. Since the servers' store clients retry, few faults reach clients; so that
failed writes surely occur, a short burst follows: one client's voxel writes, each tried
once, while 30 % of chunk reads and writes fail.

Afterwards, with the proxy healed, both servers must show every version of the model
exactly: voxels, the labelmap's mapping, label indices, sizes and label lists (against a
recount of the voxels, as in :mod:`tests.label_checks`), keys and values, annotations,
neuronjson documents, lock states and the version DAG. Every answer the workload got is
counted: a request may only fail with 502, 503 or 504, never 500, and a refusal (4xx) is
only expected where a retry met its own earlier effect.
"""

from __future__ import annotations

import copy
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from app.proto import keyvalue_pb2 as kv_pb
from app.proto import labelmap_pb2 as pb
from tests import fixtures_stores
from tests import live_http as live
from tests.dvid_process import DvidServer, log_tails
from tests.fault_proxy import FaultProxy
from tests.fixtures_stores import (
    make_s3_store,
    proxied_s3_server,
)
from tests.label_checks import block_counts
from tests.test_chunk_faults import CHUNK_KEY, QUICK_KINDS
from tests.test_replicas import run_threads

# The shared moto fixture, bound here so this module also runs without a conftest.
s3_endpoint = fixtures_stores.s3_endpoint

#: A guard against hangs only: on a loaded 2-core machine the run has taken minutes.
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

SEED = 20261203
#: Operations in all, shared by WORKERS clients at once, each on its own branch: their
#: waits (store clients back off between retries, stalls) overlap.
OPERATIONS = 180
WORKERS = 6
#: Versions checked at once at the end.
CHECKERS = 6
FAULT_RATE = 0.10
#: Drawn uniformly, so repeats weigh: a stall costs PROXY_DELAY seconds of idle waiting,
#: so it is the rarest kind (still about 1 % of all store requests).
FAULT_KINDS = (
    "error",
    "error",
    "slowdown",
    "slowdown",
    "lost",
    "lost",
    "reset",
    "reset",
    "timeout",
)
#: The proxy holds a stalled request this long, then drops it; tensorstore gives up on a
#: silent transfer after STALL_SECONDS, boto3 sees the connection drop.
PROXY_DELAY = 1.5
STALL_SECONDS = "1"
PROXY_CONNECTIONS = 512
#: tensorstore tries a chunk request twice here (7 times by default), boto3 a metadata
#: request 5 times: most faults are absorbed, a few reach clients as 503s in a run.
TENSORSTORE_RETRIES = "1"
#: So that failed writes surely occur, and are seen to be all old or all new, a burst
#: follows the mixed workload: one client's voxel writes, each tried once, while this
#: share of chunk reads and writes fail (faults that answer at once).
BURST_RATE = 0.3
BURST_WRITES = 12
#: A client tries a request this many times while it answers 502, 503 or 504; a read that
#: settles what a failed request left, longer.
ATTEMPTS = 5
READ_ATTEMPTS = 10
RETRYABLE = frozenset({502, 503, 504})
SIZE, BLOCK = 64, 32
MAX_NODES = 4  # versions per client
KV_KEYS = [f"k{i}" for i in range(6)]
BODY_IDS = list(range(1, 9))
USER = {"u": "reliability"}


# --- the rig -------------------------------------------------------------------------------


@dataclass
class Rig:
    urls: list[str]
    proxy: FaultProxy
    logs: list[Path]

    def log_tails(self) -> str:
        return log_tails(self.urls, self.logs)


@pytest.fixture(scope="module")
def rig(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("reliability-store-faults")
    store = make_s3_store(s3_endpoint)  # a fresh bucket, made directly on moto
    # Each connection holds a slot while kept alive: two servers' boto3 and tensorstore
    # pools, with several clients at once, keep far more than the default 64 open.
    with FaultProxy(
        s3_endpoint, seed=SEED, delay=PROXY_DELAY, max_connections=PROXY_CONNECTIONS
    ) as proxy:
        config, env = proxied_s3_server(
            tmp, store.bucket, proxy.url, TENSORSTORE_RETRIES, STALL_SECONDS
        )
        logs = [tmp / "server-a.log", tmp / "server-b.log"]
        servers = [DvidServer(log, env, config=config) for log in logs]
        try:
            urls = [server.start().url for server in servers]
            yield Rig(urls, proxy, logs)
        finally:
            proxy.heal()
            for server in servers:
                server.stop()
            store.close()


# --- the client ----------------------------------------------------------------------------


@dataclass
class Answer:
    """The last answer to a request (status 0: none), and whether some attempt got a 5xx
    (so it may have taken effect)."""

    status: int
    faulted: bool
    response: httpx.Response | None

    @property
    def acked(self) -> bool:
        return self.status == 200

    @property
    def gave_up(self) -> bool:
        return self.status >= 500 or self.status == 0

    def json(self) -> Any:
        assert self.response is not None
        return self.response.json()


class Client:
    """Sends each attempt to one of the servers at random; retries 502/503/504 up to
    ``ATTEMPTS`` times. Counts every status, and reports any answer outside ``expected``
    (a 4xx after a fault only where ``refused_after_fault`` allows it)."""

    def __init__(self, urls: list[str], rng: random.Random) -> None:
        # No kept-alive connections: the server closes an idle one after 5 s (uvicorn's
        # default), and a request sent on it just then meets a reset, which is the
        # client's race, not a failure of the server.
        fresh = httpx.Limits(max_keepalive_connections=0)
        self.http = [httpx.Client(base_url=url, timeout=live.TIMEOUT, limits=fresh) for url in urls]
        self.rng = rng
        self.attempts = ATTEMPTS
        self.statuses: Counter[int] = Counter()
        self.retries = 0
        self.problems: list[str] = []

    def close(self) -> None:
        for client in self.http:
            client.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        expected: tuple[int, ...] = (200,),
        refused_after_fault: bool = False,
        attempts: int | None = None,
        **kwargs: Any,
    ) -> Answer:
        faulted = False
        status, response = 0, None
        for attempt in range(attempts or self.attempts):
            if attempt:
                self.retries += 1
                time.sleep(self.rng.uniform(0.02, 0.1))
            server = self.rng.randrange(len(self.http))
            where = f"{method} {path} via {'AB'[server]}"
            try:
                response = self.http[server].request(method, path, **kwargs)
            except httpx.TransportError as e:
                self.statuses[0] += 1
                self.problems.append(f"{where}: no answer: {e!r}")
                return Answer(0, True, None)
            status = response.status_code
            self.statuses[status] += 1
            faulted = faulted or status >= 500  # it may have taken effect
            if status in RETRYABLE:
                continue
            refusal_ok = faulted and refused_after_fault and 400 <= status < 500
            if status not in expected and not refusal_ok:
                self.problems.append(f"{where}: {status} {response.text.strip()[:300]}")
            return Answer(status, faulted, response)
        return Answer(status, faulted, response)


# --- the model -----------------------------------------------------------------------------


Box = tuple[slice, slice, slice]


@dataclass
class Node:
    """What one version must hold."""

    uuid: str
    parent: str | None
    branch: str
    locked: bool
    grey: np.ndarray  # uint8, ZYX
    svs: np.ndarray  # uint64 supervoxels, ZYX
    bodies: dict[int, int]  # supervoxel -> body, for every supervoxel written here
    kv: dict[str, bytes] = field(default_factory=dict)
    syn: dict[tuple[int, ...], dict[str, Any]] = field(default_factory=dict)
    nj: dict[int, dict[str, Any]] = field(default_factory=dict)
    branches: set[str] = field(default_factory=set)  # branches of its children

    def child(self, uuid: str, branch: str) -> Node:
        twin = copy.deepcopy(self)
        twin.uuid, twin.parent, twin.branch, twin.locked = uuid, self.uuid, branch, False
        twin.branches = set()
        return twin

    def mapping(self) -> dict[int, int]:
        """supervoxel -> body, for the supervoxels with voxels."""
        present = np.unique(self.svs).tolist()
        return {sv: self.bodies.get(sv, sv) for sv in present if sv}

    def members(self) -> dict[int, list[int]]:
        found: dict[int, list[int]] = {}
        for sv, body in sorted(self.mapping().items()):
            found.setdefault(body, []).append(sv)
        return found


def xyz(values: tuple[int, ...]) -> str:
    return "_".join(str(v) for v in values)


def raw_path(name: str, size: tuple[int, ...], offset: tuple[int, ...]) -> str:
    return f"{name}/raw/0_1_2/{xyz(size)}/{xyz(offset)}"


def box_of(size: tuple[int, ...], offset: tuple[int, ...]) -> Box:
    (nx, ny, nz), (x, y, z) = size, offset
    return slice(z, z + nz), slice(y, y + ny), slice(x, x + nx)


def element(pos: tuple[int, ...], kind: str, tag: str) -> dict[str, Any]:
    """An annotation as the server answers it (no relationships)."""
    return {"Pos": list(pos), "Kind": kind, "Tags": [tag], "Prop": {"tag": tag}, "Rels": None}


#: Operations on an open version, by weight (commits and new versions are drawn apart).
WRITES: dict[str, int] = {
    "grey_write": 3,
    "seg_write": 2,
    "merge": 2,
    "cleave": 2,
    "kv_post": 3,
    "kv_delete": 1,
    "syn_post": 2,
    "nj_post": 2,
    "read_check": 2,
}


class Workload:
    """Seeded operations on the versions of one repo, and their serial model."""

    def __init__(
        self, client: Client, seed: int, root: str = "", top: int = 0, name: str = ""
    ) -> None:
        self.c = client
        self.name = name  # in names that must be unique in the repo (branches)
        self.rng = random.Random(seed)
        self.nodes: dict[str, Node] = {}
        self.root = root
        self.top = top  # the largest label seen anywhere
        self.serial = 0
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.problems: list[str] = []

    def unique(self, what: str) -> str:
        self.serial += 1
        return f"{self.name}{what}{self.serial}"

    def fresh_label(self) -> int:
        self.top += 1
        return self.top

    def url(self, node: Node, path: str) -> str:
        return f"/api/node/{node.uuid}/{path}"

    # --- setup (faults off) ------------------------------------------------------------------

    def setup(self) -> None:
        root = self.c.send("POST", "/api/repos", json={"alias": "store-faults"}).json()["root"]
        self.root = root
        for typename, name in [
            ("uint8blk", "grey"),
            ("labelmap", "seg"),
            ("keyvalue", "kv"),
            ("annotation", "syn"),
            ("neuronjson", "nj"),
        ]:
            body = {"typename": typename, "dataname": name}
            if typename in ("uint8blk", "labelmap"):
                body["BlockSize"] = f"{BLOCK},{BLOCK},{BLOCK}"
            self.c.send("POST", f"/api/repo/{root}/instance", json=body)
        # Two supervoxels per block, split in x at the middle.
        z, y, x = np.mgrid[0:SIZE, 0:SIZE, 0:SIZE]
        svs = 1 + 2 * ((z // BLOCK) * 4 + (y // BLOCK) * 2 + x // BLOCK) + (x % BLOCK) // 16
        svs = svs.astype(np.uint64)
        self.top = int(svs.max())
        grey = np.frombuffer(self.rng.randbytes(SIZE**3), np.uint8).reshape((SIZE,) * 3)
        node = Node(
            root, None, "", False, grey.copy(), svs, {sv: sv for sv in range(1, self.top + 1)}
        )
        self.nodes[root] = node
        full = (SIZE, SIZE, SIZE)
        self.c.send(
            "POST", self.url(node, raw_path("grey", full, (0, 0, 0))), content=grey.tobytes()
        )
        self.c.send("POST", self.url(node, raw_path("seg", full, (0, 0, 0))), content=svs.tobytes())
        for _ in range(3):
            for op in (self.kv_post, self.syn_post, self.nj_post):
                op(node)

    # --- plumbing ----------------------------------------------------------------------------

    def open_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.locked]

    def read(self, path: str, **kwargs: Any) -> httpx.Response | None:
        """A read during faults (retried like any request): the answer, or None (and a
        problem) if every attempt failed."""
        answer = self.c.send("GET", path, expected=(200, 404), attempts=READ_ATTEMPTS, **kwargs)
        if answer.gave_up or answer.response is None:
            self.problems.append(f"GET {path}: unreadable after {READ_ATTEMPTS} attempts")
            return None
        return answer.response

    def settle(
        self,
        what: str,
        answer: Answer,
        read: Callable[[], Any],
        states: list[Any],
        same: Callable[[Any, Any], bool] = lambda a, b: bool(a == b),
    ) -> Any:
        """What a request left behind. ``states`` are what it may have left: [old, new]
        (``new`` may be a predicate). A request acknowledged at its first attempt is taken
        at its word (the final checks read it); the others are read back now."""
        self.outcomes[what, outcome(answer)] += 1
        old, new = states[0], states[-1]
        if answer.acked and not answer.faulted:
            return new
        if not answer.faulted:
            return old  # refused, and reported by the client as unexpected
        got = read()
        if got is None:
            self.problems.append(f"{what}: could not read what a failed request left")
            return None
        allowed = [new] if answer.acked else states
        if not any(s(got) if callable(s) else same(got, s) for s in allowed):
            half = "acknowledged but not visible" if answer.acked else "half-visible"
            self.problems.append(
                f"{what} ({answer.status} after a fault): {half}: read {short(got)}, "
                f"allowed {[short(s) for s in allowed]}"
            )
        return got

    # --- voxel writes --------------------------------------------------------------------------

    def grey_write(self, node: Node) -> None:
        size = tuple(self.rng.randint(4, 40) for _ in range(3))
        offset = tuple(self.rng.randint(0, SIZE - s) for s in size)
        box = box_of(size, offset)
        new = np.frombuffer(self.rng.randbytes(int(np.prod(size))), np.uint8)
        new = new.reshape(size[::-1])
        answer = self.c.send(
            "POST", self.url(node, raw_path("grey", size, offset)), content=new.tobytes()
        )

        def read() -> np.ndarray | None:
            r = self.read(self.url(node, raw_path("grey", size, offset)))
            return None if r is None else np.frombuffer(r.content, np.uint8).reshape(new.shape)

        got = self.settle("grey write", answer, read, [node.grey[box].copy(), new], same_array)
        if got is not None:
            node.grey[box] = got

    def seg_write(self, node: Node) -> None:
        """A whole block of two new supervoxels, split along a random axis."""
        corner = tuple(BLOCK * self.rng.randint(0, 1) for _ in range(3))
        size = (BLOCK, BLOCK, BLOCK)
        box = box_of(size, corner)
        axis, cut = self.rng.randint(0, 2), self.rng.randint(4, BLOCK - 4)
        a, b = self.fresh_label(), self.fresh_label()
        new = np.full(size, a, np.uint64)
        new[tuple(slice(cut, None) if i == axis else slice(None) for i in range(3))] = b
        path = self.url(node, raw_path("seg", size, corner))
        answer = self.c.send("POST", path, content=new.tobytes())

        def read() -> np.ndarray | None:
            r = self.read(path, params={"supervoxels": "true"})
            return None if r is None else np.frombuffer(r.content, "<u8").reshape(size)

        got = self.settle("seg write", answer, read, [node.svs[box].copy(), new], same_array)
        if got is not None:
            node.svs[box] = got
            for label in np.unique(got).tolist():
                node.bodies.setdefault(label, label)

    # --- label edits ---------------------------------------------------------------------------

    def read_mapping(self, node: Node, svs: list[int]) -> dict[int, int] | None:
        r = self.read(self.url(node, "seg/mapping"), json=svs)
        return None if r is None else dict(zip(svs, r.json(), strict=True))

    def merge(self, node: Node) -> None:
        members = node.members()
        if len(members) < 2:
            return self.seg_write(node)
        target, other = self.rng.sample(sorted(members), 2)
        old = node.mapping()
        new = {sv: target if body == other else body for sv, body in old.items()}
        answer = self.c.send(
            "POST", self.url(node, "seg/merge"), json=[target, other], refused_after_fault=True
        )
        got = self.settle("merge", answer, lambda: self.read_mapping(node, sorted(old)), [old, new])
        if got is not None:
            node.bodies.update(got)

    def cleave(self, node: Node) -> None:
        members = node.members()
        cleavable = [body for body, svs in members.items() if len(svs) > 1]
        if not cleavable:
            return self.merge(node)
        body = self.rng.choice(cleavable)
        cut = sorted(self.rng.sample(members[body], self.rng.randint(1, len(members[body]) - 1)))
        old = node.mapping()
        answer = self.c.send(
            "POST", self.url(node, f"seg/cleave/{body}"), json=cut, refused_after_fault=True
        )
        top = self.top

        def cleaved(got: dict[int, int]) -> bool:
            """``cut`` moved to one new label (the answer's, if acknowledged), the rest
            unchanged."""
            labels = {got[sv] for sv in cut}
            if len(labels) != 1 or any(got[sv] != old[sv] for sv in old if sv not in cut):
                return False
            label = labels.pop()
            if answer.acked:
                return bool(label == answer.json()["CleavedLabel"])
            return label > top

        if answer.acked:
            label = answer.json()["CleavedLabel"]
            if label <= top:
                self.problems.append(f"cleave of {cut} from {body}: label {label} is not new")
            self.top = max(self.top, label)
            new: Any = {sv: label if sv in cut else b for sv, b in old.items()}
        else:
            new = cleaved
        got = self.settle(
            "cleave", answer, lambda: self.read_mapping(node, sorted(old)), [old, new]
        )
        if got is not None:
            node.bodies.update(got)
            self.top = max(self.top, *got.values())

    # --- keyvalue, annotation, neuronjson ----------------------------------------------------

    def kv_post(self, node: Node, delete: bool = False) -> None:
        key = self.rng.choice(KV_KEYS)
        path = self.url(node, f"kv/key/{key}")
        value: bytes | None = None
        if delete:
            answer = self.c.send("DELETE", path)
        else:
            value = (self.unique("v").encode() + self.rng.randbytes(2000))[
                : self.rng.randint(5, 2000)
            ]
            answer = self.c.send("POST", path, content=value)

        def read() -> Any:
            r = self.read(path)
            return r if r is None else (r.content if r.status_code == 200 else ABSENT)

        old = node.kv.get(key, ABSENT)
        got = self.settle(
            "kv delete" if delete else "kv post", answer, read, [old, ABSENT if delete else value]
        )
        if got is ABSENT:
            node.kv.pop(key, None)
        elif got is not None:
            node.kv[key] = got

    def kv_delete(self, node: Node) -> None:
        self.kv_post(node, delete=True)

    def read_elements(self, node: Node) -> dict[tuple[int, ...], dict[str, Any]] | None:
        r = self.read(self.url(node, f"syn/elements/{SIZE}_{SIZE}_{SIZE}/0_0_0"))
        if r is None:
            return None
        return {tuple(e["Pos"]): e for e in (r.json() or [])}

    def syn_post(self, node: Node) -> None:
        tag = self.unique("t")
        posted = [
            element(
                tuple(self.rng.randrange(0, SIZE, 8) for _ in range(3)),
                self.rng.choice(["PreSyn", "PostSyn", "Note"]),
                tag,
            )
            for _ in range(self.rng.randint(1, 3))
        ]
        old = dict(node.syn)
        new = {**old, **{tuple(e["Pos"]): e for e in posted}}
        body = [{k: v for k, v in e.items() if k != "Rels"} for e in posted]
        answer = self.c.send("POST", self.url(node, "syn/elements"), json=body)
        got = self.settle("annotation post", answer, lambda: self.read_elements(node), [old, new])
        if got is not None:
            node.syn = got

    def nj_post(self, node: Node) -> None:
        bodyid = self.rng.choice(BODY_IDS)
        doc = {
            "bodyid": bodyid,
            "status": self.rng.choice(["traced", "orphan"]),
            "type": self.unique("T"),
        }
        path = self.url(node, f"nj/key/{bodyid}")
        answer = self.c.send("POST", path, content=orjson.dumps(doc), params=USER)

        def read() -> Any:
            r = self.read(path)
            return r if r is None else (r.json() if r.status_code == 200 else ABSENT)

        got = self.settle("neuronjson post", answer, read, [node.nj.get(bodyid, ABSENT), doc])
        if got is ABSENT:
            node.nj.pop(bodyid, None)
        elif got is not None:
            node.nj[bodyid] = got

    # --- versions ----------------------------------------------------------------------------

    def commit(self, node: Node) -> None:
        answer = self.c.send(
            "POST",
            f"/api/node/{node.uuid}/commit",
            json={"note": self.unique("commit")},
            refused_after_fault=True,
        )

        def read() -> bool | None:
            r = self.read(f"/api/node/{node.uuid}/status")
            return None if r is None else bool(r.json()["Locked"])

        got = self.settle("commit", answer, read, [False, True])
        if got is not None:
            node.locked = got

    def new_child(self, parent: Node) -> None:
        """``newversion`` if the parent has no child on its own branch yet, else a branch."""
        branch = parent.branch
        if branch in parent.branches:
            branch = self.unique("b")
            what, path, body = "branch", "branch", {"branch": branch}
        else:
            what, path, body = "newversion", "newversion", {"note": self.unique("n")}
        answer = self.c.send(
            "POST", f"/api/node/{parent.uuid}/{path}", json=body, refused_after_fault=True
        )
        self.outcomes[what, outcome(answer)] += 1
        if answer.acked:
            parent.branches.add(branch)
            child = answer.json()["child"]
            self.nodes[child] = parent.child(child, branch)
        if answer.faulted:  # children made by attempts whose answers were lost
            self.adopt_children(parent)

    def dag(self) -> dict[str, Any] | None:
        r = self.read(f"/api/repo/{self.root}/info")
        return None if r is None else r.json()["DAG"]["Nodes"]

    def adopt_children(self, parent: Node) -> None:
        """Children the DAG shows that the model lacks: made by a request that failed (or
        was retried); each must hold its parent's data, checked at the end like any
        version."""
        nodes = self.dag()
        if nodes is None:
            return
        vid = nodes[parent.uuid]["VersionID"]
        for uuid, info in nodes.items():
            if vid in info["Parents"] and uuid not in self.nodes:
                parent.branches.add(info["Branch"])
                self.nodes[uuid] = parent.child(uuid, info["Branch"])

    # --- reads during faults -----------------------------------------------------------------

    def read_check(self, node: Node) -> None:
        """A read must answer the model (or fail with 502/503/504)."""
        if self.rng.random() < 0.5:
            key = self.rng.choice(KV_KEYS)
            r = self.c.send("GET", self.url(node, f"kv/key/{key}"), expected=(200, 404))
            wanted: Any = node.kv.get(key, ABSENT)
            got: Any = (r.response.content if r.status == 200 else ABSENT) if r.response else None
        else:
            bodyid = self.rng.choice(BODY_IDS)
            r = self.c.send("GET", self.url(node, f"nj/key/{bodyid}"), expected=(200, 404))
            wanted = node.nj.get(bodyid, ABSENT)
            got = (r.response.json() if r.status == 200 else ABSENT) if r.response else None
        self.outcomes["read", outcome(r)] += 1
        if not r.gave_up and got != wanted:
            self.problems.append(f"read during faults: {short(got)}, model {short(wanted)}")

    # --- the run -------------------------------------------------------------------------------

    def step(self) -> None:
        open_nodes = self.open_nodes()
        room = len(self.nodes) < MAX_NODES
        roll = self.rng.random()
        if not open_nodes or (room and roll < 0.05):
            locked = [n for n in self.nodes.values() if n.locked]
            if locked:
                return self.new_child(self.rng.choice(locked))
        if open_nodes and room and roll < 0.1:
            return self.commit(self.rng.choice(open_nodes))
        if not open_nodes:
            return
        ops, weights = zip(*WRITES.items(), strict=True)
        op = self.rng.choices(ops, weights)[0]
        getattr(self, op)(self.rng.choice(open_nodes))

    def run(self, operations: int) -> None:
        try:
            for _ in range(operations):
                self.step()
        except Exception:  # reported by the test (this runs in a thread)
            self.problems.append(f"the workload crashed:\n{traceback.format_exc()}")


ABSENT = "<absent>"


def outcome(answer: Answer) -> str:
    if answer.acked:
        return "acknowledged after a retry" if answer.faulted else "acknowledged"
    if answer.gave_up:
        return "failed"
    return f"{answer.status}{' after a fault' if answer.faulted else ''}"


def same_array(a: Any, b: Any) -> bool:
    return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)


def short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        labels = np.unique(value)
        return f"<array of {labels.size} values: {labels[:6].tolist()}...>"
    if callable(value):
        return f"<{value.__doc__ or value.__name__}>".replace("\n", " ")
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


# --- the final checks (faults off) ---------------------------------------------------------


def check_node(http: httpx.Client, node: Node) -> list[str]:
    """Everything ``node`` holds, through one server (batch reads, a dozen requests)."""
    where = f"[{http.base_url}] node {node.uuid[:8]}"
    problems: list[str] = []

    def get(path: str, **kwargs: Any) -> httpx.Response:
        return http.request("GET", f"/api/node/{node.uuid}/{path}", **kwargs)

    status = get("status").json()
    if status != {"Locked": node.locked}:
        problems.append(f"status {status}, model Locked={node.locked}")
    full = raw_path("grey", (SIZE,) * 3, (0, 0, 0))
    grey = np.frombuffer(get(full).content, np.uint8).reshape((SIZE,) * 3)
    if not np.array_equal(grey, node.grey):
        problems.append(f"grey differs from the model in {np.sum(grey != node.grey)} voxels")
    problems += seg_problems(get, node)
    # Keys by listing (a batch read answers a missing key with an empty value).
    listed = get("kv/keys").json()
    wanted = kv_pb.Keys(keys=KV_KEYS).SerializeToString()
    values = {
        kv.key: kv.value
        for kv in kv_pb.KeyValues.FromString(get("kv/keyvalues", content=wanted).content).kvs
    }
    got_kv = {key: values.get(key) for key in listed}
    if got_kv != node.kv:
        problems.append(f"keyvalues {short(got_kv)} != model {short(node.kv)}")
    r = get(f"syn/elements/{SIZE}_{SIZE}_{SIZE}/0_0_0")
    elements = {tuple(e["Pos"]): e for e in (r.json() or [])}
    if elements != node.syn:
        problems.append(f"annotations {short(elements)} != model {short(node.syn)}")
    listed = sorted(int(key) for key in get("nj/keys").json())
    docs = get("nj/keyvalues", params={"json": "true"}, content=orjson.dumps(BODY_IDS)).json()
    got_nj = {int(key): doc for key, doc in docs.items()}
    if listed != sorted(node.nj) or got_nj != node.nj:
        problems.append(
            f"neuronjson keys {listed}, documents {short(got_nj)} != model {short(node.nj)}"
        )
    return [f"{where}: {p}" for p in problems]


def seg_problems(get: Callable[..., httpx.Response], node: Node) -> list[str]:
    """The labelmap's records against its voxels (as tests/label_checks does, with bodies
    of several supervoxels): voxels, body view, mapping, listlabels, and per body its
    label index and size, recounted from the model's voxels; labels without voxels any
    more have neither."""
    problems = []
    full = raw_path("seg", (SIZE,) * 3, (0, 0, 0))
    svs = np.frombuffer(get(full, params={"supervoxels": "true"}).content, "<u8")
    if not np.array_equal(svs.reshape(node.svs.shape), node.svs):
        problems.append(
            f"supervoxels differ from the model in {np.sum(svs != node.svs.ravel())} voxels"
        )
    mapping = node.mapping()
    labels, inverse = np.unique(node.svs, return_inverse=True)
    bodies = np.array([mapping.get(sv, 0) for sv in labels.tolist()], np.uint64)
    shown = np.frombuffer(get(full).content, "<u8")
    if not np.array_equal(shown, bodies[inverse.ravel()]):
        problems.append("the body view of the voxels is not the model's mapping")
    got = get("seg/mapping", json=sorted(mapping)).json()
    if dict(zip(sorted(mapping), got, strict=True)) != mapping:
        problems.append(f"mapping {got} != model {[mapping[sv] for sv in sorted(mapping)]}")
    members = node.members()
    listed = sorted(np.frombuffer(get("seg/listlabels").content, "<u8").tolist())
    if listed != sorted(members):
        problems.append(f"listlabels {listed} != model bodies {sorted(members)}")
    gone = sorted((set(node.bodies.values()) | set(node.bodies)) - set(members))
    asked = sorted(members) + gone
    truth = block_counts(node.svs, BLOCK)  # supervoxel -> {block key: voxels}
    indices = pb.LabelIndices.FromString(get("seg/indices", content=orjson.dumps(asked)).content)
    sizes = get("seg/sizes", content=orjson.dumps(asked)).json()
    for label, index, size in zip(asked, indices.indices, sizes, strict=True):
        found = {key: dict(entry.counts) for key, entry in index.blocks.items()}
        recount: dict[int, dict[int, int]] = {}
        for sv in members.get(label, []):
            for key, n in truth[sv].items():
                recount.setdefault(key, {})[sv] = n
        if index.label != label or found != recount:
            problems.append(f"index of {label} (as {index.label}): {found} != recount {recount}")
        voxels = sum(sum(counts.values()) for counts in recount.values())
        if size != voxels:
            problems.append(f"size of {label} is {size}, recount {voxels}")
    return problems


def dag_problems(http: httpx.Client, root: str, model: dict[str, Node]) -> list[str]:
    """The version DAG holds exactly the model's nodes, with their parents."""
    nodes = http.get(f"/api/repo/{root}/info").json()["DAG"]["Nodes"]
    problems = []
    if set(nodes) != set(model):
        problems.append(f"[{http.base_url}] DAG nodes {sorted(nodes)} != model {sorted(model)}")
    by_vid = {info["VersionID"]: uuid for uuid, info in nodes.items()}
    for uuid, node in model.items():
        if uuid in nodes:
            parents = [by_vid.get(p) for p in nodes[uuid]["Parents"]]
            if parents != ([node.parent] if node.parent else []):
                problems.append(
                    f"[{http.base_url}] node {uuid}: parents {parents}, model {node.parent}"
                )
    return problems


# --- the test ------------------------------------------------------------------------------


def test_acknowledged_writes_survive_store_faults_on_two_servers(rig: Rig) -> None:
    """One repo, set up and committed with the proxy healed; each client works on its
    own branch of it (and the versions it makes there), so its model is its own."""
    proxy = rig.proxy
    clients = [Client(rig.urls, random.Random(SEED + 100 + w)) for w in range(WORKERS)]
    base = Workload(clients[0], SEED)
    works: list[Workload] = []
    timings: dict[str, float] = {}
    started = time.monotonic()
    try:
        base.setup()
        root = base.nodes[base.root]
        base.commit(root)
        for w, client in enumerate(clients):
            branch = f"client{w}"
            work = Workload(client, SEED + 1 + w, base.root, base.top, f"{branch}-")
            answer = client.send("POST", f"/api/node/{root.uuid}/branch", json={"branch": branch})
            work.nodes[answer.json()["child"]] = root.child(answer.json()["child"], branch)
            works.append(work)
        assert root.locked and not base.problems and not clients[0].problems, base.problems
        timings["setup"] = time.monotonic() - started
        proxy.reset_counters()
        proxy.fail(rate=FAULT_RATE, kinds=FAULT_KINDS, seed=SEED)
        try:
            timings["workload"] = run_threads(
                [(work.run, (OPERATIONS // WORKERS,)) for work in works], timeout=480
            )
            faults = Counter(kind for kind, _, _ in proxy.log)
            burst = next(work for work in works if work.open_nodes())
            before = Counter(burst.outcomes)
            burst.c.attempts = 1
            proxy.fail(BURST_RATE, QUICK_KINDS, path_regex=CHUNK_KEY, seed=SEED)
            for i in range(BURST_WRITES):
                write = burst.grey_write if i % 2 else burst.seg_write
                write(burst.rng.choice(burst.open_nodes()))
            bursts = burst.outcomes - before
        finally:
            proxy.heal()
        store_requests = proxy.requests
        print(f"\nworkload done in {timings['workload']:.0f} s; checking", flush=True)
        model = {root.uuid: root, **{u: n for work in works for u, n in work.nodes.items()}}
        problems = [p for work in works for p in work.c.problems + work.problems]
        checked = time.monotonic()
        for url in rig.urls:
            with httpx.Client(base_url=url, timeout=live.TIMEOUT) as http:
                problems += dag_problems(http, base.root, model)
                with ThreadPoolExecutor(CHECKERS) as pool:  # the store's latency overlaps
                    for found in pool.map(partial(check_node, http), model.values()):
                        problems += found
        timings["checks"] = time.monotonic() - checked
    finally:
        for client in clients:
            client.close()

    outcomes = sum((work.outcomes for work in works), Counter())
    statuses = sum((client.statuses for client in clients), Counter())
    ops: Counter[str] = Counter()
    for (what, _), n in outcomes.items():
        ops[what] += n
    summary = "\n".join(
        [
            f"{sum(ops.values())} operations by {WORKERS} clients on {len(model)} versions; "
            f"{store_requests} store requests, {sum(faults.values())} faults injected; "
            f"seconds: { {k: round(v) for k, v in timings.items()} }",
            f"operations: {dict(sorted(ops.items()))}",
            f"not acknowledged at once: "
            f"{ {k: n for k, n in sorted(outcomes.items()) if k[1] != 'acknowledged'} }",
            f"faults by kind: {dict(sorted(faults.items()))}",
            f"burst of chunk faults: {dict(sorted(bursts.items()))}",
            f"client retries: {sum(c.retries for c in clients)}; statuses of all attempts: "
            f"{dict(sorted(statuses.items()))}",
        ]
    )
    print(summary)
    assert not problems, (
        f"{len(problems)} problems\n{summary}\n" + "\n".join(problems[:40]) + "\n" + rig.log_tails()
    )
    # Never a 500, nor any status other than these.
    assert set(statuses) <= {200, 400, 404, 502, 503, 504}, summary
    # The faults fired, of every kind; in the burst, voxel writes failed.
    assert all(faults[kind] > 0 for kind in FAULT_KINDS), summary
    assert sum(n for (_, how), n in bursts.items() if how == "failed") > 0, summary
    # Every kind of operation was acknowledged at least once.
    for what in ["grey write", "seg write", "merge", "cleave", "kv post", "kv delete",
                 "annotation post", "neuronjson post", "commit", "read"]:  # fmt: skip
        assert outcomes[what, "acknowledged"] > 0, (what, summary)
    assert outcomes["newversion", "acknowledged"] + outcomes["branch", "acknowledged"], summary
