"""Checks that a labelmap's derived records agree with its voxels, through the HTTP API:
per label, the label index (blocks and supervoxel counts), ``size`` and ``listlabels``;
``maxlabel``; and scale 1 as the mode of scale 0. Used by the concurrency and kill tests."""

from __future__ import annotations

from collections import Counter

import httpx
import numpy as np

from app.datatypes.labelmap import codecs
from app.datatypes.labelmap.ingest import mode_downsample
from app.proto import labelmap_pb2 as pb


def node_url(base: str, uuid: str, name: str, path: str) -> str:
    return f"{base}/api/node/{uuid}/{name}/{path}"


def read_labels(
    client: httpx.Client,
    base: str,
    uuid: str,
    name: str,
    size: int,
    scale: int = 0,
    supervoxels: bool = True,
) -> np.ndarray:
    r = client.get(
        node_url(base, uuid, name, f"raw/0_1_2/{size}_{size}_{size}/0_0_0"),
        params={"supervoxels": str(supervoxels).lower(), "scale": str(scale)},
    )
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, "<u8").reshape(size, size, size)


def block_counts(volume: np.ndarray, block: int) -> dict[int, Counter[int]]:
    """label -> {block key: voxel count} recounted from a ZYX volume."""
    found: dict[int, Counter[int]] = {}
    nz, ny, nx = (s // block for s in volume.shape)
    for bz in range(nz):
        for by in range(ny):
            for bx in range(nx):
                cube = volume[
                    bz * block : (bz + 1) * block,
                    by * block : (by + 1) * block,
                    bx * block : (bx + 1) * block,
                ]
                labels, counts = np.unique(cube, return_counts=True)
                key = codecs.encode_block_key(bx, by, bz)
                for label, n in zip(labels.tolist(), counts.tolist(), strict=True):
                    if label:
                        found.setdefault(label, Counter())[key] = n
    return found


def index_problems(
    client: httpx.Client,
    base: str,
    uuid: str,
    name: str,
    size: int,
    block: int,
    candidates: list[int],
    max_written: int | None = None,
    max_scale: int = 0,
    bodies: bool = False,
) -> list[str]:
    """Every disagreement between the records and the voxels (empty if none). With
    ``bodies`` the candidates are bodies, recounted from the mapped volume (after merges
    and cleaves a body's index spans several supervoxels)."""
    volume = read_labels(client, base, uuid, name, size, supervoxels=not bodies)
    truth = block_counts(volume, block)
    problems = []
    for label in candidates:
        expected = truth.get(label, Counter())
        size_r = client.get(node_url(base, uuid, name, f"size/{label}"))
        index_r = client.get(node_url(base, uuid, name, f"index/{label}"))
        if not expected:
            if size_r.status_code != 404 or index_r.status_code != 404:
                problems.append(f"label {label}: absent, but size {size_r.status_code}")
            continue
        voxels = sum(expected.values())
        if size_r.status_code != 200 or size_r.json() != {"voxels": voxels}:
            problems.append(f"label {label}: size {size_r.text.strip()} != {voxels}")
        if index_r.status_code != 200:
            problems.append(f"label {label}: index {index_r.status_code}")
            continue
        index = pb.LabelIndex()
        index.ParseFromString(index_r.content)
        got = Counter({key: sum(entry.counts.values()) for key, entry in index.blocks.items()})
        if got != expected:
            problems.append(f"label {label}: index blocks {dict(got)} != {dict(expected)}")
    listed = client.get(node_url(base, uuid, name, "listlabels"))
    present = set(truth)
    if set(np.frombuffer(listed.content, "<u8").tolist()) != present:
        problems.append(f"listlabels {sorted(np.frombuffer(listed.content, '<u8'))} != {present}")
    if max_written is not None:
        got_max = client.get(node_url(base, uuid, name, "maxlabel")).json()
        if got_max != {"maxlabel": max_written}:
            problems.append(f"maxlabel {got_max} != {max_written}")
    upper = volume  # the scales hold supervoxels
    if bodies and max_scale:
        upper = read_labels(client, base, uuid, name, size)
    for scale in range(1, max_scale + 1):
        lower = read_labels(client, base, uuid, name, size >> scale, scale)
        if not np.array_equal(lower, mode_downsample(upper)):
            problems.append(f"scale {scale} is not the mode of scale {scale - 1}")
        upper = lower
    return problems
