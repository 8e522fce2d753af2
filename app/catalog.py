"""Repo metadata in the store, safe for many stateless servers on one bucket.

Layout (see docs/format.md):

``meta/repos/<root uuid>.json``
    the repo JSON (:meth:`Repo.to_json`); every change goes through
    :func:`app.storage.conditional.update`.
``meta/nodes/<uuid>``
    a marker per node holding its repo's root UUID and a nonce. Created with ``if_absent``
    before the node is added, so a UUID is claimed once server-wide, and listed by prefix to resolve
    partial UUIDs in one store call.
``meta/version-counter``
    the last VersionID handed out (server-wide, like DVID's), then a nonce.

Each request checks the repo object afresh (a conditional read, which transfers nothing
when the stored token is unchanged), so a write through one server is seen by every other
on its next request; an unchanged repo is neither read nor parsed again,
and which repo a full UUID belongs to (which never changes) is remembered.
Requests that need the same repo while its check is in flight share the next check
(:class:`SharedChecks`): it starts after they came, so it sees every write acknowledged
before any of them, and under concurrency a repo costs one store call per check rather
than per request.

Reads of an instance's data at a node named by its full UUID take a lease instead
(:meth:`Catalog.resolve` with ``leased``): they use a repo checked at most
:data:`REPO_LEASE_SECONDS` ago, so that such a read costs its own store calls only, not
one more for the repo. That is never stale where it matters, because of what can change:

* what a lease lacks (a new node, a new instance) is looked up afresh;
* a node that was locked stays locked, so a lease that shows it open reads it as an open
  one (afresh, kept nowhere): the same data, only not marked immutable;
* an update that removes or changes an instance, or removes a node, is acknowledged only
  :data:`REPO_LEASE_SECONDS` after it landed (:func:`outlast_leases`), when every lease
  taken before it has run out.

Writes, and every route that shows the repo itself, check afresh.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Generic, NamedTuple, TypeVar, cast

import orjson

from app.dag import Node
from app.errors import BadRequest
from app.repo import NODE_NAME_CHARS, UUID_RE, Repo
from app.storage import conditional, keys
from backends import ObjectStore, PreconditionFailed
from backends.base import UNCHANGED

T = TypeVar("T")

#: Update ids a repo keeps: enough to outlast the rivals' writes during one retry.
RECENT_WRITES = 32
#: How long after its check began a repo may serve leased reads (docs/format.md, "Repo
#: leases"): one check per quarter second rather than one per read, while an update that
#: must outlast the leases waits no longer than a person would notice.
REPO_LEASE_SECONDS = 0.25


def outlast_leases() -> None:
    """Wait until every lease taken before an update that just landed has run out: only
    then may the update be acknowledged, if it removed or changed something leased reads
    rely on (:meth:`LeasedView.withdrawn_by`). Any replica's next request then sees it."""
    time.sleep(REPO_LEASE_SECONDS)


class LeasedView(NamedTuple):
    """What leased reads rely on in a repo: its instances' records and its nodes."""

    instances: dict[str, dict]
    nodes: frozenset[str]

    @classmethod
    def of(cls, repo: Repo) -> LeasedView:
        return cls(
            {name: asdict(inst) for name, inst in repo.instances.items()},
            frozenset(repo.dag.by_uuid),
        )

    def withdrawn_by(self, after: LeasedView) -> bool:
        """Whether ``after`` removes or changes anything of this view (adding is fine:
        what a lease lacks is looked up afresh)."""
        return not self.nodes <= after.nodes or any(
            after.instances.get(name) != record for name, record in self.instances.items()
        )


@dataclass(frozen=True)
class _Parsed:
    """A repo as last checked: its token, parsed copy, and the lease the check gave
    (until ``leased_until`` on the monotonic clock, while no update of this process
    has landed since ``generation``)."""

    token: str
    repo: Repo
    leased_until: float
    generation: int


class _Check(Generic[T]):
    """One run of a check: its outcome, once :attr:`done` is set."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return cast(T, self.result)  # set before done


class SharedChecks(Generic[T]):
    """Checks of the store shared by the threads that need the same one at once, none
    older than its caller: a caller whose check (by key) is already running waits for
    the next run, which starts when that one ends and serves every caller that came
    meanwhile. A failed run fails the callers that waited for it, and only them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, _Check[T]] = {}
        self._next: dict[str, _Check[T]] = {}

    def run(self, key: str, check: Callable[[], T]) -> T:
        with self._lock:
            current = self._running.get(key)
            if current is None:  # the next run starts now: for us and whoever waits for it
                mine = self._running[key] = self._next.pop(key) if key in self._next else _Check()
            else:
                mine = self._next.setdefault(key, _Check())
        if current is not None:
            current.done.wait()  # the run that started before we came
            with self._lock:  # ours is the next: whoever finds it not started, starts it
                start = key not in self._running and self._next.get(key) is mine
                if start:
                    self._running[key] = self._next.pop(key)
            if not start:
                return mine.outcome()
        try:
            mine.result = check()
        except BaseException as error:
            mine.error = error
        finally:
            with self._lock:
                del self._running[key]
            mine.done.set()
        return mine.outcome()


