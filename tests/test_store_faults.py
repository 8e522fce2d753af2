"""Store faults under a client workload: what the server acknowledged must survive.

:class:`FaultyStore` wraps any real store and, driven by a seeded ``random.Random``, makes
a fraction of calls raise :class:`StoreUnavailable` (the server answers 503) in two modes:

* ``before``: the call fails without doing anything (a refused connection);
* ``after``: the call is performed and *then* fails (a lost response: the write happened
  but the caller believes it did not). For ``list`` the listing breaks off part-way.

Two drivers use it:

* a randomized workload (about 150 operations) through a server on such a store, on the
  memory, local and S3 backends, retrying 503s as a client would and modelling only
  acknowledged (2xx) outcomes;
* a single-fault sweep (memory backend): each operation is run once per store call it
  makes, with exactly that call failing, once in each mode.

Afterwards a healthy server on the same store must show every acknowledged effect exactly
once and well-formed metadata. A request that ended in 503 (or in a 4xx after a 503) may or
may not have taken effect; the checks allow both, but never twice.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.proto import keyvalue_pb2 as pb
from app.server import create_app
from app.settings import Settings
from app.storage import keys
from backends import Blob, ObjectInfo, ObjectStore, StoreUnavailable
from backends.memory import MemoryStore

BEFORE = "before"
AFTER = "after"
MODES = (BEFORE, AFTER)


class FaultyStore(ObjectStore):
    """Wraps ``inner``; each call fails with probability ``rate`` (StoreUnavailable),
    ``after_share`` of the failures after performing the call (a lost response).

    For deterministic tests, :meth:`fail_next` fails the next call of a method (on a key
    containing some text) and :meth:`fail_call` the n-th call from now, whatever it is.
    ``enabled = False`` turns every fault off. ``injected`` counts faults by
    (method, mode); ``log`` keeps the injected faults' descriptions.
    """

    def __init__(
        self,
        inner: ObjectStore,
        *,
        rate: float = 0.0,
        after_share: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.inner = inner
        self.rate = rate
        self.after_share = after_share
        self.rng = random.Random(seed)
        self.enabled = True
        self.calls = 0
        self.injected: Counter[tuple[str, str]] = Counter()
        self.log: list[str] = []
        self.description = f"faulty {inner.description}"
        self._by_method: list[tuple[str, str, str]] = []
        self._by_number: dict[int, str] = {}
        self._lock = threading.Lock()

    def fail_next(self, method: str, mode: str, key_contains: str = "") -> None:
        """Fail the next ``method`` call whose key (or prefix) contains ``key_contains``."""
        assert mode in MODES
        self._by_method.append((method, key_contains, mode))

    def fail_call(self, n: int, mode: str) -> None:
        """Fail the ``n``-th store call from now (0 is the very next one)."""
        assert mode in MODES
        self._by_number[self.calls + n] = mode

    def _decide(self, method: str, key: str) -> str | None:
        with self._lock:
            number = self.calls
            self.calls += 1
            if not self.enabled:
                return None
            matching = [i for i, (m, part, _) in enumerate(self._by_method) if m == method]
            matching = [i for i in matching if self._by_method[i][1] in key]
            if number in self._by_number:
                mode = self._by_number.pop(number)
            elif matching:
                mode = self._by_method.pop(matching[0])[2]
            elif self.rate > 0 and self.rng.random() < self.rate:
                mode = AFTER if self.rng.random() < self.after_share else BEFORE
            else:
                return None
            self.injected[method, mode] += 1
            self.log.append(f"{method} {key} failed {mode}")
            return mode

    def _call(self, method: str, key: str, operation: Callable[[], Any]) -> Any:
        mode = self._decide(method, key)
        if mode == BEFORE:
            raise StoreUnavailable(f"simulated: {method} {key} failed before reaching the store")
        result = operation()
        if mode == AFTER:
            raise StoreUnavailable(f"simulated: {method} {key} done but the response was lost")
        return result

    def get(self, key: str) -> Blob | None:
        return self._call("get", key, lambda: self.inner.get(key))

    def get_range(self, key: str, start: int, end: int | None = None) -> bytes | None:
        return self._call("get_range", key, lambda: self.inner.get_range(key, start, end))

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False
    ) -> str:
        return self._call(
            "put", key, lambda: self.inner.put(key, data, if_match=if_match, if_absent=if_absent)
        )

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.inner.delete(key))

    def exists(self, key: str) -> bool:
        return self._call("exists", key, lambda: self.inner.exists(key))

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        mode = self._decide("list", prefix)
        if mode == BEFORE:
            raise StoreUnavailable(f"simulated: list {prefix} failed before reaching the store")
        items = self.inner.list(prefix, start_after=start_after)
        if mode is None:
            return items
        found = list(items)
        with self._lock:
            cut = self.rng.randint(0, len(found))
        return self._cut_listing(prefix, found[:cut])

    @staticmethod
    def _cut_listing(prefix: str, head: list[ObjectInfo]) -> Iterator[ObjectInfo]:
        """A listing whose connection drops after ``head`` (a later page fails)."""
        yield from head
        raise StoreUnavailable(f"simulated: list {prefix} broke off after {len(head)} entries")

    def close(self) -> None:
        self.inner.close()

    def tensorstore_kvstore(self, path: str) -> dict[str, Any]:
        return self.inner.tensorstore_kvstore(path)

    def tensorstore_shares_keys(self) -> bool:
        return self.inner.tensorstore_shares_keys()


class ErrorTrap:
    """ASGI wrapper recording exceptions that escape the application. A client sees 500
    for them, or, if the response had already been sent, a server that logs a crash."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.errors: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as e:
            when = f"after answering {status[0]}" if status else "before answering"
            cause = f" (caused by {e.__cause__!r})" if e.__cause__ else ""
            self.errors.append(
                f"{scope.get('method')} {scope.get('path')}: server raised {e!r}{cause} "
                f"{when}\n{''.join(traceback.format_exception(e, limit=-3))}"
            )
            raise


