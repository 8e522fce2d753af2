"""Every object key of chunk arrays, chunk-ownership bitmaps and volume extents.

Under an instance's root ``data/<DataUUID>`` (see docs/format.md):

``<root>/s<scale>/<node uuid>/...``
    the zarr v3 chunk array a node wrote at one scale (tensorstore's keys below it).
``<base>/owned/<node uuid>.roaring``
    the ids of the chunks (or mapping partitions) a node wrote under ``<base>``.
``<root>/extents/...``
    the per-version extents, as keyed records (:mod:`app.storage.keyed`).
"""

from __future__ import annotations


def chunk_array(root: str, scale: int) -> str:
    """The base of an instance's chunk arrays at ``scale``."""
    return f"{root}/s{scale}"


def node_array(base: str, node_uuid: str) -> str:
    """The prefix (tensorstore kvstore path) of the chunk array ``node_uuid`` wrote."""
    return f"{base}/{node_uuid}/"


def chunk(base: str, node_uuid: str, index: tuple[int, int, int]) -> str:
    """The object of one chunk of the array ``node_uuid`` wrote: ``index`` is the chunk's
    z, y, x position in the array (zarr v3 default chunk key encoding)."""
    z, y, x = index
    return f"{node_array(base, node_uuid)}c/{z}/{y}/{x}"


def owned(base: str, node_uuid: str) -> str:
    """The bitmap of chunk ids ``node_uuid`` wrote under ``base``."""
    return f"{base}/owned/{node_uuid}.roaring"


def extents(root: str) -> str:
    """The base of an instance's per-version extents records."""
    return f"{root}/extents"
