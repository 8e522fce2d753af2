"""A bulk command's instance at its version, bound as a request would bind it: in the
command (to check and plan) and again in each worker task (to read or write)."""

from __future__ import annotations

from dataclasses import replace
from typing import TypeVar

from app.bulk.runner import Target, services_for
from app.datatypes import bind
from app.datatypes.base import Data
from app.errors import BadRequest

D = TypeVar("D", bound=Data)


def bound(target: Target, kind: type[D], what: str) -> D:
    """``target``'s instance at its version, if it is a ``kind`` (400 naming ``what``
    otherwise), ready to read: an interrupted transaction at an open version is completed
    first, as before any request there."""
    services = services_for(target.settings)
    repo, node = services.catalog.resolve(target.uuid)
    data = bind(services, repo, node.uuid, repo.instance(target.instance))
    if not isinstance(data, kind):
        raise BadRequest(f"instance {target.instance!r} ({data.typename}) is not {what}")
    data.prepare_read()
    return data


def pinned(target: Target, data: Data) -> Target:
    """``target`` naming the version by the UUID ``data`` is bound at: a reference such as
    ``:master`` may move while the tasks run, and every task must read the same version."""
    return replace(target, uuid=data.node.uuid)
