"""The datatype registry. Every package under this folder is a datatype; importing it
registers it, so adding a datatype touches no other module."""

from __future__ import annotations

import functools
import importlib
import pkgutil

from app.datatypes.base import DataType
from app.errors import BadRequest

_REGISTRY: dict[str, DataType] = {}


def register(datatype: DataType) -> DataType:
    _REGISTRY[datatype.name] = datatype
    return datatype


@functools.cache
def load_all() -> dict[str, DataType]:
    """Import every datatype package (once); returns the registry."""
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg:
            importlib.import_module(f"{__name__}.{module.name}")
    return _REGISTRY


def get(name: str) -> DataType:
    try:
        return load_all()[name]
    except KeyError:
        raise BadRequest(f"unknown datatype {name!r}") from None