def faulty_client(store: ObjectStore, **settings: Any) -> tuple[TestClient, ErrorTrap]:
    trap = ErrorTrap(create_app(Settings(**settings), {"default": store}))
    return TestClient(trap, raise_server_exceptions=False), trap


# --- FaultyStore itself ------------------------------------------------------------------


def test_faulty_store_modes() -> None:
    inner = MemoryStore()
    store = FaultyStore(inner)
    store.fail_next("put", BEFORE)
    with pytest.raises(StoreUnavailable):
        store.put("a", b"1")
    assert inner.get("a") is None
    store.fail_next("put", AFTER)
    with pytest.raises(StoreUnavailable):
        store.put("a", b"2")
    assert inner.get("a").data == b"2"  # the write happened; only its answer was lost
    store.fail_next("delete", AFTER)
    with pytest.raises(StoreUnavailable):
        store.delete("a")
    assert inner.get("a") is None
    for i in range(5):
        inner.put(f"p/{i}", b"x")
    store.fail_next("list", AFTER)
    with pytest.raises(StoreUnavailable):
        list(store.list("p/"))
    store.fail_next("list", BEFORE, key_contains="q/")
    assert len(list(store.list("p/"))) == 5  # the scripted fault waits for a matching call
    with pytest.raises(StoreUnavailable):
        list(store.list("q/"))
    for method, call in [
        ("get", lambda: store.get("p/0")),
        ("get_range", lambda: store.get_range("p/0", 0, 1)),
        ("exists", lambda: store.exists("p/0")),
    ]:
        store.fail_next(method, BEFORE)
        with pytest.raises(StoreUnavailable):
            call()
    store.fail_call(1, AFTER)
    assert store.get("p/0").data == b"x"
    with pytest.raises(StoreUnavailable):
        store.put("p/1", b"y")
    assert inner.get("p/1").data == b"y" and store.exists("p/0")
    assert store.injected[("put", BEFORE)] == 1 and store.injected[("put", AFTER)] == 2


def test_faulty_store_is_seeded() -> None:
    def pattern(seed: int) -> list[str]:
        store = FaultyStore(MemoryStore(), rate=0.3, seed=seed)
        out = []
        for i in range(200):
            try:
                store.put(f"k{i}", b"v")
                out.append("ok")
            except StoreUnavailable as e:
                out.append("after" if "lost" in str(e) else "before")
        return out

    first = pattern(7)
    assert first == pattern(7) != pattern(8)
    assert 30 < first.count("after") + first.count("before") < 90
    assert first.count("after") > 10 and first.count("before") > 10


