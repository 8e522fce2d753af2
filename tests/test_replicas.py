"""Two real ``dvid-cloud serve`` processes on one S3 bucket (a moto server).

Every change a server makes must be seen at once by the other, and concurrent writes
through both must never lose an acknowledged update: repo metadata is one object updated
by compare-and-swap (``If-Match``), node UUIDs and new repos are claimed with
``If-None-Match: *``.

moto checks both conditions and then stores the object without holding a lock across the
two steps (``moto/s3/responses.py``, ``put_object``), so two racing writers could both win
there, which real S3 does not allow; the test server therefore runs ``put_object`` under
one lock (``tests/moto_atomic.py``). To tell a fake-store failure from an app bug anyway,
the bucket has versioning turned on. A correct compare-and-swap history only grows. If a
stored version lacks something an older version had, a writer was allowed to build on a
stale copy. :func:`store_forks` reports these cases, and any failure message says whether
the losses it lists come with such store-level forks.

The last test needs no race at all: a write whose body is still arriving when the other
server commits the node is held back on purpose until the commit has been answered.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests import fixtures_stores
from tests import live_http as live
from tests.dvid_process import DvidServer, log_tails
from tests.fixtures_stores import (
    AWS_TEST_REGION,
    isolated_server_env,
    make_s3_store,
)

# The shared fixture, bound here so this module also runs without a conftest.
s3_endpoint = fixtures_stores.s3_endpoint

PREFIX = "dvid/"
THREADS = 4
ROUNDS = 3
KEYS_PER_ROUND = 2
RACE_TRIALS = 5

MOTO_NOTE = (
    "moto checks If-Match / If-None-Match and then stores the object without a lock "
    "(moto/s3/responses.py put_object), so two racing conditional writers can both win "
    "unless tests/moto_atomic.py's lock is in place; real S3 refuses the second."
)


# --- the two servers -----------------------------------------------------------------------


@dataclass
class Replicas:
    urls: list[str]
    bucket: str
    s3: Any  # boto3 S3 client on the moto server
    logs: list[Path]

    def log_tails(self) -> str:
        return log_tails(self.urls, self.logs)


@pytest.fixture(scope="module")
def replicas(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    tmp = tmp_path_factory.mktemp("replicas")
    store = make_s3_store(s3_endpoint)  # creates a fresh bucket
    store.client.put_bucket_versioning(
        Bucket=store.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    config = tmp / "dvid.toml"
    config.write_text(
        f'[store.main]\npath = "s3://{store.bucket}/{PREFIX.rstrip("/")}"\n'
        f'endpoint = "{s3_endpoint}"\nregion = "{AWS_TEST_REGION}"\n\n'
        '[backend]\ndefault = "main"\n'
    )
    env = isolated_server_env(tmp)
    logs = [tmp / "server-a.log", tmp / "server-b.log"]
    servers = [DvidServer(log, env, config=config) for log in logs]
    try:
        urls = [server.start().url for server in servers]
        yield Replicas(urls, store.bucket, store.client, logs)
    finally:
        for server in servers:
            server.stop()
        store.close()


# --- reading the bucket's history ----------------------------------------------------------


def _versions(r: Replicas, key: str) -> tuple[list[bytes], int]:
    """Contents of every stored version of ``key`` (any order) and its delete markers."""
    full = PREFIX + key
    contents: list[bytes] = []
    deletes = 0
    pages = r.s3.get_paginator("list_object_versions").paginate(Bucket=r.bucket, Prefix=full)
    for page in pages:
        for v in page.get("Versions", []):
            if v["Key"] == full:
                obj = r.s3.get_object(Bucket=r.bucket, Key=full, VersionId=v["VersionId"])
                contents.append(obj["Body"].read())
        deletes += sum(1 for m in page.get("DeleteMarkers", []) if m["Key"] == full)
    return contents, deletes


def _grown(repo: dict) -> frozenset:
    """What a repo version holds that no later version may drop: nodes, their locks and
    log lines, the repo log and instances. (Notes are replaced, so they are left out.)"""
    items: set = {("instance", name) for name in repo.get("Instances", {})}
    items |= {("repo-log", line) for line in repo.get("Log") or []}
    for node in repo["Nodes"]:
        items.add(("node", node["UUID"], node["VersionID"]))
        if node["Locked"]:
            items.add(("locked", node["UUID"]))
        items |= {("node-log", node["UUID"], line) for line in node.get("Log") or []}
    return frozenset(items)


def _describe(items: frozenset) -> str:
    return ", ".join(sorted(":".join(map(str, i))[:90] for i in items)[:6])


def store_forks(r: Replicas, roots: list[str], uuids: list[str], first_id: int) -> list[str]:
    """Conditional writes the bucket accepted although the condition no longer held.

    Order-free, since moto's version listing has only millisecond times: the versions of
    a repo object must form a chain under "holds everything the other holds", a node
    marker may be written once per release, and the version counter never repeats a
    value (checked from ``first_id`` on, so earlier tests do not count)."""
    forks = []
    for root in roots:
        contents, _ = _versions(r, f"meta/repos/{root}.json")
        parsed = [orjson.loads(c) for c in contents]
        created = {p.get("Created") for p in parsed}
        if len(created) > 1:
            forks.append(f"repo {root} was created {len(created)} times: {sorted(created)}")
        chain = sorted({_grown(p) for p in parsed}, key=len)
        for older, newer in itertools.pairwise(chain):
            if not older <= newer:
                forks.append(
                    f"repo {root}: a version built on a stale copy dropped "
                    f"{len(older - newer)} item(s) another version had "
                    f"(e.g. {_describe(older - newer)})"
                )
    for uuid in uuids:
        contents, deletes = _versions(r, f"meta/nodes/{uuid}")
        if len(contents) > deletes + 1:
            forks.append(f"UUID {uuid} was claimed {len(contents)} times with {deletes} release(s)")
    counter, _ = _versions(r, "meta/version-counter")
    repeats = sorted(
        value
        for value, n in Counter(int(c.split()[0]) for c in counter).items()
        if n > 1 and value >= first_id
    )
    if repeats:
        forks.append(f"VersionIDs handed out more than once by the counter: {repeats}")
    return forks


def counter_value(r: Replicas) -> int:
    try:
        obj = r.s3.get_object(Bucket=r.bucket, Key=PREFIX + "meta/version-counter")
    except r.s3.exceptions.NoSuchKey:
        return 0
    return int(obj["Body"].read().split()[0])  # "<value> <nonce>"


def verdict(r: Replicas, problems: list[str], forks: list[str]) -> str:
    lines = ["PROBLEMS:", *problems] if problems else ["No acknowledged write was lost."]
    if forks:
        lines += ["STORE FORKS (bucket version history):", *forks, MOTO_NOTE]
        if problems:
            lines.append("The losses above come with store forks, so moto may cause them.")
    elif problems:
        lines.append("No store fork was seen: these losses are the app's own.")
    if problems or forks:
        lines.append(r.log_tails())
    return "\n".join(lines)


# --- helpers -------------------------------------------------------------------------------


def run_threads(work: list[tuple[Callable[..., object], tuple]], timeout: float) -> float:
    """Run each (target, args) in its own thread; the seconds they took together. A
    thread still running after ``timeout`` fails the test."""
    threads = [threading.Thread(target=target, args=args) for target, args in work]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "worker threads hung"
    return time.monotonic() - started


def ok(response: httpx.Response) -> httpx.Response:
    assert response.is_success, (
        f"{response.request.method} {response.request.url} -> "
        f"{response.status_code}: {response.text}"
    )
    return response


def message(line: str) -> str:
    """A log line without DVID's ``<time>  `` stamp."""
    return line.split("  ", 1)[1] if "  " in line else line


