"""Where a labelsz instance keeps its counts (docs/format.md, "labelsz").

Under the instance root ``data/<DataUUID>``, one :class:`app.storage.idmap.IdMap` per
stored index type:

``<root>/sizes/<IndexType>/<node uuid>/<partition>.npz``
    label -> count for the labels of one partition, as of that node;
``<root>/sizes/<IndexType>/owned/<node uuid>.roaring``
    the partitions that node wrote.
"""

from __future__ import annotations

#: 2**6 partitions per index type: a ranking (``top``, ``threshold``) reads at most 64
#: small objects, and an edit rewrites only the few partitions its labels hash to.
PARTITION_BITS = 6


def counts(root: str, index_type: str) -> str:
    """The base of the label -> count map of one index type."""
    return f"{root}/sizes/{index_type}"
