"""Every object and record key of labelmap's state besides voxels (see docs/format.md).

Under the instance's root ``data/<DataUUID>``:

``index/...``
    keyed records (:mod:`app.storage.keyed`) of per-body ``LabelIndex`` protobufs, one per
    label under :func:`label_key`.
``counters/...``
    keyed records: under :data:`MAX_LABEL`, the largest label written at a node.
``maxrepolabel``
    the repo-wide largest label written or handed out, then a nonce.
``nextlabel``
    JSON: an admin-set start (and ceiling) for new labels, shared by every version.
``blobstore/<ref>``
    payloads mutation records refer to (split RLEs), named by their SHA-256.
``aliases/...``
    keyed records: per body, the bodies merge or renumber folded into it (uint64 LE).
``renames/<node uuid>/<partition>.npz``
    like ``mapping/``: bodies folded into another body -> that body.
``mapping/<node uuid>/<partition>.npz``
    a whole mapping partition as of that node; which partitions a node wrote is a bitmap
    under ``mapping/owned/`` (:func:`app.volumes.keys.owned`).
"""

from __future__ import annotations

#: The counters record holding the largest label written at a node.
MAX_LABEL = "maxlabel"


def index(root: str) -> str:
    return f"{root}/index"


def counters(root: str) -> str:
    return f"{root}/counters"


def max_repo_label(root: str) -> str:
    return f"{root}/maxrepolabel"


def next_label(root: str) -> str:
    return f"{root}/nextlabel"


def blob(root: str, ref: str) -> str:
    return f"{root}/blobstore/{ref}"


def aliases(root: str) -> str:
    return f"{root}/aliases"


def renames(root: str) -> str:
    return f"{root}/renames"


def mapping(root: str) -> str:
    return f"{root}/mapping"


def label_key(label: int) -> str:
    """A label's record key: fixed-width hex, so keyed-record order is numeric order."""
    return f"{label:016x}"
