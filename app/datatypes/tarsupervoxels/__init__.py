"""tarsupervoxels: a blob per supervoxel (typically its mesh), served per body as one tar
through the supervoxels a synced labelmap gives that body.

Blobs are keyed records (one per supervoxel, key its decimal id), copy-on-write per
version node like any keyed data; an instance created with ``versioned=false`` keeps them
all at the root, which is how DVID always stores them. The body's supervoxels are read
from the labelmap at the version the request names (not where the blobs live), so a
merge or cleave there shows in the next ``tarfile`` at once and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar

from fastapi import APIRouter

from app.datatypes import bind, register
from app.datatypes.base import Data
from app.datatypes.capabilities import BodySupervoxels
from app.datatypes.keyed import KeyedData
from app.errors import BadRequest
from app.storage import parallel

HELP_FILE = Path(__file__).parent / "help.txt"
#: Supervoxels whose blobs are read at once while a body's tar streams: enough to keep
#: every store worker busy, few enough to bound the memory a large body holds.
BATCH = 256
#: The extension of an entry whose supervoxel has no blob.
MISSING = "missing"
#: A load entry's name, DVID's ``%d.%s``: a decimal supervoxel id, a dot, the extension.
_ENTRY_NAME = re.compile(r"([0-9]+)\.(.*)", re.DOTALL)
MAX_SUPERVOXEL = 2**64 - 1


def record_key(supervoxel: int) -> str:
    return str(supervoxel)


@register
class TarSupervoxels(KeyedData):
    typename = "tarsupervoxels"
    type_version = "0.1"
    help_text = HELP_FILE.read_text()
    # A load stores many blobs: all of them or none.
    transactional = True
    accepts_syncs_from: ClassVar[frozenset[str]] = frozenset({"labelmap"})
    # Nothing is derived from the labelmap's edits: bodies are expanded when asked.
    follows_events = False

    @classmethod
    def routes(cls) -> APIRouter:
        from app.datatypes.tarsupervoxels.routes import router

        return router

    @classmethod
    def parse_settings(cls, config: dict[str, str]) -> dict:
        """``Extension`` is required, as in DVID (whose help still claims a default)."""
        extension = config.get("extension")
        if extension is None:
            raise BadRequest(
                "tarsupervoxels instances must have Extension set in the configuration"
            )
        if not extension or any(c.isspace() or c == "/" for c in extension):
            raise BadRequest(
                f"Extension {extension!r} must be non-empty, without spaces or slashes: "
                "tar entries are named <supervoxel>.<Extension>"
            )
        return {"Extension": extension}

    @property
    def extension(self) -> str:
        return str(self.settings["Extension"])

    def extended_json(self) -> dict:
        return {"Extension": self.extension}

    def check_syncs(self, sources: list[Data]) -> None:
        for source in sources:
            if not isinstance(source, BodySupervoxels):
                raise BadRequest(f"instance {source.name!r} cannot list a body's supervoxels")

    # --- the synced labelmap -------------------------------------------------------------

    def body_source(self) -> BodySupervoxels:
        """The synced segmentation at the node the request named; 400 without one."""
        for name in self.instance.syncs:
            instance = self.repo.instances.get(name)
            if instance is None:
                continue
            source = bind(self.services, self.repo, self.node.uuid, instance)
            if isinstance(source, BodySupervoxels):
                source.prepare_read()  # a crashed edit there is completed, never half-read
                return source
        raise BadRequest(f"data {self.name!r} is not synced with any labelmap instance")

    def supervoxels(self, body: int) -> list[int]:
        """The body's supervoxels, ascending; 400 if it has none (no such body)."""
        found = self.body_source().supervoxels_of(body)
        if not found.size:
            raise BadRequest(f"label {body} has no supervoxels")
        return [int(sv) for sv in found]

    # --- blobs ---------------------------------------------------------------------------

    def blob(self, supervoxel: int) -> bytes | None:
        return self.view().get(record_key(supervoxel))

    def blobs(self, supervoxels: list[int]) -> list[bytes | None]:
        """The blobs of ``supervoxels`` (None where absent), read in parallel."""
        view = self.view()
        return parallel.each(
            view.get, [record_key(sv) for sv in supervoxels], overlap=view.overlap_calls
        )

    def batches(self, supervoxels: list[int]) -> Iterator[list[tuple[int, bytes | None]]]:
        """``(supervoxel, blob)`` in order, a batch of parallel reads at a time."""
        for start in range(0, len(supervoxels), BATCH):
            chunk = supervoxels[start : start + BATCH]
            yield list(zip(chunk, self.blobs(chunk), strict=True))

    def missing(self, supervoxels: list[int]) -> list[int]:
        return [
            sv
            for sv, blob in zip(supervoxels, self.blobs(supervoxels), strict=True)
            if blob is None
        ]

    def put(self, supervoxel: int, blob: bytes) -> None:
        self.write(record_key(supervoxel), blob)

    def remove(self, supervoxel: int) -> None:
        self.delete(record_key(supervoxel))

    def load(self, entries: Iterable[tuple[str, bytes]]) -> int:
        """Store tar entries named ``<supervoxel>.<Extension>``; every name is checked
        before anything is written (the request's transaction publishes all or none).
        Returns how many were stored."""
        named = [
            (self.entry_supervoxel(name, i), blob) for i, (name, blob) in enumerate(entries, 1)
        ]
        self.write_many((record_key(sv), blob) for sv, blob in named)
        return len(named)

    def entry_supervoxel(self, name: str, number: int) -> int:
        """The supervoxel a load entry is for, with DVID's messages; 400 if misnamed."""
        match = _ENTRY_NAME.fullmatch(name)
        digits = match[1].lstrip("0") if match else ""
        # Length first: int() of thousands of digits is refused (and slow).
        if match is None or len(digits) > 20 or int(digits or 0) > MAX_SUPERVOXEL:
            raise BadRequest(f"file {number} name is invalid, expect supervoxel+ext: {name}")
        if match[2] != self.extension:
            raise BadRequest(
                f"file {number} name has bad extension (expect {self.extension!r}): {name}"
            )
        supervoxel = int(digits or 0)
        if supervoxel == 0:
            raise BadRequest("supervoxel 0 is reserved and cannot have data saved under 0 id")
        return supervoxel

    def entry_name(self, supervoxel: int, blob: bytes | None) -> str:
        """A ``tarfile`` entry's name: ``<sv>.<Extension>``, or ``<sv>.missing``."""
        return f"{supervoxel}.{self.extension if blob is not None else MISSING}"