# --- a modelling client --------------------------------------------------------------------

ABSENT = "<no record at this node>"  # a record state: the node wrote nothing for the key
KEYS = ["k0", "k1", "k2", "k3"]
RETRIES = 8
MAX_REPOS = 2
MAX_INSTANCES = 3  # per repo


@dataclass
class Outcome:
    status: int  # the last status seen; 503 if every attempt failed
    text: str
    content: bytes
    json: Any
    saw_503: bool

    @property
    def acked(self) -> bool:
        return 200 <= self.status < 300

    @property
    def uncertain(self) -> bool:
        """It may or may not have taken effect."""
        return not self.acked and (self.saw_503 or self.status >= 500)


@dataclass
class NodeModel:
    uuid: str
    root: str
    parent: str | None
    branch: str
    locked: set[bool] = field(default_factory=lambda: {False})  # possible states
    notes: set[str] = field(default_factory=lambda: {""})
    log_acked: list[str] = field(default_factory=list)
    log_maybe: list[str] = field(default_factory=list)


@dataclass
class RepoModel:
    root: str
    instances: dict[str, bool] = field(default_factory=dict)  # name -> acknowledged
    log_acked: list[str] = field(default_factory=list)
    log_maybe: list[str] = field(default_factory=list)


class Workload:
    """A seeded client: operations whose 503s are retried, and a model of what the
    acknowledged (and possibly applied) requests must have left in the store."""

    def __init__(self, client: TestClient, trap: ErrorTrap | None, seed: int) -> None:
        self.c = client
        self.trap = trap
        self.rng = random.Random(seed)
        self.repos: dict[str, RepoModel] = {}
        self.nodes: dict[str, NodeModel] = {}
        # (node, instance, key) -> possible record states: ABSENT, None (tombstone), bytes
        self.records: dict[tuple[str, str, str], set[Any]] = {}
        # (root, instance, key) -> every value ever POSTed (acknowledged or not)
        self.posted: dict[tuple[str, str, str], set[bytes]] = {}
        self.problems: list[str] = []
        self.statuses: Counter[str] = Counter()
        self.requests = 0
        self.serial = 0

    # --- plumbing --------------------------------------------------------------------------

    def unique(self, what: str) -> str:
        self.serial += 1
        return f"{what}-{self.serial}"

    def call(self, method: str, path: str, **kwargs: Any) -> Outcome:
        saw_503 = False
        text = ""
        for _ in range(RETRIES + 1):
            self.requests += 1
            seen = len(self.trap.errors) if self.trap else 0
            r = self.c.request(method, path, **kwargs)
            if self.trap and len(self.trap.errors) > seen:
                self.problems += self.trap.errors[seen:]
            if r.status_code == 503:
                saw_503 = True
                text = r.text
                continue
            if not (200 <= r.status_code < 300 or 400 <= r.status_code < 500):
                self.problems.append(f"{r.status_code}: {method} {path}: {r.text[:300]}")
            kind = "2xx" if r.is_success else str(r.status_code)
            self.statuses[f"{method} {kind}{' after 503' if saw_503 else ''}"] += 1
            body = r.json() if "json" in r.headers.get("content-type", "") else None
            return Outcome(r.status_code, r.text, r.content, body, saw_503)
        self.statuses[f"{method} gave up"] += 1
        return Outcome(503, text, b"", None, True)

    def pick_node(self, locked: bool) -> NodeModel | None:
        """A node that may be in the given lock state."""
        choices = [n for n in self.nodes.values() if locked in n.locked]
        return self.rng.choice(choices) if choices else None

    def pick_instance(self, root: str) -> str | None:
        names = sorted(self.repos[root].instances)
        return self.rng.choice(names) if names else None

    # --- operations ------------------------------------------------------------------------

    def create_repo(self) -> None:
        out = self.call("POST", "/api/repos", json={"alias": self.unique("alias")})
        if out.acked:
            root = out.json["root"]
            self.repos[root] = RepoModel(root)
            self.nodes[root] = NodeModel(root, root, None, "")

    def create_instance(self) -> None:
        node = self.pick_node(locked=False)
        if node is None or len(self.repos[node.root].instances) >= MAX_INSTANCES:
            return
        name = self.unique("kv").replace("-", "")
        body = {"typename": "keyvalue", "dataname": name}
        out = self.call("POST", f"/api/repo/{node.uuid}/instance", json=body)
        if out.acked:
            self.repos[node.root].instances[name] = True
            node.locked = {False}
        elif out.uncertain:
            self.repos[node.root].instances.setdefault(name, False)

    def write_key(self, delete: bool = False) -> None:
        node = self.pick_node(locked=False)
        if node is None or (inst := self.pick_instance(node.root)) is None:
            return
        key = self.rng.choice(KEYS)
        path = f"/api/node/{node.uuid}/{inst}/key/{key}"
        value: bytes | None = None
        if delete:
            out = self.call("DELETE", path)
        else:
            size = self.rng.choice([0, 1, 10, 100, 3000])
            value = (self.unique("v").encode() + self.rng.randbytes(size))[:size] if size else b""
            self.posted.setdefault((node.root, inst, key), set()).add(value)
            out = self.call("POST", path, content=value)
        states = self.records.setdefault((node.uuid, inst, key), {ABSENT})
        if out.acked:
            states.clear()
            states.add(value)
            node.locked = {False}
            self.repos[node.root].instances[inst] = True
        elif out.uncertain:
            states.add(value)

    def delete_key(self) -> None:
        self.write_key(delete=True)

    def read_key(self) -> None:
        node = self.rng.choice(list(self.nodes.values()))
        inst = self.pick_instance(node.root)
        if inst is None or not self.repos[node.root].instances[inst]:
            return
        key = self.rng.choice(KEYS)
        out = self.call("GET", f"/api/node/{node.uuid}/{inst}/key/{key}")
        if out.status in (200, 404):
            got = None if out.status == 404 else out.content
            possible = self.visible(node.uuid, inst, key)
            if got not in possible:
                self.problems.append(
                    f"read during faults: {node.uuid}/{inst}/{key} gave {_short(got)}, "
                    f"expected one of {sorted(map(_short, possible))}"
                )

    def commit(self, node: NodeModel | None = None) -> None:
        node = node or self.pick_node(locked=False)
        if node is None:
            return
        note = self.rng.choice(["", self.unique("commit-note")])
        line = self.unique("commit-log")
        out = self.call("POST", f"/api/node/{node.uuid}/commit", json={"note": note, "log": [line]})
        if out.acked:
            node.locked = {True}
            if note:
                node.notes = {note}
            node.log_acked.append(line)
        elif out.uncertain:
            node.locked.add(True)
            if note:
                node.notes.add(note)
            node.log_maybe.append(line)
        elif "already committed" in out.text:
            node.locked = {True}

    def new_child(self, branch: bool) -> None:
        parent = self.pick_node(locked=True)
        if parent is None:
            return
        note = self.unique("child-note")
        if branch:
            name = self.unique("branch")
            body = {"branch": name, "note": note}
            out = self.call("POST", f"/api/node/{parent.uuid}/branch", json=body)
        else:
            name = parent.branch
            out = self.call("POST", f"/api/node/{parent.uuid}/newversion", json={"note": note})
        if out.acked:
            parent.locked = {True}
            child = out.json["child"]
            self.nodes[child] = NodeModel(child, parent.root, parent.uuid, name, notes={note})

    def newversion(self) -> None:
        self.new_child(branch=False)

    def branch(self) -> None:
        self.new_child(branch=True)

    def post_note(self) -> None:
        node = self.pick_node(locked=False)
        if node is None:
            return
        note = self.unique("note")
        out = self.call("POST", f"/api/node/{node.uuid}/note", json={"note": note})
        if out.acked:
            node.notes = {note}
            node.locked = {False}
        elif out.uncertain:
            node.notes.add(note)

    def post_node_log(self) -> None:
        node = self.pick_node(locked=False)
        if node is None:
            return
        line = self.unique("node-log")
        out = self.call("POST", f"/api/node/{node.uuid}/log", json={"log": [line]})
        if out.acked:
            node.log_acked.append(line)
            node.locked = {False}
        elif out.uncertain:
            node.log_maybe.append(line)

    def post_repo_log(self) -> None:
        repo = self.repos[self.rng.choice(sorted(self.repos))]
        line = self.unique("repo-log")
        out = self.call("POST", f"/api/repo/{repo.root}/log", json={"log": [line]})
        if out.acked:
            repo.log_acked.append(line)
        elif out.uncertain:
            repo.log_maybe.append(line)

    def run(self, operations: int) -> None:
        ops: list[tuple[Callable[[], None], int]] = [
            (self.create_repo, 1),
            (self.create_instance, 2),
            (self.write_key, 12),
            (self.delete_key, 3),
            (self.read_key, 3),
            (self.commit, 3),
            (self.newversion, 3),
            (self.branch, 2),
            (self.post_note, 2),
            (self.post_node_log, 3),
            (self.post_repo_log, 2),
        ]
        functions, weights = zip(*ops, strict=True)
        for _ in range(operations):
            if not self.repos:
                self.create_repo()
            elif not any(r.instances for r in self.repos.values()):
                self.create_instance()
            else:
                op = self.rng.choices(functions, weights)[0]
                if op != self.create_repo or len(self.repos) < MAX_REPOS:
                    op()

    # --- the model -------------------------------------------------------------------------

    def visible(self, uuid: str, inst: str, key: str) -> set[bytes | None]:
        """Every value a read at ``uuid`` may see: the node's own possible records, and
        its parent's view if the node may hold no record."""
        states = self.records.get((uuid, inst, key), {ABSENT})
        out: set[bytes | None] = {s for s in states if s is not ABSENT}
        if ABSENT in states:
            parent = self.nodes[uuid].parent
            out |= self.visible(parent, inst, key) if parent else {None}
        return out