class Catalog:
    """Reads, creates and updates repos; resolves UUID references to nodes."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._root_of: dict[str, str] = {}
        self._parsed: dict[str, _Parsed] = {}
        self._checks: SharedChecks[tuple[Repo, str] | None] = SharedChecks()
        # Per repo, the latest update this process landed: a check that began before it
        # may hold what preceded it, and gives no lease.
        self._generations: dict[str, int] = {}
        self._generation = itertools.count(1)

    # --- reading -----------------------------------------------------------------------

    def _load(self, root: str) -> tuple[Repo, str] | None:
        """The repo and its token, from a check of the store that started after the
        call (shared with the calls that came while the previous one ran)."""
        return self._checks.run(root, lambda: self._check(root))

    def _check(self, root: str) -> tuple[Repo, str] | None:
        """The repo and its token read afresh. Readers share one parsed copy per stored
        version (its DAG keeps its cached ancestries); edits parse their own copy."""
        generation = self._generations.get(root, 0)
        began = time.monotonic()
        cached = self._parsed.get(root)
        if cached is None:
            blob = self.store.get(keys.repo(root))
        else:
            found = self.store.get_if_changed(keys.repo(root), cached.token)
            if found is UNCHANGED:
                self._parsed[root] = _Parsed(
                    cached.token, cached.repo, began + REPO_LEASE_SECONDS, generation
                )
                return cached.repo, cached.token
            blob = found
        if blob is None:
            return None
        repo = Repo.from_json(orjson.loads(blob.data))
        self._parsed[root] = _Parsed(blob.token, repo, began + REPO_LEASE_SECONDS, generation)
        return repo, blob.token

    def repo(self, root: str) -> Repo:
        loaded = self._load(root)
        if loaded is None:
            raise BadRequest(f"no repo with root {root}")
        return loaded[0]

    def _leased(self, root: str) -> Repo | None:
        """The repo as a check gave it whose lease still runs, if there is one."""
        parsed = self._parsed.get(root)
        if (
            parsed is None
            or parsed.generation != self._generations.get(root, 0)
            or time.monotonic() >= parsed.leased_until
        ):
            return None
        return parsed.repo

    def roots(self) -> list[str]:
        return [
            info.key[len(keys.REPOS) : -len(".json")]
            for info in self.store.list(keys.REPOS)
            if info.key.endswith(".json")
        ]

    def repos(self) -> list[Repo]:
        found = (self._load(root) for root in self.roots())
        return [loaded[0] for loaded in found if loaded is not None]

    # --- UUID references ---------------------------------------------------------------

    def leased_node(self, ref: str) -> tuple[Repo, Node] | None:
        """The node of full UUID ``ref`` in a repo whose lease still runs, without a store
        call (so safe on the event loop); None if the lease has run out or lacks it."""
        root = self._root_of.get(ref)
        repo = self._leased(root) if root is not None else None
        if repo is None or ref not in repo.dag.by_uuid:
            return None
        return repo, repo.dag.by_uuid[ref]

    def resolve(self, ref: str, leased: bool = False) -> tuple[Repo, Node]:
        """Turn ``prefix``, ``prefix:branch``, ``:branch`` or ``prefix:branch~n`` into a node.
        ``leased``: a full UUID of a node the repo's lease holds resolves with that repo
        (for reads of an instance's data only; see the module docstring)."""
        found = self.leased_node(ref) if leased else None
        if found is not None:
            return found
        if ref.count(":") > 1:
            raise BadRequest(f"bad UUID reference {ref!r}: more than one ':'")
        prefix, colon, branch = ref.partition(":")
        if colon:
            steps = 0
            for sep in ("~", "^"):
                if sep in branch:
                    branch, _, n = branch.partition(sep)
                    if not n.isdigit():
                        raise BadRequest(f"bad version offset {n!r} in {ref!r}")
                    steps = int(n)
            if prefix:
                repo, _ = self._node_of_prefix(prefix)
            else:
                roots = self.roots()
                if len(roots) != 1:
                    raise BadRequest(
                        f"reference {ref!r} needs a UUID prefix: the server holds "
                        f"{len(roots)} repos"
                    )
                repo = self.repo(roots[0])
            versions = repo.dag.branch_versions(branch)
            if not versions:
                raise BadRequest(f"no branch {branch or 'master'!r} in repo {repo.root}")
            if steps >= len(versions):
                raise BadRequest(f"branch {branch!r} has only {len(versions)} versions")
            return repo, versions[steps]
        return self._node_of_prefix(prefix)

    def _node_of_prefix(self, prefix: str) -> tuple[Repo, Node]:
        # Every node is named by a UUID or a tag: a prefix of anything else names none,
        # and must not reach the store as part of a listed key.
        if not NODE_NAME_CHARS.match(prefix):
            raise BadRequest(f"bad UUID {prefix!r}")
        root = self._root_of.get(prefix)
        if root is None:
            root, uuid = self._match_prefix(prefix)
        else:
            uuid = prefix
        repo = self.repo(root)
        return repo, repo.dag.node(uuid)

    def _match_prefix(self, prefix: str) -> tuple[str, str]:
        matches: list[tuple[str, str]] = []
        for info in self.store.list(keys.NODES + prefix):
            uuid = info.key[len(keys.NODES) :]
            if uuid == prefix:  # an exact name (full UUID or tag) always wins
                matches = [(uuid, info.key)]
                break
            matches.append((uuid, info.key))
        live = []
        for uuid, key in matches:
            blob = self.store.get(key)
            root = blob.data.decode().split()[0] if blob is not None else ""
            if root and self._node_exists(root, uuid):
                live.append((root, uuid))
            if len(live) > 1:
                raise BadRequest(f"more than one UUID matches {prefix!r}")
        if not live:
            raise BadRequest(f"could not find UUID with partial match to {prefix!r}")
        root, uuid = live[0]
        if UUID_RE.match(uuid):
            self._root_of[uuid] = root
        return root, uuid

    def prefix_taken(self, prefix: str) -> bool:
        """Whether some node UUID or tag starts with ``prefix``."""
        return any(True for _ in self.store.list(keys.NODES + prefix))

    def _node_exists(self, root: str, uuid: str) -> bool:
        """A marker whose node never made it into the repo (a crash between the two
        writes) is an orphan and does not count."""
        loaded = self._load(root)
        return loaded is not None and uuid in loaded[0].dag.by_uuid

    # --- writing -----------------------------------------------------------------------

    def next_version_id(self) -> int:
        """A VersionID unique server-wide. The counter object holds the value and a nonce:
        rivals writing the same value must not mistake each other's write for their own."""

        def bump(current: bytes | None) -> bytes:
            value = int(current.split()[0]) + 1 if current else 1
            return f"{value} {uuidlib.uuid4().hex}".encode()

        stored = conditional.update(self.store, keys.VERSION_COUNTER, bump, what="version counter")
        assert stored is not None
        return int(stored.split()[0])

    def claim_uuid(self, uuid: str, root: str) -> None:
        """Reserve a node UUID server-wide, or 400 if it exists. The marker holds the root
        and a nonce, so a claim can tell its own write from a rival's."""
        try:
            conditional.put_settled(
                self.store, keys.node_marker(uuid), f"{root} {uuidlib.uuid4().hex}".encode(), None
            )
        except PreconditionFailed:
            raise BadRequest(f"UUID {uuid} already exists on this server") from None

    def release_uuid(self, uuid: str) -> None:
        self.store.delete(keys.node_marker(uuid))

    def create(self, repo: Repo) -> None:
        self.claim_uuid(repo.root, repo.root)
        try:
            # Settled: a store client's retry of a put whose response was lost meets its own
            # write (412); the root is claimed, so equal bytes can only be ours.
            conditional.put_settled(
                self.store, keys.repo(repo.root), orjson.dumps(repo.to_json()), None
            )
        except PreconditionFailed:
            raise BadRequest(f"repo {repo.root} already exists") from None

    def update(self, root: str, edit: Callable[[Repo], T]) -> T:
        """Apply ``edit`` to fresh metadata and write it back only if nobody else wrote
        in between; otherwise retry on the newer version. ``edit`` may raise to abort.

        Each update stamps its id into the repo's ``Writes``. A write whose response was
        lost and that a rival then overwrote cannot be recognised by its bytes, and
        applying ``edit`` again on top of its own effect would refuse it (a commit of a
        node it just locked) or do it twice; the id in the newer repo shows it landed."""
        write_id = uuidlib.uuid4().hex[:16]
        results: list[T] = []
        withdrawing: list[bool] = []

        def apply(current: bytes | None) -> bytes | None:
            if current is None:
                raise BadRequest(f"no repo with root {root}")
            repo = Repo.from_json(orjson.loads(current))
            if results and write_id in repo.writes:
                return None  # an earlier attempt landed: its result stands
            before = LeasedView.of(repo)
            results[:] = [edit(repo)]
            withdrawing[:] = [before.withdrawn_by(LeasedView.of(repo))]
            repo.writes = [*repo.writes[1 - RECENT_WRITES :], write_id]
            return orjson.dumps(repo.to_json())

        try:
            conditional.update(self.store, keys.repo(root), apply, what=f"repo {root}")
        finally:  # landed or maybe landed: this process's leases of the repo are over
            self._generations[root] = next(self._generation)
        if withdrawing[0]:
            outlast_leases()
        return results[0]
