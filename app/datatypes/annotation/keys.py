"""Every record key of an annotation instance (keyed records, :mod:`app.storage.keyed`,
under ``data/<DataUUID>``; see docs/format.md).

``block/<x>_<y>_<z>``
    the elements whose position lies in that block, with relationships, and the supervoxel
    each lies on: ``{"sv": [supervoxels], "e": [elements]}``. The source of truth.
``label/<label as 16 hex digits>``
    the elements lying in that body of the synced segmentation, without relationships,
    with their supervoxels: ``{"sv": [...], "e": [...]}``.
``tag/<tag>``
    the elements carrying that tag, without relationships: ``[...]``.
"""

from __future__ import annotations

BLOCK = "block/"
LABEL = "label/"
TAG = "tag/"


def block_key(coord: tuple[int, int, int]) -> str:
    x, y, z = coord
    return f"{BLOCK}{x}_{y}_{z}"


def block_coord(key: str) -> tuple[int, int, int]:
    x, y, z = (int(v) for v in key[len(BLOCK) :].split("_"))
    return x, y, z


def label_key(label: int) -> str:
    """Fixed-width hex, so record order is numeric order."""
    return f"{LABEL}{label:016x}"


def label_of(key: str) -> int:
    return int(key[len(LABEL) :], 16)


def tag_key(tag: str) -> str:
    return f"{TAG}{tag}"


def prefix_range(prefix: str) -> tuple[str, str]:
    """The ``keys_in_range`` bounds of every key starting with ``prefix``."""
    return prefix, prefix + "\U0010ffff"