def _short(value: bytes | None) -> str:
    if value is None:
        return "<missing>"
    return repr(value[:12]) + (f"...({len(value)} bytes)" if len(value) > 12 else "")


def _check_log(where: str, lines: list[str], acked: list[str], maybe: list[str]) -> list[str]:
    """Log lines are ``<time>  <message>``: each acknowledged message once, each 503'd one
    at most once, nothing else."""
    found = Counter(line.split("  ", 1)[-1] for line in lines)
    problems = [
        f"{where}: acknowledged log line {line!r} appears {found[line]} times"
        for line in acked
        if found[line] != 1
    ]
    problems += [
        f"{where}: 503'd log line {line!r} appears {found[line]} times"
        for line in maybe
        if found[line] > 1
    ]
    problems += [f"{where}: log line {m!r} was never posted" for m in set(found) - {*acked, *maybe}]
    return problems


def verify(work: Workload, healthy: TestClient, store: ObjectStore) -> list[str]:
    """Check a healthy server on the same store against the workload's model."""
    problems: list[str] = []

    def get(path: str) -> Any:
        r = healthy.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    infos: dict[str, dict] = get("/api/repos/info")

    # -- the DAGs are well formed; VersionIDs are unique server-wide
    version_ids: Counter[int] = Counter()
    dag_nodes: dict[str, tuple[str, dict]] = {}  # uuid -> (root, node json)
    for root, info in infos.items():
        nodes = info["DAG"]["Nodes"]
        by_vid = {n["VersionID"]: n for n in nodes.values()}
        version_ids.update(n["VersionID"] for n in nodes.values())
        parentless = [u for u, n in nodes.items() if not n["Parents"]]
        if parentless != [root] or info["Root"] != root:
            problems.append(f"repo {root}: parentless nodes {parentless}, Root {info['Root']}")
        for uuid, node in nodes.items():
            dag_nodes[uuid] = (root, node)
            if node["UUID"] != uuid:
                problems.append(f"repo {root}: node listed as {uuid} has UUID {node['UUID']}")
            for p in node["Parents"]:
                parent = by_vid.get(p)
                if parent is None:
                    problems.append(f"node {uuid}: parent VersionID {p} is not in the DAG")
                    continue
                if node["VersionID"] not in parent["Children"]:
                    problems.append(f"node {uuid}: missing from its parent's Children")
                if not parent["Locked"]:
                    problems.append(f"node {uuid}: parent {parent['UUID']} is not locked")
            for c in node["Children"]:
                child = by_vid.get(c)
                if child is None or node["VersionID"] not in child["Parents"]:
                    problems.append(f"node {uuid}: child {c} is missing or does not name it")
    problems += [f"VersionID {v} is used by {n} nodes" for v, n in version_ids.items() if n > 1]

    # -- acknowledged repos and instances exist; repo logs
    for root, repo in work.repos.items():
        if root not in infos:
            problems.append(f"acknowledged repo {root} is missing")
            continue
        present = infos[root]["DataInstances"]
        for name, acked in repo.instances.items():
            if acked and name not in present:
                problems.append(f"repo {root}: acknowledged instance {name} is missing")
        log = infos[root]["Log"]
        problems += _check_log(f"repo {root}", log, repo.log_acked, repo.log_maybe)

    # -- every node of every DAG is addressable by its UUID, and agrees with the DAG
    for uuid, (root, node) in dag_nodes.items():
        r = healthy.get(f"/api/node/{uuid}/status")
        if r.status_code != 200:
            known = "acknowledged" if uuid in work.nodes else "unacknowledged (503'd)"
            problems.append(
                f"{known} node {uuid} (VersionID {node['VersionID']}, branch "
                f"{node['Branch']!r}, note {node['Note']!r}) is in repo {root}'s DAG but "
                f"does not resolve: {r.status_code} {r.text.strip()}"
            )
        elif r.json() != {"Locked": node["Locked"]}:
            problems.append(f"node {uuid}: status {r.json()} but DAG Locked={node['Locked']}")
    # -- every UUID that resolves is a node of the DAG it resolves to
    for info in store.list("meta/nodes/"):
        uuid = info.key.removeprefix("meta/nodes/")
        r = healthy.get(f"/api/repo/{uuid}/info")
        if r.status_code == 200 and uuid not in r.json()["DAG"]["Nodes"]:
            problems.append(f"UUID {uuid} resolves to repo {r.json()['Root']} but is not in it")

    # -- acknowledged nodes, with their parents, branches, commits, notes and logs
    for uuid, model in work.nodes.items():
        if uuid not in dag_nodes:
            problems.append(f"acknowledged node {uuid} is missing from every DAG")
            continue
        root, node = dag_nodes[uuid]
        nodes = infos[root]["DAG"]["Nodes"]
        if root != model.root:
            problems.append(f"node {uuid} is in repo {root}, not {model.root}")
        if model.parent and node["Parents"] != [nodes.get(model.parent, {}).get("VersionID")]:
            problems.append(f"node {uuid}: Parents {node['Parents']}, not [{model.parent}]")
        if node["Branch"] != model.branch:
            problems.append(f"node {uuid}: branch {node['Branch']!r}, not {model.branch!r}")
        if node["Locked"] not in model.locked:
            problems.append(f"node {uuid}: Locked={node['Locked']}, expected {model.locked}")
        if node["Note"] not in model.notes:
            problems.append(f"node {uuid}: note {node['Note']!r}, expected one of {model.notes}")
        problems += _check_log(f"node {uuid}", node["Log"], model.log_acked, model.log_maybe)

    # -- key values: acknowledged ones readable, deletes gone, nothing partial or foreign.
    # (A batch read per node and instance keeps this quick on S3; presence comes from the
    # key listing, since a batch read answers a missing key with an empty value. Single-key
    # GETs are exercised by the workload's reads.)
    for uuid, (root, _) in dag_nodes.items():
        for inst in infos[root]["DataInstances"]:
            r = healthy.get(f"/api/node/{uuid}/{inst}/keys")
            if r.status_code != 200:
                problems.append(f"keys of {uuid}/{inst}: {r.status_code} {r.text.strip()}")
                continue
            listed = set(r.json())
            wanted = sorted(listed | set(KEYS))
            r = healthy.request(
                "GET",
                f"/api/node/{uuid}/{inst}/keyvalues",
                content=pb.Keys(keys=wanted).SerializeToString(),
            )
            if r.status_code != 200:
                problems.append(f"keyvalues of {uuid}/{inst}: {r.status_code} {r.text.strip()}")
                continue
            values = {kv.key: kv.value for kv in pb.KeyValues.FromString(r.content).kvs}
            for key in wanted:
                got = values.get(key) if key in listed else None
                if got is None and values.get(key):
                    problems.append(f"{uuid}/{inst}/{key}: not listed but reads {values[key]!r}")
                if got is not None and got not in work.posted.get((root, inst, key), ()):
                    problems.append(f"{uuid}/{inst}/{key}: {_short(got)} was never POSTed")
                if uuid in work.nodes and inst in work.repos.get(root, RepoModel("")).instances:
                    possible = work.visible(uuid, inst, key)
                    if got not in possible:
                        problems.append(
                            f"{uuid}/{inst}/{key}: read {_short(got)}, acknowledged "
                            f"history allows only {sorted(map(_short, possible))}"
                        )
    # -- raw records: each is a tombstone or the tag byte plus a POSTed value
    for root, info in infos.items():
        for inst, inst_info in info["DataInstances"].items():
            for obj in store.list(f"data/{inst_info['Base']['DataUUID']}/v/"):
                key = bytes.fromhex(obj.key.rsplit("/", 1)[1]).decode()
                data = store.get(obj.key).data
                if data and (
                    data[:1] != b"\x01" or data[1:] not in work.posted.get((root, inst, key), ())
                ):
                    problems.append(f"record {obj.key} holds {_short(data)}: not a POSTed value")
    return problems


