"""Where bulk commands write static files: ``DEST``, a folder (or ``file://`` path), an
``s3://bucket/prefix`` or a ``gs://bucket/prefix``, as a tensorstore kvstore spec.

The spec is made once by the command (S3 endpoint, region and credential source come from
the same code that builds the stores' own specs, :meth:`ObjectStore.tensorstore_kvstore`)
and shipped to the workers, which open it with tensorstore: the ``neuroglancer_precomputed``
driver writes volumes through it, and :func:`write` puts single files (mesh and skeleton
files, ``info`` edits) through the same I/O stack, so every destination behaves alike.
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorstore as ts

from backends import open_store

Spec = dict[str, Any]


def kvstore(dest: str, endpoint: str | None = None) -> Spec:
    """The kvstore spec of ``dest`` (a folder path ends with ``/``); ValueError for a
    destination that cannot be written: an unknown scheme, or a path that is a file.
    Nothing is written here."""
    if dest.startswith(("s3://", "gs://")):
        bucket = dest.split("://", 1)[1].split("/", 1)[0]
        if not bucket:
            raise ValueError(f"DEST {dest!r} names no bucket")
        from google.auth.exceptions import GoogleAuthError

        try:
            store = open_store(dest.rstrip("/"), endpoint=endpoint)
        except GoogleAuthError as e:
            raise ValueError(f"cannot reach DEST {dest}: {e}") from None
        spec = store.tensorstore_kvstore("")
        return {**spec, "path": _directory(str(spec.get("path", "")))}
    if "://" in dest and not dest.startswith("file://"):
        raise ValueError(f"DEST {dest!r} is not a folder, file://, s3:// or gs:// URL")
    path = os.path.abspath(dest.removeprefix("file://"))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"DEST {path} exists and is not a folder")
    return {"driver": "file", "path": _directory(path)}


def _directory(path: str) -> str:
    """A kvstore path naming a folder (tensorstore joins keys to it as they are)."""
    return path if not path or path.endswith("/") else path + "/"


def under(spec: Spec, folder: str) -> Spec:
    """The spec of ``folder`` inside ``spec``."""
    return {**spec, "path": _directory(spec.get("path", "") + folder.strip("/"))}


def describe(spec: Spec) -> str:
    """``file:///path/``, ``s3://bucket/prefix/``...: for messages and the summary."""
    scheme = {"file": "file://", "s3": "s3://", "gcs": "gs://"}[spec["driver"]]
    bucket = f"{spec['bucket']}/" if "bucket" in spec else ""
    return scheme + bucket + spec.get("path", "")


def read(spec: Spec, key: str) -> bytes | None:
    """The file ``key`` under ``spec``, or None if there is none."""
    result = ts.KvStore.open(spec).result().read(key).result()
    return bytes(result.value) if result.state == "value" else None


def write(spec: Spec, key: str, value: bytes) -> None:
    ts.KvStore.open(spec).result().write(key, value).result()


def write_many(spec: Spec, items: list[tuple[str, bytes]]) -> None:
    """Several files under ``spec``, written concurrently."""
    store = ts.KvStore.open(spec).result()
    for future in [store.write(key, value) for key, value in items]:
        future.result()


def link_info(spec: Spec, member: str, folder: str) -> None:
    """Name ``folder`` (``mesh``, ``skeletons``) as ``member`` of the volume ``info`` at
    ``spec``, if there is one (a volume exported earlier), so readers of the volume find
    it; without a volume the folder is opened on its own."""
    info = read(spec, "info")
    if info is None:
        return
    parsed = json.loads(info)
    if parsed.get(member) != folder:
        parsed[member] = folder
        write(spec, "info", json.dumps(parsed).encode())
