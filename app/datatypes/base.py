"""What a datatype is: one :class:`Data` subclass per datatype.

An object of the class is an instance bound to a version, as DVID's ``Data`` with its
``VersionedCtx``: the dispatcher resolves ``/api/node/{uuid}/{dataname}`` once into e.g.
``Labelmap(services, repo, node, instance)``, which knows its store, the node its data is
read and written at and whether that node can still change; handlers call its methods.
What belongs to the type rather than to an instance (name, help text, routes, settings
parsing, which requests mutate) are class variables and classmethods of the same class.

Each datatype is a package under ``app/datatypes/`` that registers its class(es) with
:func:`app.datatypes.register`; nothing else in the server knows what any datatype stores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from fastapi import APIRouter, Request

from app.context import VersionContext
from app.dag import Node, VersionDAG
from app.errors import BadRequest, LockedNode
from app.repo import Instance, Repo, now
from app.storage import keys
from app.storage.counter import Counter
from app.storage.journal import Journal, Stage, Transaction
from backends import ObjectStore

if TYPE_CHECKING:
    from app.diff import MergeSides
    from app.services import Services

TYPE_URL_BASE = "github.com/janelia-flyem/dvid/datatype/"
#: The request-scope key under which the dispatcher leaves the bound instance (metrics
#: also read it: its presence marks a request served by a datatype route).
SCOPE_KEY = "dvid.context"
WRITE_METHODS = frozenset({"POST", "PUT", "DELETE"})

#: DVID's storage compression settings and how ``Base.Compression`` spells them.
COMPRESSION_NAMES = {
    "none": "No compression",
    "snappy": "Go Snappy compression",
    "lz4": "LZ4 compression",
    "gzip": "gzip compression",
    "jpeg": "jpeg compression",
}
CHECKSUM_NAMES = {"none": "No checksum", "crc32": "CRC32 checksum"}


def parse_bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise BadRequest(f"setting {name!r} must be true or false, not {value!r}")


def compression_json(setting: str) -> str:
    """``gzip:5`` -> ``gzip compression, level 5``; DVID's default level is -1."""
    fmt, _, level = setting.partition(":")
    return f"{COMPRESSION_NAMES[fmt]}, level {level or -1}"


def parse_compression(value: str) -> str:
    fmt, colon, level = value.strip().lower().partition(":")
    if fmt not in COMPRESSION_NAMES:
        raise BadRequest(f"unknown compression {value!r}: use one of {sorted(COMPRESSION_NAMES)}")
    if colon:
        if fmt != "gzip" or not level.isdigit() or not 1 <= int(level) <= 9:
            raise BadRequest(f"bad compression {value!r}: only gzip takes a level, 1 to 9")
        return f"{fmt}:{level}"
    return fmt


class NotComparable(BadRequest):
    """A datatype that cannot answer a diff or a merge check (400); a repo-wide diff
    lists its instances apart instead of failing."""


def data_root(instance: Instance) -> str:
    """Where an instance keeps everything it stores: ``data/<DataUUID>`` (no slash)."""
    return keys.instance_root(instance.data_uuid)