def new_repo(url: str, **body: str) -> str:
    return ok(live.post(f"{url}/api/repos", json=body)).json()["root"]


# --- 1. what one server writes, the other sees ---------------------------------------------


def test_writes_through_one_server_are_seen_by_the_other(replicas: Replicas) -> None:
    a, b = replicas.urls
    root = new_repo(a, alias="seen-by-b", description="made through A")

    everything = ok(live.get(f"{b}/api/repos/info")).json()
    assert everything[root]["Alias"] == "seen-by-b"
    info = ok(live.get(f"{b}/api/repo/{root}/info")).json()
    assert info["Root"] == root and info["Description"] == "made through A"
    assert root in info["DAG"]["Nodes"]
    assert ok(live.get(f"{b}/api/node/{root}/status")).json() == {"Locked": False}
    assert ok(live.get(f"{b}/api/node/{root[:8]}/status")).json() == {"Locked": False}

    ok(live.post(f"{b}/api/node/{root}/note", json={"note": "set through B"}))
    assert ok(live.get(f"{a}/api/node/{root}/note")).json() == {"note": "set through B"}

    ok(live.post(f"{a}/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "kv"}))
    ok(live.post(f"{a}/api/node/{root}/kv/key/hello", content=b"from A"))
    got = live.get(f"{b}/api/node/{root}/kv/key/hello")
    assert got.status_code == 200 and got.content == b"from A"
    assert ok(live.get(f"{b}/api/node/{root}/kv/keys")).json() == ["hello"]

    ok(live.post(f"{b}/api/node/{root}/commit", json={"note": "committed through B"}))
    refused = live.post(f"{a}/api/node/{root}/kv/key/late", content=b"too late")
    assert refused.status_code == 400, refused.text
    assert ok(live.get(f"{a}/api/node/{root}/status")).json() == {"Locked": True}
    refused = live.post(f"{a}/api/node/{root}/note", json={"note": "after commit"})
    assert refused.status_code == 400, refused.text
    assert live.get(f"{b}/api/node/{root}/kv/key/late").status_code == 404
    assert live.get(f"{a}/api/node/{root}/kv/key/hello").content == b"from A"

    # A child made through A is immediately usable through B.
    child = ok(live.post(f"{a}/api/node/{root}/newversion", json={})).json()["child"]
    ok(live.post(f"{b}/api/node/{child}/kv/key/hello", content=b"from B"))
    assert live.get(f"{a}/api/node/{child}/kv/key/hello").content == b"from B"
    assert live.get(f"{a}/api/node/{root}/kv/key/hello").content == b"from A"


# --- 2. a concurrent workload through both servers -----------------------------------------


@dataclass
class Acked:
    """Every write a server acknowledged (2xx), and every request that failed."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    parent_of: dict[str, str] = field(default_factory=dict)  # node -> parent
    commits: set[str] = field(default_factory=set)
    keys: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (node, key) -> value
    chains: dict[int, list[str]] = field(default_factory=dict)  # thread -> its nodes
    node_log: list[str] = field(default_factory=list)
    repo_log: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # node -> last note acked
    shared_notes: list[str] = field(default_factory=list)
    attempted_nodes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    requests: int = 0


def worker(t: int, urls: list[str], root: str, shared: str, acked: Acked) -> None:
    """Thread ``t``: its own branch of committed versions, each with keys, an instance
    and a note, plus log lines and notes on the node and repo every thread shares.
    Requests alternate between the two servers."""
    clients = [httpx.Client(base_url=u, timeout=30) for u in urls]
    sent = 0

    def call(method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        nonlocal sent
        server = (t + sent) % 2
        sent += 1
        try:
            response = clients[server].request(method, path, **kwargs)
        except httpx.HTTPError as e:
            with acked.lock:
                acked.failures.append(f"t{t} {method} {path} via {'AB'[server]}: {e!r}")
            return None
        with acked.lock:
            acked.requests += 1
            if not response.is_success:
                acked.failures.append(
                    f"t{t} {method} {path} via {'AB'[server]} -> "
                    f"{response.status_code}: {response.text[:300]}"
                )
                return None
        return response

    def new_node(path: str, parent: str, body: dict) -> str | None:
        chosen = uuidlib.uuid4().hex
        with acked.lock:
            acked.attempted_nodes.append(chosen)
        response = call("POST", path, json={**body, "uuid": chosen})
        if response is None:
            return None
        child = response.json()["child"]
        assert child == chosen
        with acked.lock:
            acked.parent_of[child] = parent
            acked.chains.setdefault(t, []).append(child)
        return child

    try:
        node = new_node(f"/api/node/{root}/branch", root, {"branch": f"thread-{t}"})
        for rnd in range(ROUNDS):
            if node is None:
                return
            for j in range(KEYS_PER_ROUND):
                key = f"t{t}-r{rnd}-k{j}"
                value = f"{key} written at {node}".encode()
                if call("POST", f"/api/node/{node}/kv/key/{key}", content=value):
                    with acked.lock:
                        acked.keys[(node, key)] = value
            line = f"node-log t{t} r{rnd}"
            if call("POST", f"/api/node/{shared}/log", json={"log": [line]}):
                with acked.lock:
                    acked.node_log.append(line)
            line = f"repo-log t{t} r{rnd}"
            if call("POST", f"/api/repo/{root}/log", json={"log": [line]}):
                with acked.lock:
                    acked.repo_log.append(line)
            name = f"inst-t{t}-r{rnd}"
            body = {"typename": "keyvalue", "dataname": name}
            if call("POST", f"/api/repo/{node}/instance", json=body):
                with acked.lock:
                    acked.instances.append(name)
            note = f"note of t{t} r{rnd}"
            if call("POST", f"/api/node/{node}/note", json={"note": note}):
                with acked.lock:
                    acked.notes[node] = note
            note = f"shared note by t{t} r{rnd}"
            if call("POST", f"/api/node/{shared}/note", json={"note": note}):
                with acked.lock:
                    acked.shared_notes.append(note)
            if not call("POST", f"/api/node/{node}/commit", json={}):
                return
            with acked.lock:
                acked.commits.add(node)
            if rnd + 1 < ROUNDS:
                node = new_node(f"/api/node/{node}/newversion", node, {})
    finally:
        for client in clients:
            client.close()


def check_from(url: str, root: str, shared: str, acked: Acked) -> list[str]:
    """Everything ``acked`` says was written, as one server reports it."""
    lost: list[str] = []
    where = f"[via {url}]"
    info = ok(live.get(f"{url}/api/repo/{root}/info")).json()
    nodes: dict[str, dict] = info["DAG"]["Nodes"]
    by_id: dict[int, dict] = {}
    for uuid, node in nodes.items():
        if node["UUID"] != uuid:
            lost.append(f"{where} DAG entry {uuid} says its UUID is {node['UUID']}")
        if node["VersionID"] in by_id:
            lost.append(
                f"{where} VersionID {node['VersionID']} is used by both "
                f"{by_id[node['VersionID']]['UUID']} and {uuid}"
            )
        by_id[node["VersionID"]] = node
    for node in nodes.values():
        me = node["VersionID"]
        for p in node["Parents"]:
            if p not in by_id:
                lost.append(f"{where} node {node['UUID']} has a missing parent {p}")
            elif me not in by_id[p]["Children"]:
                lost.append(f"{where} parent {by_id[p]['UUID']} lacks child {node['UUID']}")
        for c in node["Children"]:
            if c not in by_id:
                lost.append(f"{where} node {node['UUID']} has a missing child {c}")
            elif me not in by_id[c]["Parents"]:
                lost.append(f"{where} child {by_id[c]['UUID']} lacks parent {node['UUID']}")

    for child, parent in acked.parent_of.items():
        if child not in nodes:
            lost.append(f"{where} acknowledged node {child} (child of {parent}) is missing")
        elif parent in nodes and nodes[child]["Parents"] != [nodes[parent]["VersionID"]]:
            lost.append(
                f"{where} node {child} has Parents {nodes[child]['Parents']}, expected "
                f"[{nodes[parent]['VersionID']}] ({parent})"
            )
    for uuid in acked.commits:
        if uuid in nodes and not nodes[uuid]["Locked"]:
            lost.append(f"{where} acknowledged commit of {uuid} shows Locked false in the DAG")
        status = live.get(f"{url}/api/node/{uuid}/status")
        if status.status_code != 200 or status.json() != {"Locked": True}:
            lost.append(f"{where} status of committed {uuid}: {status.status_code} {status.text}")
    for uuid, note in acked.notes.items():
        if uuid in nodes and nodes[uuid]["Note"] != note:
            lost.append(f"{where} note of {uuid} is {nodes[uuid]['Note']!r}, not {note!r}")
    shared_note = ok(live.get(f"{url}/api/node/{shared}/note")).json()["note"]
    if acked.shared_notes and shared_note not in acked.shared_notes:
        lost.append(f"{where} shared note {shared_note!r} is none of the acknowledged ones")

    for what, lines, path in (
        ("node log", acked.node_log, f"/api/node/{shared}/log"),
        ("repo log", acked.repo_log, f"/api/repo/{root}/log"),
    ):
        seen = Counter(message(line) for line in ok(live.get(url + path)).json()["log"])
        for line in lines:
            if seen[line] != 1:
                lost.append(f"{where} {what} line {line!r} appears {seen[line]} times")
    for name in acked.instances:
        if name not in info["DataInstances"]:
            lost.append(f"{where} acknowledged instance {name!r} is missing")

    with httpx.Client(base_url=url, timeout=30) as client:
        for (uuid, key), value in acked.keys.items():
            got = client.get(f"/api/node/{uuid}/kv/key/{key}")
            if got.status_code != 200 or got.content != value:
                lost.append(
                    f"{where} key {key!r} at {uuid}: {got.status_code} {got.content[:80]!r}"
                )
        # A chain's last node inherits every key written earlier in the chain.
        for chain in acked.chains.values():
            tip = chain[-1]
            for (uuid, key), value in acked.keys.items():
                if uuid in chain:
                    got = client.get(f"/api/node/{tip}/kv/key/{key}")
                    if got.status_code != 200 or got.content != value:
                        lost.append(
                            f"{where} key {key!r} (written at {uuid}) read at descendant "
                            f"{tip}: {got.status_code} {got.content[:80]!r}"
                        )
    return lost


def test_concurrent_writes_through_both_servers_lose_nothing(replicas: Replicas) -> None:
    a, b = replicas.urls
    first_id = counter_value(replicas) + 1
    root = new_repo(a, alias="workload")
    ok(live.post(f"{b}/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "kv"}))
    ok(live.post(f"{a}/api/node/{root}/commit", json={}))
    shared = ok(live.post(f"{b}/api/node/{root}/branch", json={"branch": "shared"})).json()["child"]

    acked = Acked()
    elapsed = run_threads(
        [(worker, (t, replicas.urls, root, shared, acked)) for t in range(THREADS)], 120
    )

    # The workload actually ran.
    assert acked.requests >= THREADS * ROUNDS * 8, acked.requests
    problems = [f"request failed: {f}" for f in acked.failures]
    for url in replicas.urls:
        problems += check_from(url, root, shared, acked)
    forks = store_forks(replicas, [root], [root, shared, *acked.attempted_nodes], first_id)
    report = verdict(replicas, problems, forks)
    print(f"{acked.requests} requests in {elapsed:.1f}s\n{report}")
    assert not problems and not forks, report


# --- 3. races for one name: exactly one winner ---------------------------------------------


def race(calls: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    """Send the POSTs at the same moment from one thread each, over warmed connections."""
    barrier = threading.Barrier(len(calls))
    results: list[httpx.Response | BaseException | None] = [None] * len(calls)

    def run(i: int, url: str, path: str, body: dict) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            client.get("/api/heartbeat")
            barrier.wait()
            try:
                results[i] = client.post(path, json=body)
            except BaseException as e:  # reported by the caller
                results[i] = e

    threads = [threading.Thread(target=run, args=(i, *c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for result in results:
        if not isinstance(result, httpx.Response):
            raise AssertionError(f"racing request did not complete: {result!r}")
    return results  # type: ignore[return-value]


def test_racing_creates_of_one_root_uuid_have_one_winner(replicas: Replicas) -> None:
    first_id = counter_value(replicas) + 1
    problems: list[str] = []
    roots = []
    for trial in range(RACE_TRIALS):
        root = uuidlib.uuid4().hex
        roots.append(root)
        calls = [
            (url, "/api/repos", {"root": root, "alias": f"trial{trial}-{name}"})
            for url, name in zip(replicas.urls, "AB", strict=True)
        ]
        results = race(calls)
        codes = [r.status_code for r in results]
        if sorted(codes) != [200, 400]:
            problems.append(f"trial {trial}: creating root {root} answered {codes} (A, B)")
        winners = [
            body["alias"] for (_, _, body), code in zip(calls, codes, strict=True) if code == 200
        ]
        for url in replicas.urls:
            info = live.get(f"{url}/api/repo/{root}/info")
            alias = info.json()["Alias"] if info.status_code == 200 else None
            if len(winners) != 1 or alias != winners[0]:
                problems.append(
                    f"trial {trial} [via {url}]: repo {root} has alias {alias!r} "
                    f"({info.status_code}); acknowledged creators: {winners}"
                )
    forks = store_forks(replicas, roots, roots, first_id)
    report = verdict(replicas, problems, forks)
    assert not problems and not forks, report


def test_racing_newversions_on_one_parent_have_one_winner(replicas: Replicas) -> None:
    a, b = replicas.urls
    first_id = counter_value(replicas) + 1
    root = new_repo(a, alias="newversion-race")
    ok(live.post(f"{b}/api/node/{root}/commit", json={}))
    problems: list[str] = []
    uuids = [root]
    for trial in range(RACE_TRIALS):
        parent = ok(live.post(f"{a}/api/node/{root}/branch", json={"branch": f"race{trial}"}))
        parent = parent.json()["child"]
        ok(live.post(f"{b}/api/node/{parent}/commit", json={}))
        chosen = [uuidlib.uuid4().hex, uuidlib.uuid4().hex]
        uuids += [parent, *chosen]
        calls = [
            (url, f"/api/node/{parent}/newversion", {"uuid": child, "note": f"by {name}"})
            for url, child, name in zip(replicas.urls, chosen, "AB", strict=True)
        ]
        results = race(calls)
        codes = [r.status_code for r in results]
        if sorted(codes) != [200, 400]:
            problems.append(f"trial {trial}: newversion of {parent} answered {codes} (A, B)")
        winners = {c for c, code in zip(chosen, codes, strict=True) if code == 200}
        for url in replicas.urls:
            nodes = ok(live.get(f"{url}/api/repo/{root}/info")).json()["DAG"]["Nodes"]
            children = {
                n["UUID"] for n in nodes.values() if nodes[parent]["VersionID"] in n["Parents"]
            }
            if len(children) != 1 or children != winners:
                problems.append(
                    f"trial {trial} [via {url}]: children of {parent} are {sorted(children)}, "
                    f"acknowledged: {sorted(winners)}"
                )
            for loser in set(chosen) - winners:
                if live.get(f"{url}/api/node/{loser}/status").status_code != 400:
                    problems.append(f"trial {trial} [via {url}]: refused child {loser} resolves")
    forks = store_forks(replicas, [root], uuids, first_id)
    report = verdict(replicas, problems, forks)
    assert not problems and not forks, report


# --- 4. a write in flight while the other server commits its node --------------------------


def test_write_in_flight_during_a_commit_is_kept_or_refused(replicas: Replicas) -> None:
    """A write to an open node whose body is still arriving when another server commits
    that node may be refused (400) or kept, but must not be acknowledged and then be
    invisible at the node it was written to. (The commit waits for writes in flight.)"""
    a, b = replicas.urls
    root = new_repo(a, alias="write-during-commit")
    ok(live.post(f"{a}/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "kv"}))
    data_uuid = ok(live.get(f"{a}/api/node/{root}/kv/info")).json()["Base"]["DataUUID"]
    release = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b"first half, "
        release.wait(15)
        yield b"second half"

    answer: list[httpx.Response] = []
    writer = threading.Thread(
        target=lambda: answer.append(
            live.post(f"{a}/api/node/{root}/kv/key/slow", content=slow_body(), timeout=30)
        )
    )
    writer.start()
    time.sleep(0.5)  # server A has taken the request and is reading its body
    committed: list[httpx.Response] = []
    committer = threading.Thread(
        target=lambda: committed.append(
            live.post(f"{b}/api/node/{root}/commit", json={}, timeout=30)
        )
    )
    try:
        committer.start()
        time.sleep(0.5)  # the commit has locked the node and waits for the write in flight
    finally:
        release.set()
        writer.join(timeout=30)
        committer.join(timeout=30)
    assert committed and committed[0].status_code == 200, committed
    assert answer, "the slow write did not complete"
    written = answer[0]
    if written.status_code == 400:
        return  # refused because the node is now locked: nothing acknowledged, nothing lost
    assert written.status_code == 200, written.text

    problems = []
    child = ok(live.post(f"{a}/api/node/{root}/newversion", json={})).json()["child"]
    for url in replicas.urls:
        for node in (root, child):
            got = live.get(f"{url}/api/node/{node}/kv/key/slow")
            if got.status_code != 200 or got.content != b"first half, second half":
                problems.append(
                    f"[via {url}] acknowledged key 'slow' read at {node}: "
                    f"{got.status_code} {got.text.strip()[:120]}"
                )
        listed = ok(live.get(f"{url}/api/node/{root}/kv/keys")).json()
        if listed != ["slow"]:
            problems.append(f"[via {url}] keys at {root}: {listed}")
    if problems:
        base = f"{PREFIX}data/{data_uuid}"
        record = replicas.s3.list_objects_v2(Bucket=replicas.bucket, Prefix=f"{base}/v/{root}/")
        index = replicas.s3.get_object(Bucket=replicas.bucket, Key=f"{base}/index/{root}")
        problems.append(
            f"the record is in the store: {[o['Key'] for o in record.get('Contents', [])]}; "
            f"the index sealed by the commit: {index['Body'].read().decode()}"
        )
    assert not problems, "\n".join(problems)
