"""The datatype registry: typename -> :class:`Data` subclass. Every package under this
folder is a datatype; importing it registers its classes, and its ``typenames.txt`` (one
name a line) says which, so adding a datatype touches no other module.

A package is imported when one of its types is first looked up, not at start-up: all of
them (jsonschema for neuronjson, google-auth for googlevoxels...) took about a fifth of
the time a server needed to answer its first chunk, which needs one of them.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from pathlib import Path
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


class Registry(Mapping[str, type[Data]]):
    """Every datatype by typename: the declared ones, whose packages are imported on their
    first lookup, and any registered by plugins."""

    def __getitem__(self, typename: str) -> type[Data]:
        if typename not in _REGISTRY and typename in _declared():
            importlib.import_module(_declared()[typename])
        return _REGISTRY[typename]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> list[str]:
        return sorted(_declared().keys() | _REGISTRY.keys())


@functools.cache
def _declared() -> dict[str, str]:
    """typename -> the package serving it, from the packages' ``typenames.txt``."""
    declared = {}
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg:
            names = (Path(__file__).parent / module.name / "typenames.txt").read_text()
            declared.update(dict.fromkeys(names.split(), f"{__name__}.{module.name}"))
    return declared


def load_all() -> Registry:
    """The registry of every datatype (each package imported on its first lookup)."""
    return Registry()


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
