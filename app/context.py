"""The request context a datatype handler works in: which repo, node and instance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.dag import Node
from app.errors import LockedNode
from app.repo import Instance, Repo
from app.services import Services
from backends import ObjectStore

if TYPE_CHECKING:
    from app.datatypes.base import DataType


@dataclass
class InstanceContext:
    """A resolved ``/api/node/{uuid}/{dataname}`` request."""

    services: Services
    repo: Repo
    node: Node
    instance: Instance
    datatype: DataType

    @property
    def store(self) -> ObjectStore:
        return self.services.store(self.instance.store)

    @property
    def data_prefix(self) -> str:
        """Where this instance keeps its data: ``data/<DataUUID>``."""
        return f"data/{self.instance.data_uuid}"

    @property
    def version(self) -> Node:
        """The node data is read and written at: unversioned instances use the root."""
        return self.node if self.instance.versioned else self.repo.dag.root

    @property
    def mutable(self) -> bool:
        """Whether the data at :attr:`version` can still change."""
        return not self.instance.versioned or not self.node.locked

    def require_writable(self) -> None:
        if not self.mutable:
            raise LockedNode(
                f"node {self.node.uuid} is locked (committed): writes to "
                f"{self.instance.name!r} must go to an open node"
            )
