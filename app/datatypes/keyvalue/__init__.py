"""keyvalue: a versioned map from string keys to opaque bytes (meshes, skeletons, JSON)."""

from __future__ import annotations

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

    @classmethod
    def routes(cls) -> APIRouter:
        from app.datatypes.keyvalue.routes import router

        return router
