"""SIGKILL a real server during label edits, commits and repo merges, ``DVID_TEST_EDIT_KILLS``
times (24 at ``make reliability``).

The kinds take turns: a labelmap ``merge`` and a ``cleave`` at the open head, a ``commit``
of the head, and a conflict-free ``merge`` of two committed children into a new node. Each
request is sent, the server is killed at a random moment within its first 0.2 s, and
restarted on the same folder. Then:

* the edit or version operation happened entirely or not at all: a merged body covers both
  bodies' voxels or neither; a cleaved supervoxel left its body or did not; the node is
  locked (refusing writes) or open (accepting them); the merge node exists with both
  parents, once, or not at all;
* the labelmap's records equal a recount of the voxels: per body, the label index and
  ``size``; ``listlabels`` (tests/label_checks.py, by body);
* the client's retry of a request that did not take effect succeeds, and takes effect.

With ``tests/test_kill_recovery.py`` (large POSTs) and ``tests/test_syncs.py`` (sync
delivery) at ``make reliability``'s scale, a run kills the server more than 50 times.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.dvid_process import DvidServer
from tests.fixtures_stores import isolated_server_env
from tests.label_checks import index_problems

KILLS = int(os.environ.get("DVID_TEST_EDIT_KILLS", "24"))
SIZE = 128
BLOCK = 32
PER_AXIS = SIZE // BLOCK


def supervoxel_at(bx: int, by: int, bz: int) -> int:
    """The volume is one supervoxel per 32³ block."""
    return 1 + bx + PER_AXIS * by + PER_AXIS * PER_AXIS * bz


def corner(supervoxel: int) -> str:
    """A voxel of ``supervoxel`` as DVID's x_y_z."""
    n = supervoxel - 1
    bx, by, bz = n % PER_AXIS, n // PER_AXIS % PER_AXIS, n // (PER_AXIS * PER_AXIS)
    return f"{bx * BLOCK}_{by * BLOCK}_{bz * BLOCK}"


@dataclass
class Cluster:
    """A server process restarted on one folder, and a client of it."""

    server: DvidServer
    client: httpx.Client
    uuid: str = ""
    #: Requests the kill stopped before they took effect (the retry then made them).
    interrupted: int = 0
    unfinished_commits: int = 0

    def url(self, path: str) -> str:
        return f"{self.server.url}{path}"

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.client.request(method, self.url(path), **kwargs)
        assert r.status_code == 200, (method, path, r.status_code, r.text)
        return r.json() if r.content else None

    def bodies(self, node: str) -> list[int]:
        """The bodies of the volume's supervoxels at ``node``."""
        return sorted({self.body_of(node, sv) for sv in range(1, PER_AXIS**3 + 1)})

    def body_of(self, node: str, supervoxel: int) -> int:
        return int(self.ok("GET", f"/api/node/{node}/seg/label/{corner(supervoxel)}")["Label"])

    def locked(self, node: str) -> bool:
        return bool(self.ok("GET", f"/api/node/{node}/status")["Locked"])

    def children(self, node: str) -> list[str]:
        """The nodes with ``node`` among their parents (the DAG names parents by version)."""
        dag = self.ok("GET", f"/api/repo/{self.uuid}/info")["DAG"]["Nodes"]
        version = dag[node]["VersionID"]
        return sorted(uuid for uuid, n in dag.items() if version in n["Parents"])

    def value(self, node: str, key: str) -> bytes | None:
        """A keyvalue value, or None if absent."""
        r = self.client.get(self.url(f"/api/node/{node}/kv/key/{key}"))
        assert r.status_code in (200, 404), r.text
        return r.content if r.status_code == 200 else None

    def killed_during(self, rng: random.Random, method: str, path: str, **kwargs: Any) -> None:
        """Send the request, SIGKILL the server at a random moment, restart it."""

        def send() -> None:
            with contextlib.suppress(httpx.HTTPError):
                self.client.request(method, self.url(path), **kwargs)

        sender = threading.Thread(target=send)
        sender.start()
        threading.Event().wait(rng.uniform(0.0, 0.2))
        self.server.kill()
        sender.join(timeout=60)
        self.server.start()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    env = {**isolated_server_env(tmp_path), "DVID_CLOUD_MAX_REQUEST_SECONDS": "3"}
    server = DvidServer(tmp_path / "server.log", env, data_dir=tmp_path / "store")
    with server, httpx.Client(timeout=120) as client:
        yield Cluster(server, client)


def kill_a_label_merge(c: Cluster, rng: random.Random, head: str) -> str:
    target, merged = rng.sample(c.bodies(head), 2)
    moving = c.ok("GET", f"/api/node/{head}/seg/supervoxels/{merged}")  # cleaves renumber
    c.killed_during(rng, "POST", f"/api/node/{head}/seg/merge", json=[target, merged])
    now = {c.body_of(head, sv) for sv in moving}
    assert now in ({target}, {merged}), now  # all of the merged body moved, or none
    if now == {merged}:
        c.interrupted += 1
        c.ok("POST", f"/api/node/{head}/seg/merge", json=[target, merged])
        assert {c.body_of(head, sv) for sv in moving} == {target}
    return head