# --- the randomized workload ---------------------------------------------------------------

OPERATIONS = 150
#: Bounds how long a commit waits for writes "in flight" (app.inflight): a marker left
#: behind by a failed call would otherwise hold a commit for the default 300 s.
MAX_REQUEST_SECONDS = 1.0


@pytest.mark.parametrize("backend", ["memory", "local", "s3"], indirect=True)
def test_acknowledged_writes_survive_store_faults(
    backend: str,
    make_store: Callable[[], ObjectStore],
    make_client: Callable[..., TestClient],
) -> None:
    faulty = FaultyStore(make_store(), rate=0.2, after_share=0.5, seed=20240601)
    client, trap = faulty_client(faulty, max_request_seconds=MAX_REQUEST_SECONDS)
    work = Workload(client, trap, seed=1234)
    started = time.monotonic()
    work.run(OPERATIONS)
    elapsed = time.monotonic() - started
    faulty.enabled = False
    client.close()

    store = make_store()
    leaked = sum(1 for _ in store.list("meta/inflight/"))
    summary = (
        f"{work.requests} requests in {elapsed:.1f}s, {faulty.calls} store calls, faults "
        f"{dict(faulty.injected)}, {leaked} in-flight markers left, outcomes "
        f"{dict(sorted(work.statuses.items()))}"
    )
    # The workload must really have exercised things, and the faults must really have fired.
    assert len(work.nodes) >= 5 and len(work.posted) >= 5, summary
    assert any(n.locked == {True} for n in work.nodes.values()), summary
    assert faulty.injected[("put", AFTER)] >= 5 and faulty.injected[("put", BEFORE)] >= 5, summary

    problems = work.problems + verify(work, make_client(), store)
    assert not problems, f"{len(problems)} problems ({summary}):\n" + "\n".join(problems[:30])


