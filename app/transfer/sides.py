"""Either end of a transfer: a set of stores this process opens, or a remote dvid-cloud
server reached over HTTP (:mod:`app.api.transfer`), which is
:class:`app.transfer.http_side.HttpSide`. The engine sees only :class:`Side`, so
store-to-store, store-to-server and server-to-server transfers are one code path.

Store names are the *source's*: each side maps a name it lacks to its default store
(:func:`app.transfer.publish.store_name`), as it does for the instances it publishes.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from app.catalog import Catalog
from app.errors import BadRequest
from app.repo import UUID_RE, check_uuid
from app.storage import conditional, keys
from app.storage.counter import Counter
from app.storage.format import check_format
from app.transfer.layout import MergeRule, instance_prefix, merge_rule
from app.transfer.publish import Publisher, PublishRequest, store_name
from backends import ObjectStore, StoreError


@dataclass(frozen=True)
class Located:
    """A version found at the source: its repo as stored, the node's full UUID and the
    repo's mutation-id counter."""

    repo: dict[str, Any]
    node: str
    mutation_ids: int


class Side(abc.ABC):
    """What a transfer needs from an end."""

    #: How messages name this end (a URL or store path).
    where: str = ""

    @abc.abstractmethod
    def locate(self, ref: str) -> Located:
        """The version ``ref`` (UUID, prefix, ``:branch``) names; 4xx DVIDError if none."""

    @abc.abstractmethod
    def repo(self, root: str) -> dict[str, Any] | None:
        """The stored JSON of the repo rooted at ``root``, or None."""

    @abc.abstractmethod
    def owners(self, nodes: list[str]) -> dict[str, str]:
        """The root of the repo that claimed each of ``nodes`` here, for those claimed."""

    @abc.abstractmethod
    def list(self, store: str, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under ``prefix``, in key order."""

    @abc.abstractmethod
    def get(self, store: str, key: str) -> bytes:
        """An object's bytes (StoreError if it is gone)."""

    @abc.abstractmethod
    def put(self, store: str, key: str, data: bytes) -> None:
        """Write a data object (never one of ``meta/``)."""

    @abc.abstractmethod
    def merge(self, store: str, key: str, typename: str, data: bytes) -> None:
        """Merge a shared object by its datatype's rule, conditionally."""

    @abc.abstractmethod
    def publish(self, request: PublishRequest) -> dict[str, Any]:
        """Add the pushed nodes to the DAG (the last step)."""

    def prepare(self) -> None:  # noqa: B027 - only stores need it
        """Make the end ready to receive (a bare store gets its format stamp)."""

    def close(self) -> None:  # noqa: B027 - only HTTP ends hold a connection
        """Release what the end holds."""


def check_data_key(key: str) -> str:
    """Transfers read and write only instance data (``data/<32 hex>/...``)."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != "data" or not UUID_RE.match(parts[1]) or not parts[2]:
        raise BadRequest(f"{key!r} is not an instance data key")
    if any(p in ("", ".", "..") for p in parts) or not key.isascii() or not key.isprintable():
        raise BadRequest(f"bad object key {key!r}")
    return key


class StoreSide(Side):
    """Stores opened by this process: the local side of a command, or the server's own
    stores behind :mod:`app.api.transfer`."""

    def __init__(self, stores: dict[str, ObjectStore], default: str, where: str = "") -> None:
        self.stores = stores
        self.default = default
        self.where = where or stores[default].description
        self.catalog = Catalog(stores[default])
        self.publisher = Publisher(stores, default)

    def store(self, name: str) -> ObjectStore:
        return self.stores[store_name(self.stores, self.default, name)]

    def locate(self, ref: str) -> Located:
        repo, node = self.catalog.resolve(ref)
        mutation_ids = Counter(
            self.stores[self.default], keys.mutation_ids(repo.root), "mutation ids"
        ).current()
        return Located(repo.to_json(), node.uuid, mutation_ids)

    def repo(self, root: str) -> dict[str, Any] | None:
        blob = self.stores[self.default].get(keys.repo(check_uuid(root, "root UUID")))
        return None if blob is None else orjson.loads(blob.data)

    def owners(self, nodes: list[str]) -> dict[str, str]:
        return self.publisher.owners(nodes)

    def list(self, store: str, prefix: str) -> Iterator[tuple[str, int]]:
        for info in self.store(store).list(prefix):
            yield info.key, info.size

    def get(self, store: str, key: str) -> bytes:
        blob = self.store(store).get(key)
        if blob is None:
            raise StoreError(f"{key} vanished from {self.where} during the transfer")
        return blob.data

    def put(self, store: str, key: str, data: bytes) -> None:
        self.store(store).put(check_data_key(key), data)

    def merge(self, store: str, key: str, typename: str, data: bytes) -> None:
        check_data_key(key)
        rule: MergeRule = merge_rule(typename)
        rel = key[len(instance_prefix(key.split("/")[1])) :]

        def edit(current: bytes | None) -> bytes | None:
            try:
                return rule(rel, current, data)
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                raise BadRequest(f"shared object {key} cannot be merged: {e}") from None

        conditional.update(self.store(store), key, edit, what=key)

    def publish(self, request: PublishRequest) -> dict[str, Any]:
        return self.publisher.publish(request)

    def prepare(self) -> None:
        check_format(self.stores[self.default], writable=True)

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
