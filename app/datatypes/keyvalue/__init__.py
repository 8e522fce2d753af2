"""keyvalue: a versioned map from string keys to opaque bytes (meshes, skeletons, JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastapi import APIRouter

from app.datatypes import register
from app.datatypes.keyed import KeyedData


@register
class KeyValue(KeyedData):
    typename = "keyvalue"
    immutable_reads = frozenset({"key"})
    type_version = "0.2"
    help_text = (Path(__file__).parent / "help.txt").read_text()

    def read_ahead(self, method: str, route: str) -> Sequence[str]:
        """``GET``/``HEAD /key/{key}`` at an open node reads the node's own record first."""
        if method not in ("GET", "HEAD"):
            return ()
        keyword, _, key = route.partition("/")
        if keyword != "key" or not key or "/" in key:
            return ()
        return self.own_record_ahead(key)

    @classmethod
    def routes(cls) -> APIRouter:
        from app.datatypes.keyvalue.routes import router

        return router