# --- one fault at a time -------------------------------------------------------------------

SWEPT = [
    "create_repo",
    "create_instance",
    "write_key",
    "delete_key",
    "commit",
    "newversion",
    "branch",
    "post_note",
    "post_node_log",
    "post_repo_log",
]
#: A leaked in-flight marker holds a commit for up to this long (see MAX_REQUEST_SECONDS).
SWEEP_MAX_REQUEST_SECONDS = 0.5


class Sweep:
    """A faulty and a healthy server, built once (building an app takes ~0.1 s), each on a
    FaultyStore whose ``inner`` is swapped for a fresh MemoryStore per scenario. Their
    caches are keyed by UUIDs that are new in every scenario, so nothing carries over."""

    def __init__(self) -> None:
        self.faulty = FaultyStore(MemoryStore())
        self.plain = FaultyStore(MemoryStore())  # never fails
        settings = {"max_request_seconds": SWEEP_MAX_REQUEST_SECONDS}
        self.client, self.trap = faulty_client(self.faulty, **settings)
        self.healthy = TestClient(create_app(Settings(**settings), {"default": self.plain}))

    def prepared(self) -> Workload:
        """Faults off: a repo whose committed root holds data and has an open child on a
        side branch (so the root may still get a master child)."""
        self.faulty.inner = self.plain.inner = MemoryStore()
        work = Workload(self.client, self.trap, seed=5)
        self.faulty.enabled = False
        work.create_repo()
        work.create_instance()
        work.write_key()
        work.commit()
        work.branch()
        work.write_key()
        self.faulty.enabled = True
        assert not work.problems and len(work.nodes) == 2, work.problems
        return work

    def store_calls(self, op: str) -> int:
        work = self.prepared()
        before = self.faulty.calls
        getattr(work, op)()
        assert not work.problems, work.problems
        return self.faulty.calls - before

    def run(self, op: str, n: int, mode: str) -> list[str]:
        work = self.prepared()
        self.faulty.fail_call(n, mode)
        getattr(work, op)()
        fault = self.faulty.log[-1] if self.faulty.log else "no fault fired"
        store = self.plain.inner
        found = work.problems + verify(work, self.healthy, store)
        # Commit what is open through the healthy server, then check again: committed
        # nodes' data is then read through their sealed indices.
        work.c, work.trap, work.problems = self.healthy, None, []
        for node in [n for n in work.nodes.values() if False in n.locked]:
            # A commit stalls only while a write's in-flight marker is live. A marker whose
            # removal failed outright can only age out (a designed, bounded delay of up to
            # max_request_seconds); any other fault must leave none behind. Checked on the
            # store rather than by timing the commit, which a busy machine slows anyway.
            marker_left = "delete meta/inflight/" in fault and fault.endswith("before")
            markers = [info.key for info in store.list(keys.inflight_prefix(node.uuid))]
            if markers and not marker_left:
                found.append(f"in-flight markers of {node.uuid} left behind: {markers}")
            work.commit(node)
            if node.locked != {True}:
                found.append(f"commit of {node.uuid} afterwards failed: {work.statuses}")
        found += work.problems + verify(work, self.healthy, store)
        return [f"[{op}: store call #{n} of the request, {fault}] {p}" for p in found]


