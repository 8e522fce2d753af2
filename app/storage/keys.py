"""Every object key of the metadata space (``meta/``) and of the per-instance
transaction, mutation-log and sync records. docs/format.md lists them all; a test walks a
store after a workload and matches every key against that document.

Keys of keyed records are built in :mod:`app.storage.keyed`, of chunk arrays in
:mod:`app.volumes.keys`, of labelmap records in :mod:`app.datatypes.labelmap.keys`.
"""

from __future__ import annotations

#: The on-store format version object.
FORMAT = "meta/format"
#: ``meta/repos/<root>.json``: one repo's JSON.
REPOS = "meta/repos/"
#: ``meta/nodes/<uuid>``: a node's claim marker (root UUID and nonce).
NODES = "meta/nodes/"
#: The last VersionID handed out, then a nonce.
VERSION_COUNTER = "meta/version-counter"
#: ``meta/inflight/<node>/<time>-<id>``: a write to an open node in progress.
INFLIGHT = "meta/inflight/"
#: ``meta/probe-<hex>``: written and removed at start-up to check the store is writable.
PROBE = "meta/probe-"
#: ``meta/mutation-ids/<root>``: a repo's last mutation id handed out, then a nonce.
MUTATION_IDS = "meta/mutation-ids/"


def repo(root: str) -> str:
    return f"{REPOS}{root}.json"


def node_marker(uuid: str) -> str:
    return f"{NODES}{uuid}"


def mutation_ids(root: str) -> str:
    return f"{MUTATION_IDS}{root}"


def inflight_prefix(node_uuid: str) -> str:
    return f"{INFLIGHT}{node_uuid}/"


def inflight(node_uuid: str, stamp_ns: int, tag: str) -> str:
    return f"{inflight_prefix(node_uuid)}{stamp_ns:020d}-{tag}"


def instance_root(data_uuid: str) -> str:
    """Everything an instance stores lives under ``<root>/``."""
    return f"data/{data_uuid}"


# --- transactions, mutation log and syncs (app.storage.journal, app.storage.events) ------


def txn_head(data_uuid: str, node_uuid: str) -> str:
    """The (instance, version) transaction head: lock holder and last applied sequence."""
    return f"{instance_root(data_uuid)}/txn/{node_uuid}/head"


def txn_redo(data_uuid: str, node_uuid: str, seq: int) -> str:
    """The operations of transaction ``seq``, removed once applied."""
    return f"{instance_root(data_uuid)}/txn/{node_uuid}/redo-{seq:012d}"


def txn_stage(data_uuid: str, txn_id: str) -> str:
    """Prefix under which a transaction stages objects before it commits."""
    return f"{instance_root(data_uuid)}/stage/{txn_id}/"


def stage_root(data_uuid: str) -> str:
    return f"{instance_root(data_uuid)}/stage/"


def log_prefix(data_uuid: str, node_uuid: str) -> str:
    return f"{instance_root(data_uuid)}/log/{node_uuid}/"


def log_entry(data_uuid: str, node_uuid: str, seq: int) -> str:
    """Entry ``seq`` of the instance's mutation log at a version (its commit record)."""
    return f"{log_prefix(data_uuid, node_uuid)}{seq:012d}"


def sync_cursor(subscriber_uuid: str, source_uuid: str, node_uuid: str) -> str:
    """How far a subscriber has applied a source's mutation log at a version."""
    return f"{instance_root(subscriber_uuid)}/synced/{source_uuid}/{node_uuid}"
