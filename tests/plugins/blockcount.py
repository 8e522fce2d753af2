"""``blockcount``: a test subscriber that counts, per block, the block events its synced
sources logged, and per action the completed edits (``merge-complete``...) they logged.
Exactly-once delivery means each count equals the number of logged events naming that
block or action."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from app.api.common import json_response
from app.datatypes import register
from app.datatypes.base import bound
from app.datatypes.keyed import KeyedData
from app.repo import Instance
from app.storage.journal import Transaction


@register
class BlockCount(KeyedData):
    typename = "blockcount"
    help_text = """blockcount: a test datatype counting the block events of its synced sources.

GET  <api URL>/node/<UUID>/<data name>/help
GET  <api URL>/node/<UUID>/<data name>/info
POST <api URL>/node/<UUID>/<data name>/info
GET  <api URL>/node/<UUID>/<data name>/tags
POST <api URL>/node/<UUID>/<data name>/tags
POST <api URL>/node/<UUID>/<data name>/sync
GET  <api URL>/node/<UUID>/<data name>/counts
"""
    accepts_syncs_from: ClassVar[frozenset[str]] = frozenset({"labelmap", "uint8blk"})

    @classmethod
    def routes(cls) -> APIRouter:
        router = APIRouter()

        @router.get("/counts")
        def counts(data: Annotated[BlockCount, Depends(bound(BlockCount))]) -> Response:
            view = data.view()
            found = {key: int(view.get(key) or 0) for key in view.keys_in_range()}
            return json_response(found)

        return router

    def apply_events(
        self, txn: Transaction, source: Instance, events: list[dict[str, Any]]
    ) -> None:
        view = self.view()
        for event in events:
            keys = [f"{x}_{y}_{z}" for x, y, z in event.get("Blocks", [])]
            if event["Action"].endswith("-complete"):
                keys.append(event["Action"])
            for key in keys:
                self.write(key, str(int(view.get(key) or 0) + 1).encode())