@pytest.fixture(scope="module")
def sweep() -> Sweep:
    return Sweep()


@pytest.mark.parametrize("op", SWEPT)
def test_one_store_fault_per_operation(op: str, sweep: Sweep) -> None:
    """Each store call the operation makes fails once (before, then after performing it);
    the client retries; a healthy server must then agree with what was acknowledged, and
    every open node must still commit, with no write's marker left to hold it up, and keep
    its acknowledged data."""
    problems: list[str] = []
    for n in range(sweep.store_calls(op)):
        for mode in MODES:
            problems += sweep.run(op, n, mode)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:30])


def test_verify_notices_damage(sweep: Sweep) -> None:
    """The checks are not vacuous: lost, foreign and duplicated effects are reported."""

    def damaged(
        damage: Callable[[Workload, MemoryStore, NodeModel, str], None], check_first: bool = True
    ) -> str:
        work = sweep.prepared()
        store = sweep.plain.inner
        if check_first:  # (this makes the healthy server remember where the UUIDs live)
            assert verify(work, sweep.healthy, store) == []
        child = next(n for n in work.nodes.values() if n.parent)
        record = next(i.key for i in store.list("data/") if f"/v/{child.uuid}/" in i.key)
        damage(work, store, child, record)
        return "\n".join(verify(work, sweep.healthy, store))

    # An acknowledged write is lost.
    problems = damaged(lambda w, store, c, record: store.delete(record))
    assert "acknowledged history allows only" in problems, problems
    # A value nobody POSTed (a torn write).
    problems = damaged(lambda w, store, c, record: store.put(record, store.get(record).data[:-1]))
    assert "was never POSTed" in problems and "not a POSTed value" in problems, problems
    # A node nobody can address.
    problems = damaged(lambda w, s, c, r: s.delete(f"meta/nodes/{c.uuid}"), check_first=False)
    assert "does not resolve" in problems, problems

    # A log line stored twice, and one nobody posted.
    def logs(work: Workload, store: MemoryStore, child: NodeModel, record: str) -> None:
        for line in ["once", "once", "stray"]:
            r = work.c.post(f"/api/node/{child.uuid}/log", json={"log": [line]})
            assert r.status_code == 200, r.text
        child.log_acked.append("once")

    problems = damaged(logs)
    assert "'once' appears 2 times" in problems and "'stray' was never posted" in problems