def kill_a_cleave(c: Cluster, rng: random.Random, head: str) -> str:
    bodies = c.bodies(head)
    merged = [b for b in bodies if len(c.ok("GET", f"/api/node/{head}/seg/supervoxels/{b}")) > 1]
    if not merged:  # nothing to cleave yet: merge two bodies first (not killed)
        target, other = rng.sample(bodies, 2)
        c.ok("POST", f"/api/node/{head}/seg/merge", json=[target, other])
        merged = [target]
    body = rng.choice(merged)
    leaving = rng.choice(c.ok("GET", f"/api/node/{head}/seg/supervoxels/{body}"))
    c.killed_during(rng, "POST", f"/api/node/{head}/seg/cleave/{body}", json=[leaving])
    if c.body_of(head, leaving) == body:  # not cleaved: the retry does it
        c.interrupted += 1
        c.ok("POST", f"/api/node/{head}/seg/cleave/{body}", json=[leaving])
    assert c.body_of(head, leaving) != body
    return head


def kill_a_commit(c: Cluster, rng: random.Random, head: str) -> str:
    """Commit the head under a kill; the new open head."""
    c.ok("POST", f"/api/node/{head}/kv/key/before-commit", content=head.encode())
    c.killed_during(rng, "POST", f"/api/node/{head}/commit", json={"note": "killed?"})
    write = c.client.post(c.url(f"/api/node/{head}/kv/key/after"), content=b"x")
    if c.locked(head):
        assert write.status_code == 400, write.text  # locked means locked, for writes too
        # A kill after the lock may leave the commit unfinished (the node in Sealing: no
        # child may be built on it); the client's retry finishes it, or is refused as
        # already committed if it had finished.
        retried = c.client.post(c.url(f"/api/node/{head}/commit"), json={"note": "retried"})
        assert retried.status_code in (200, 400), retried.text
        if retried.status_code == 200:
            c.unfinished_commits += 1
    else:
        c.interrupted += 1
        assert write.status_code == 200, write.text
        c.ok("POST", f"/api/node/{head}/commit", json={"note": "retried"})
        assert c.locked(head)
    assert c.value(head, "before-commit") == head.encode()
    return str(c.ok("POST", f"/api/node/{head}/newversion", json={})["child"])


def kill_a_repo_merge(c: Cluster, rng: random.Random, head: str) -> str:
    """Two committed children of the head, merged under a kill; the merge node."""
    if not c.locked(head):
        c.ok("POST", f"/api/node/{head}/commit", json={"note": "before branching"})
    left = c.ok("POST", f"/api/node/{head}/newversion", json={})["child"]
    branch = {"branch": f"side-{head[:8]}"}
    right = c.ok("POST", f"/api/node/{head}/branch", json=branch)["child"]
    for side in (left, right):
        c.ok("POST", f"/api/node/{side}/kv/key/{side}", content=side.encode())
        c.ok("POST", f"/api/node/{side}/commit", json={"note": "a side"})
    body = {"mergeType": "conflict-free", "parents": [left, right], "note": "killed?"}
    c.killed_during(rng, "POST", f"/api/repo/{c.uuid}/merge", json=body)
    made = c.children(left)
    assert made == c.children(right) and len(made) <= 1, (made, c.children(right))
    if not made:
        c.interrupted += 1
        made = [c.ok("POST", f"/api/repo/{c.uuid}/merge", json=body)["child"]]
    merge = made[0]
    for side in (left, right):
        assert c.value(merge, side) == side.encode()
    return merge


@pytest.mark.reliability
@pytest.mark.timeout(1800)
def test_killed_edits_commits_and_merges_are_whole_and_records_agree(cluster: Cluster) -> None:
    c, rng = cluster, random.Random(11)
    c.uuid = head = str(c.ok("POST", "/api/repos", json={})["root"])
    instance = {"typename": "labelmap", "dataname": "seg", "BlockSize": f"{BLOCK},{BLOCK},{BLOCK}"}
    c.ok("POST", f"/api/repo/{head}/instance", json=instance)
    c.ok("POST", f"/api/repo/{head}/instance", json={"typename": "keyvalue", "dataname": "kv"})
    z, y, x = np.indices((SIZE, SIZE, SIZE)) // BLOCK
    volume = (1 + x + PER_AXIS * y + PER_AXIS * PER_AXIS * z).astype("<u8")
    c.ok(
        "POST",
        f"/api/node/{head}/seg/raw/0_1_2/{SIZE}_{SIZE}_{SIZE}/0_0_0",
        content=volume.tobytes(),
    )
    kinds = [kill_a_label_merge, kill_a_cleave, kill_a_commit, kill_a_repo_merge]
    for i in range(KILLS):
        head = kinds[i % len(kinds)](c, rng, head)
        problems = index_problems(
            c.client, c.server.url, head, "seg", SIZE, BLOCK, c.bodies(head), bodies=True
        )
        assert not problems, (i, problems[:5], c.server.log_tail())
    print(
        f"\n{KILLS} kills, {c.interrupted} before the request took effect, "
        f"{c.unfinished_commits} commits finished by their retry"
    )
    assert c.interrupted >= 1, "no kill stopped a request before it took effect"