class Data:
    """An instance of a datatype at one version. Subclasses set the class variables and
    add routes and storage."""

    typename: ClassVar[str]
    type_version: ClassVar[str] = "0.1"
    help_text: ClassVar[str] = ""
    default_compression: ClassVar[str] = "lz4"
    #: Keywords whose POSTs change instance metadata rather than versioned data, and so
    #: are allowed at locked nodes.
    unversioned_keywords: ClassVar[frozenset[str]] = frozenset({"tags", "sync"})
    #: Keywords whose POSTs only read (DVID's ``IsMutationRequest`` answers false).
    read_posts: ClassVar[frozenset[str]] = frozenset()
    #: GET keywords whose answers at a locked version never change (app/immutable.py
    #: keeps them): data reads, not instance metadata such as ``info`` or ``tags``.
    immutable_reads: ClassVar[frozenset[str]] = frozenset()
    #: Keywords whose POSTs DVID reserves to admins.
    admin_posts: ClassVar[frozenset[str]] = frozenset()
    #: Typenames whose instances this type may subscribe to (``POST .../sync``).
    accepts_syncs_from: ClassVar[frozenset[str]] = frozenset()
    #: Whether instances derive data from their sources' events (:meth:`apply_events`).
    #: A type that only reads its sources when asked (tarsupervoxels expanding a body
    #: through a labelmap) keeps none, so delivery skips it: no cursor, no transaction.
    follows_events: ClassVar[bool] = True
    #: Whether every mutating request runs as one transaction (app.storage.journal):
    #: serialized per version, all-or-nothing, completed after a crash. Types whose every
    #: write is a single object put do without.
    transactional: ClassVar[bool] = False

    def __init__(self, services: Services, repo: Repo, node: Node, instance: Instance) -> None:
        self.services = services
        self.repo = repo
        #: The node the request named.
        self.node = node
        self.instance = instance
        #: The instance's store itself, also inside a transaction.
        self.base_store: ObjectStore = services.store(instance.store)
        self._txn: Transaction | None = None
        #: The node data is read and written at: unversioned instances use the root.
        self.version: Node = node if instance.versioned else repo.dag.root
        #: Whether the data at :attr:`version` can still change: at an open node, and at
        #: a locked one until its commit has finished (:meth:`Repo.final`).
        self.mutable = not instance.versioned or not repo.final(node)
        self.at = VersionContext(repo.dag, self.version, self.mutable)

    # --- the type --------------------------------------------------------------------------

    @classmethod
    def type_url(cls) -> str:
        return TYPE_URL_BASE + cls.typename

    @classmethod
    def routes(cls) -> APIRouter:
        """Routes relative to ``/api/node/{uuid}/{dataname}``."""
        return APIRouter()

    @classmethod
    def parse_settings(cls, config: dict[str, str]) -> dict:
        """Type-specific settings from the creation body (lower-cased keys); 400 if bad."""
        return {}

    @classmethod
    def complete_settings(cls, services: Services, settings: dict) -> dict:
        """The parsed settings completed from outside the request before the instance is
        created (a proxy reads its remote's metadata here); 4xx if they cannot be."""
        return settings

    @classmethod
    def check_compression(cls, compression: str) -> None:
        """Refuse (400) a storage compression this type cannot use."""

    @classmethod
    def is_mutation(cls, method: str, keyword: str) -> bool:
        """Whether ``method`` on ``keyword`` changes data (DVID's ``IsMutationRequest``):
        every POST, PUT and DELETE except the POSTs the type declares reads."""
        if method == "POST" and keyword in cls.read_posts:
            return False
        return method in WRITE_METHODS

    @classmethod
    def needs_admin(cls, method: str, keyword: str) -> bool:
        """Whether ``method`` on ``keyword`` is reserved to admins of the repo."""
        return method == "POST" and keyword in cls.admin_posts

    # --- this instance ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.instance.name

    @property
    def dag(self) -> VersionDAG:
        return self.repo.dag

    @property
    def settings(self) -> dict[str, Any]:
        return self.instance.settings

    @property
    def root(self) -> str:
        """The prefix of every object this instance stores."""
        return data_root(self.instance)

    def sibling(self, instance: Instance) -> Self:
        """Another instance of this type in the same repo, at the same node."""
        return type(self)(self.services, self.repo, self.node, instance)

    @property
    def store(self) -> ObjectStore:
        """Where records are read and written: inside a transaction, its buffered view
        (reads see the transaction's own writes, writes publish at its commit)."""
        return self._txn.store if self._txn is not None else self.base_store

    @property
    def txn(self) -> Transaction | None:
        """The transaction this object writes in, if any."""
        return self._txn

    def journal(self, node: Node | None = None) -> Journal:
        """The transactions (and mutation log) of this instance at ``node``, by default
        :attr:`version`."""
        lease = self.services.settings.max_request_seconds
        node_uuid = (node or self.version).uuid
        return Journal(self.base_store, self.instance.data_uuid, node_uuid, lease=lease, wait=lease)

    def at_node(self, node: Node) -> Self:
        """This instance bound to another node of its repo."""
        return type(self)(self.services, self.repo, node, self.instance)

    @contextlib.contextmanager
    def transaction(self, stage: Stage | None = None) -> Iterator[Transaction]:
        """Run the body's writes as one transaction (nested calls join the open one), in
        ``stage`` if a writer filled one first (:meth:`Journal.prestage`)."""
        if self._txn is not None:
            if stage is not None:
                raise RuntimeError("a prestaged stage cannot join a running transaction")
            yield self._txn
            return
        with self.journal().transaction(stage) as txn:
            self._txn = txn
            try:
                yield txn
            finally:
                self._txn = None

    def event(self, action: str, **fields: Any) -> None:
        """Log an event of the running transaction (DVID's mutation record shape) for the
        mutation log and the instances synced to this one."""
        if self._txn is not None:
            self._txn.event(
                {"Action": action, "UUID": self.version.uuid, "Timestamp": now(), **fields}
            )

    def new_mutation_id(self) -> int:
        """A new repo-wide mutation id (DVID's ``NewMutationID``): increasing, never
        handed out twice on any branch or replica."""
        store = self.services.catalog.store
        return Counter(store, keys.mutation_ids(self.repo.root), "the mutation ids").next()

    def prepares_reads(self) -> bool:
        """Whether :meth:`prepare_read` may call the store: the dispatcher then binds a
        read on a thread; otherwise on the event loop, without a thread hop."""
        return self.mutable and (self.transactional or bool(self.instance.syncs))

    def prepare_read(self) -> None:
        """Before a request at an open version is served: complete a transaction whose
        writer died, and apply the events of synced sources not yet applied
        (:meth:`prepares_reads` says whether there may be anything to do)."""
        if not self.mutable:
            return
        if self.transactional:
            self.journal().recover()
        if self.instance.syncs:
            from app.syncs import catch_up  # syncs binds instances: imports the registry

            catch_up(self)

    def for_commit(self) -> Self:
        """This instance at its (just locked) node, still writable: a commit completes
        interrupted transactions and delivers synced events before sealing."""
        bound = type(self)(self.services, self.repo, self.node, self.instance)
        bound.mutable = True
        bound.at = VersionContext(self.repo.dag, self.version, True)
        return bound

    def check_syncs(self, sources: list[Data]) -> None:
        """Refuse (400) subscribing to ``sources`` (bound at this node), beyond the
        typenames :attr:`accepts_syncs_from` allows."""

    def apply_events(
        self, txn: Transaction, source: Instance, events: list[dict[str, Any]]
    ) -> None:
        """Apply events ``source`` logged (this instance subscribes to it) within ``txn``."""
        raise BadRequest(f"datatype {self.typename} does not apply synced events")

    def answers_immutable(self, route: str) -> bool:
        """Whether a GET of ``route`` (the path after the instance name) at the bound
        version reads data fixed forever."""
        keyword = route.split("/", 1)[0]
        return keyword in self.immutable_reads and self.instance.versioned and not self.mutable

    def open_answers_key(self, route: str) -> str | None:
        """For a GET of ``route`` at a version that can still change, after
        :meth:`prepare_read`: a key naming everything its answer follows from, under which
        the answer may be kept (app/immutable.py) until any of it changes; None if it
        may not be kept (the default: a type must know what its reads depend on)."""
        return None

    def read_ahead(self, method: str, route: str) -> Sequence[str]:
        """Paths in :attr:`base_store` that a ``method`` request for ``route`` (the path
        after the instance name) at this version would read first, whatever the answer
        of the repo check that binds the request: the dispatcher calls it on this
        process's previous binding of the instance and reads them while the next request
        is bound afresh (app/storage/readahead.py), saving a store round trip in turn.
        Called on the event loop, so it must not touch the store. None by default."""
        return ()

    def require_writable(self) -> None:
        if self.instance.versioned and self.node.locked:
            raise LockedNode(
                f"node {self.node.uuid} is locked (committed): writes to "
                f"{self.instance.name!r} must go to an open node"
            )

    def instance_json(self) -> dict:
        """DVID's instance JSON: ``{"Base": {...}, "Extended": {...}}``."""
        inst = self.instance
        base = {
            "TypeName": inst.typename,
            "TypeURL": self.type_url(),
            "TypeVersion": self.type_version,
            "DataUUID": inst.data_uuid,
            "Name": inst.name,
            "RepoUUID": inst.repo_uuid,
            "Compression": compression_json(inst.compression),
            "Checksum": CHECKSUM_NAMES[inst.checksum],
            "Syncs": list(inst.syncs),
            "Versioned": inst.versioned,
            "KVStore": self.store.description,
            "LogStore": self.store.description,
            "Tags": dict(inst.tags) or None,
        }
        return {"Base": base, "Extended": self.extended_json(), **self.extra_json()}

    def extended_json(self) -> dict:
        """``Extended`` of the instance JSON."""
        return {}

    def extra_json(self) -> dict:
        """Top-level keys of the instance JSON beyond ``Base`` and ``Extended``."""
        return {}

    def post_info(self) -> None:
        """``POST /info``: DVID answers most types with their info; a type may refuse."""

    def seal(self) -> None:
        """:attr:`node` was committed: persist whatever makes its data cheap to read later."""

    def conflicts(self, parents: list[Node]) -> dict[str, list[str]]:
        """For ``resolve``: per lower-priority parent UUID, the keys it must give up."""
        raise BadRequest(f"datatype {self.typename} cannot resolve merge conflicts")

    def diff(self, other: Self) -> dict[str, Any] | None:
        """What a read of this instance at ``other``'s version sees differently from one
        at this version: the instance's members of a diff (``keys``, ``blocks``,
        ``labels``...; :mod:`app.diff`), or None if nothing differs. A type without
        per-version indexes to compare says so (400, :class:`NotComparable`)."""
        raise NotComparable(
            f"datatype {self.typename} keeps no per-version index a diff could compare"
        )

    def merge_conflicts(self, merge: MergeSides) -> dict[str, Any] | None:
        """What a merge of ``merge.parents`` would conflict on in this instance (members
        as :meth:`diff`'s, each a list), or None if nothing; 400 for a type that cannot
        tell (:class:`NotComparable`)."""
        raise NotComparable(
            f"datatype {self.typename} keeps no per-version index to check for conflicts"
        )

    def tombstone(self, keys: list[str]) -> None:
        """Delete ``keys`` at :attr:`version` (used by resolve)."""
        raise BadRequest(f"datatype {self.typename} cannot resolve merge conflicts")

    def drop(self) -> None:
        """Remove all stored data of the (deleted) instance."""
        self.store.delete_prefix(f"{self.root}/")


D = TypeVar("D", bound=Data)


def bound(cls: type[D]) -> Callable[[Request], Awaitable[D]]:
    """A FastAPI dependency: the ``cls`` the dispatcher bound for this request, e.g.
    ``LabelmapData = Annotated[Labelmap, Depends(bound(Labelmap))]``. A coroutine,
    because FastAPI runs a plain function dependency on its threadpool: a thread hop,
    for a lookup in the scope, on every request of every datatype route."""

    async def dependency(request: Request) -> D:
        data = request.scope.get(SCOPE_KEY)
        if not isinstance(data, cls):
            raise TypeError(f"the request is bound to {type(data).__name__}, not {cls.__name__}")
        return data

    dependency.__name__ = f"bound_{cls.__name__}"
    return dependency
