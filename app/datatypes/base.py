"""What a datatype is: its name, settings, routes, help text and storage hooks.

Each datatype is a package under ``app/datatypes/`` that defines one :class:`DataType`
subclass and registers it with :func:`app.datatypes.register`. The server dispatches
``/api/node/{uuid}/{dataname}/...`` to the routes of the instance's datatype; nothing
else in the server knows what any datatype stores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from fastapi import APIRouter

from app.dag import Node
from app.errors import BadRequest
from app.repo import Instance, Repo

if TYPE_CHECKING:
    from app.context import InstanceContext
    from app.services import Services

TYPE_URL_BASE = "github.com/janelia-flyem/dvid/datatype/"

#: DVID's storage compression settings and how ``Base.Compression`` spells them.
COMPRESSION_NAMES = {
    "none": "No compression",
    "snappy": "Go Snappy compression",
    "lz4": "LZ4 compression",
    "gzip": "gzip compression",
    "jpeg": "jpeg compression",
}
CHECKSUM_NAMES = {"none": "No checksum", "crc32": "CRC32 checksum"}


def parse_bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise BadRequest(f"setting {name!r} must be true or false, not {value!r}")


def compression_json(setting: str) -> str:
    """``gzip:5`` -> ``gzip compression, level 5``; DVID's default level is -1."""
    fmt, _, level = setting.partition(":")
    return f"{COMPRESSION_NAMES[fmt]}, level {level or -1}"


def parse_compression(value: str) -> str:
    fmt, colon, level = value.strip().lower().partition(":")
    if fmt not in COMPRESSION_NAMES:
        raise BadRequest(f"unknown compression {value!r}: use one of {sorted(COMPRESSION_NAMES)}")
    if colon:
        if fmt != "gzip" or not level.isdigit() or not 1 <= int(level) <= 9:
            raise BadRequest(f"bad compression {value!r}: only gzip takes a level, 1 to 9")
        return f"{fmt}:{level}"
    return fmt


class DataType:
    """Base class of every datatype; subclasses set the class variables and add routes."""

    name: ClassVar[str]
    version: ClassVar[str] = "0.1"
    help_text: ClassVar[str] = ""
    default_compression: ClassVar[str] = "lz4"
    #: Keywords whose POSTs change instance metadata rather than versioned data, and so
    #: are allowed at locked nodes.
    unversioned_keywords: ClassVar[frozenset[str]] = frozenset({"tags"})

    @property
    def url(self) -> str:
        return TYPE_URL_BASE + self.name

    def routes(self) -> APIRouter:
        """Routes relative to ``/api/node/{uuid}/{dataname}``."""
        return APIRouter()

    def parse_settings(self, config: dict[str, str]) -> dict:
        """Type-specific settings from the creation body (lower-cased keys); 400 if bad."""
        return {}

    def extended_json(self, ctx: InstanceContext) -> dict:
        """``Extended`` of the instance JSON."""
        return {}

    def check_compression(self, compression: str) -> None:
        """Refuse (400) a storage compression this type cannot use."""

    def post_info(self, ctx: InstanceContext) -> None:
        """``POST /info``: DVID answers most types with their info; a type may refuse."""

    def extra_json(self, ctx: InstanceContext) -> dict:
        """Top-level keys of the instance JSON beyond ``Base`` and ``Extended``."""
        return {}

    def seal(self, services: Services, instance: Instance, node_uuid: str) -> None:
        """The node was committed: persist whatever makes its data cheap to read later."""

    def conflicts(
        self, services: Services, repo: Repo, instance: Instance, parents: list[Node]
    ) -> dict[str, list[str]]:
        """For ``resolve``: per lower-priority parent UUID, the keys it must give up."""
        raise BadRequest(f"datatype {self.name} cannot resolve merge conflicts")

    def tombstone(self, ctx: InstanceContext, keys: list[str]) -> None:
        """Delete ``keys`` at ``ctx.node`` (used by resolve)."""
        raise BadRequest(f"datatype {self.name} cannot resolve merge conflicts")

    def drop(self, services: Services, instance: Instance) -> None:
        """Remove all stored data of a deleted instance."""
        services.store(instance.store).delete_prefix(f"data/{instance.data_uuid}/")
