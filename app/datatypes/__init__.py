"""The datatype registry: typename -> :class:`Data` subclass. Every package under this
folder is a datatype; importing it registers its classes, so adding a datatype touches no
other module."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import TYPE_CHECKING, TypeVar

from app.datatypes.base import Data
from app.errors import BadRequest
from app.repo import Instance, Repo

if TYPE_CHECKING:
    from app.services import Services

_REGISTRY: dict[str, type[Data]] = {}

D = TypeVar("D", bound=type[Data])


def register(cls: D) -> D:
    """Class decorator: serve instances of ``cls.typename`` with ``cls``."""
    _REGISTRY[cls.typename] = cls
    return cls


@functools.cache
def load_all() -> dict[str, type[Data]]:
    """Import every datatype package (once); returns the registry."""
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg:
            importlib.import_module(f"{__name__}.{module.name}")
    return _REGISTRY


def load_plugins(modules: str) -> None:
    """Import extra datatype modules (comma-separated names), which register themselves."""
    for name in filter(None, (part.strip() for part in modules.split(","))):
        importlib.import_module(name)


def get(typename: str) -> type[Data]:
    """The class serving ``typename``; 400 if no datatype has that name."""
    try:
        return load_all()[typename]
    except KeyError:
        raise BadRequest(f"unknown datatype {typename!r}") from None


def bind(services: Services, repo: Repo, node_uuid: str, instance: Instance) -> Data:
    """``instance`` at node ``node_uuid`` of ``repo``, as an object of its datatype."""
    return get(instance.typename)(services, repo, repo.dag.node(node_uuid), instance)
