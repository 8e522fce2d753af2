"""labelmap endpoints, relative to ``/api/node/{uuid}/{dataname}``."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from typing import Annotated

import lz4.block
import numpy as np
import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from app.api.common import RawBody, flag, json_response
from app.api.instances import Ctx
from app.blocks.geometry import Box, parse_point
from app.context import InstanceContext
from app.datatypes import images
from app.datatypes.labelmap import codecs
from app.datatypes.labelmap.ingest import write_blocks
from app.datatypes.volume_requests import (
    array_bytes,
    bounded,
    parse_dims,
    plane_box,
    plane_of,
    volume_box,
)
from app.errors import BadRequest, NotFound
from app.proto import labelmap_pb2 as pb

router = APIRouter()

OCTET = "application/octet-stream"


def _scale(ctx: InstanceContext, scale: int) -> int:
    top = ctx.instance.settings.get("MaxDownresLevel", 0)
    if not 0 <= scale <= top:
        raise BadRequest(f"scale {scale} is outside 0..{top} (MaxDownresLevel)")
    return scale


def _read(ctx: InstanceContext, box: Box, scale: int, supervoxels: bool) -> np.ndarray:
    """Labels of ``box`` at ``scale``: supervoxels, or mapped to bodies."""
    volume = ctx.datatype.volume(ctx.services, ctx.instance, scale)
    data = volume.read(ctx.repo.dag, ctx.version, ctx.mutable, box)
    return data if supervoxels else _map(ctx, data)


def _map(ctx: InstanceContext, data: np.ndarray) -> np.ndarray:
    """Supervoxels -> bodies. Labels come in long runs along x, so the distinct values
    are found among run heads and the result is rebuilt run by run (several times
    cheaper than ``np.unique(..., return_inverse=True)`` over every voxel)."""
    flat = data.ravel()
    if flat.size == 0:
        return data
    starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
    heads = flat[starts]
    svs = np.unique(heads)
    bodies = ctx.datatype.mapping(ctx.services, ctx.instance).lookup(
        ctx.repo.dag, ctx.version, ctx.mutable, svs
    )
    if np.array_equal(bodies, svs):
        return data
    lengths = np.diff(np.append(starts, flat.size))
    return np.repeat(bodies[np.searchsorted(svs, heads)], lengths).reshape(data.shape)


def _check_label(label: int) -> int:
    if label == 0:
        raise BadRequest("label 0 is background and cannot be queried")
    return label


# --- voxels ------------------------------------------------------------------------------


@router.get("/raw/{dims}/{size}/{offset}")
@router.get("/raw/{dims}/{size}/{offset}/{fmt}")
@router.get("/isotropic/{dims}/{size}/{offset}")
def get_raw(
    ctx: Ctx,
    dims: str,
    size: str,
    offset: str,
    fmt: str | None = None,
    scale: int = 0,
    supervoxels: str | None = None,
    compression: str | None = None,
) -> Response:
    """3-D labels, raw uint64 ZYX or compressed (lz4, gzip, google, googlegzip); 2-D
    slices as images (uint64 as DVID's 16-bit RGBA PNG)."""
    axes = parse_dims(dims)
    if axes is not None:
        box = bounded(ctx, plane_box(axes, size, offset))
        plane = plane_of(_read(ctx, box, _scale(ctx, scale), flag(supervoxels)), axes)
        name, quality = images.parse_format(fmt, "png")
        if name == "raw":
            return Response(array_bytes(np.ascontiguousarray(plane)), media_type=OCTET)
        body = images.encode(plane, name, quality, "labelmap")
        return Response(body, media_type=images.MEDIA_TYPES[name])
    box = volume_box(ctx, size, offset)
    data = _read(ctx, box, _scale(ctx, scale), flag(supervoxels))
    mode = (compression or "").lower()
    if mode in ("", "none"):
        return Response(array_bytes(np.ascontiguousarray(data)), media_type=OCTET)
    if mode == "lz4":
        return Response(lz4.block.compress(data.tobytes(), store_size=False), media_type=OCTET)
    if mode == "gzip":
        return Response(gzip.compress(data.tobytes(), compresslevel=1), media_type=OCTET)
    if mode in ("google", "googlegzip"):
        if any(s % 8 for s in box.size):
            raise BadRequest("compressed_segmentation needs a size that is a multiple of 8")
        encoded = codecs.encode_google(data)
        if mode == "google":
            return Response(encoded, media_type=OCTET)
        return Response(
            gzip.compress(encoded, compresslevel=6),
            media_type=OCTET,
            headers={"Content-Encoding": "gzip"},
        )
    raise BadRequest(f"unknown compression {compression!r}: use lz4, gzip, google or googlegzip")


@router.post("/raw/{dims}/{size}/{offset}")
def post_raw(
    ctx: Ctx,
    body: RawBody,
    dims: str,
    size: str,
    offset: str,
    compression: str | None = None,
    scale: int = 0,
) -> Response:
    """Block-aligned supervoxels at scale 0; indices, extents and lower scales follow."""
    if dims.lower().replace(",", "_") not in ("0_1_2", "vol"):
        raise BadRequest("only 3-D (0_1_2) label volumes can be POSTed")
    if scale != 0:
        raise BadRequest("POST raw writes scale 0 only; lower scales are computed")
    box = volume_box(ctx, size, offset)
    volume = ctx.datatype.volume(ctx.services, ctx.instance, 0)
    if not volume.grid.is_aligned(box):
        raise BadRequest(f"POST raw needs a box aligned to blocks of {volume.grid.block_size}")
    expected = box.voxels * 8
    mode = (compression or "").lower()
    try:
        if mode == "lz4":
            body = lz4.block.decompress(body, uncompressed_size=expected)
        elif mode == "gzip":
            body = gzip.decompress(body)
        elif mode not in ("", "none"):
            raise BadRequest(f"unknown compression {compression!r}: use lz4 or gzip")
    except (lz4.block.LZ4BlockError, OSError, EOFError) as e:
        raise BadRequest(f"body does not decompress as {mode}: {e}") from None
    if len(body) != expected:
        raise BadRequest(f"body has {len(body)} bytes but {box.size} uint64 voxels need {expected}")
    data = np.frombuffer(body, dtype="<u8").reshape(box.shape_zyx)
    blocks = []
    for x, y, z in volume.grid.iter_blocks(box):
        part = volume.grid.block_box((x, y, z))
        blocks.append(((x, y, z), np.ascontiguousarray(data[part.slices_in(box)])))
    write_blocks(ctx, blocks)
    return Response()


def _encode_payload(voxels: np.ndarray, mode: str) -> bytes:
    if mode == "blocks":
        return gzip.compress(codecs.encode_block(voxels), compresslevel=1)
    if mode == "uncompressed":
        return voxels.tobytes()
    if mode == "lz4":
        return lz4.block.compress(voxels.tobytes(), store_size=False)
    if mode == "gzip":
        return gzip.compress(voxels.tobytes(), compresslevel=1)
    raise BadRequest(f"unknown block compression {mode!r}: use blocks, uncompressed, lz4, gzip")


def _block_stream(
    ctx: InstanceContext, coords: np.ndarray, scale: int, supervoxels: bool, mode: str
) -> bytes:
    volume = ctx.datatype.volume(ctx.services, ctx.instance, scale)
    records = []
    for coord, voxels in volume.read_blocks(ctx.repo.dag, ctx.version, ctx.mutable, coords):
        labels = voxels if supervoxels else _map(ctx, voxels)
        records.append((coord, _encode_payload(np.ascontiguousarray(labels), mode)))
    return codecs.write_block_stream(records)


@router.get("/blocks/{size}/{offset}")
def get_blocks(
    ctx: Ctx,
    size: str,
    offset: str,
    scale: int = 0,
    supervoxels: str | None = None,
    compression: str = "lz4",
) -> Response:
    box = volume_box(ctx, size, offset)
    grid = ctx.datatype.volume(ctx.services, ctx.instance, _scale(ctx, scale)).grid
    if not grid.is_aligned(box):
        raise BadRequest(f"blocks needs a box aligned to blocks of {grid.block_size}")
    body = _block_stream(ctx, grid.blocks(box), scale, flag(supervoxels), compression.lower())
    return Response(body, media_type=OCTET)


@router.get("/specificblocks")
def specificblocks(
    ctx: Ctx,
    blocks: str = "",
    scale: int = 0,
    supervoxels: str | None = None,
    compression: str = "blocks",
) -> Response:
    try:
        values = [int(v) for v in blocks.split(",") if v.strip()]
    except ValueError:
        raise BadRequest("blocks must be comma-separated integers x1,y1,z1,...") from None
    if len(values) % 3:
        raise BadRequest("blocks must list whole block coordinates (a multiple of 3 numbers)")
    coords = np.array(values, dtype=np.int64).reshape(-1, 3)
    body = _block_stream(ctx, coords, _scale(ctx, scale), flag(supervoxels), compression.lower())
    return Response(body, media_type=OCTET)


@router.post("/blocks")
def post_blocks(
    ctx: Ctx,
    body: RawBody,
    scale: int = 0,
    downres: str | None = None,
    noindexing: str | None = None,
) -> Response:
    """DVID's block stream of gzip'd compressed label blocks."""
    _scale(ctx, scale)
    if flag(downres) and scale != 0:
        raise BadRequest("downres=true is only possible for scale 0 blocks")
    _ingest_stream(
        ctx, body, scale, index=scale == 0 and not flag(noindexing), downres=flag(downres)
    )
    return Response()


@router.post("/ingest-supervoxels")
def ingest_supervoxels(ctx: Ctx, body: RawBody, scale: int = 0) -> Response:
    """Blocks only: no indexing, counters, extents or downres (the client does those)."""
    _scale(ctx, scale)
    _ingest_stream(ctx, body, scale, index=False, downres=False, bookkeeping=False)
    return Response()


def _ingest_stream(
    ctx: InstanceContext,
    body: bytes,
    scale: int,
    index: bool,
    downres: bool,
    bookkeeping: bool = True,
) -> None:
    bx, by, bz = ctx.instance.settings["BlockSize"]
    try:
        records = codecs.read_block_stream(body)
        blocks = [
            (coord, codecs.decode_block(gzip.decompress(payload), (bz, by, bx)))
            for coord, payload in records
        ]
    except (codecs.BadBlock, OSError, EOFError) as e:
        raise BadRequest(f"bad block stream: {e}") from None
    if bookkeeping:
        write_blocks(ctx, blocks, scale, index=index, downres=downres)
    else:
        ctx.datatype.volume(ctx.services, ctx.instance, scale).write_blocks(ctx.version, blocks)


# --- points ------------------------------------------------------------------------------


def _labels_at(
    ctx: InstanceContext, points: np.ndarray, scale: int, supervoxels: bool
) -> np.ndarray:
    """Labels at voxel points (n, 3 x,y,z), reading each block once."""
    volume = ctx.datatype.volume(ctx.services, ctx.instance, scale)
    size = np.array(volume.grid.block_size, dtype=np.int64)
    blocks = np.floor_divide(points, size)
    keys, inverse = np.unique(codecs.encode_block_keys(blocks), return_inverse=True)
    unique = codecs.decode_block_keys(keys)
    found = dict(volume.read_blocks(ctx.repo.dag, ctx.version, ctx.mutable, unique))
    labels = np.zeros(len(points), dtype=np.uint64)
    inner = points - blocks * size
    for i, coord in enumerate(unique.tolist()):
        voxels = found.get(tuple(coord))
        if voxels is None:
            continue
        sel = np.nonzero(inverse.ravel() == i)[0]
        labels[sel] = voxels[inner[sel, 2], inner[sel, 1], inner[sel, 0]]
    if not supervoxels:
        labels = ctx.datatype.mapping(ctx.services, ctx.instance).lookup(
            ctx.repo.dag, ctx.version, ctx.mutable, labels
        )
        labels[labels == 0] = 0
    return labels


@router.get("/label/{point}")
def get_label(ctx: Ctx, point: str, scale: int = 0, supervoxels: str | None = None) -> Response:
    pt = np.array([parse_point(point)], dtype=np.int64)
    label = _labels_at(ctx, pt, _scale(ctx, scale), flag(supervoxels))
    return json_response({"Label": int(label[0])})


def _json_list(body: bytes, what: str, hash_: str | None = None) -> list:
    if hash_ is not None and hashlib.md5(body).hexdigest() != hash_.lower():
        raise BadRequest("body does not match the given hash")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"body must be a JSON list of {what}: {e}") from None
    if not isinstance(value, list):
        raise BadRequest(f"body must be a JSON list of {what}")
    return value


@router.get("/labels")
def get_labels(
    ctx: Ctx,
    body: RawBody,
    scale: int = 0,
    supervoxels: str | None = None,
    hash: str | None = None,
) -> Response:
    points = _json_list(body, "[x,y,z] points", hash)
    try:
        array = np.array(points, dtype=np.int64).reshape(-1, 3)
    except (ValueError, TypeError):
        raise BadRequest("body must be a JSON list of [x,y,z] integer points") from None
    if len(points) and array.shape[0] != len(points):
        raise BadRequest("body must be a JSON list of [x,y,z] integer points")
    labels = _labels_at(ctx, array, _scale(ctx, scale), flag(supervoxels))
    return json_response(labels.tolist())


# --- label index queries -----------------------------------------------------------------


def _require_indexed(ctx: InstanceContext) -> None:
    if not ctx.instance.settings.get("IndexedLabels", True):
        raise BadRequest(f"instance {ctx.instance.name!r} does not index labels")


def _index(ctx: InstanceContext, label: int, supervoxels: bool) -> pb.LabelIndex:
    """The label's index (or, for a supervoxel, its body's index restricted to it)."""
    dt = ctx.datatype
    _require_indexed(ctx)
    _check_label(label)
    body = label
    if supervoxels:
        body = int(
            dt.mapping(ctx.services, ctx.instance).lookup(
                ctx.repo.dag, ctx.version, ctx.mutable, np.array([label], np.uint64)
            )[0]
        )
    index = dt.indices(ctx.services, ctx.instance).get(dt.index_view(ctx), body)
    if index is None:
        raise NotFound(f"label {label} not found")
    if supervoxels:
        only = pb.LabelIndex(label=label)
        for key, entry in index.blocks.items():
            if label in entry.counts:
                only.blocks[key].counts[label] = entry.counts[label]
        if not only.blocks:
            raise NotFound(f"supervoxel {label} not found")
        return only
    return index


def _voxels(index: pb.LabelIndex) -> int:
    return sum(sum(entry.counts.values()) for entry in index.blocks.values())


@router.get("/size/{label}")
def get_size(ctx: Ctx, label: int, supervoxels: str | None = None) -> Response:
    return json_response({"voxels": _voxels(_index(ctx, label, flag(supervoxels)))})


@router.get("/sizes")
def get_sizes(
    ctx: Ctx, body: RawBody, supervoxels: str | None = None, hash: str | None = None
) -> Response:
    sizes = []
    for label in _json_list(body, "labels", hash):
        if not isinstance(label, int) or label < 0:
            raise BadRequest(f"bad label {label!r}")
        try:
            sizes.append(_voxels(_index(ctx, label, flag(supervoxels))) if label else 0)
        except NotFound:
            sizes.append(0)
    return json_response(sizes)


@router.get("/supervoxels/{label}")
def get_supervoxels(ctx: Ctx, label: int) -> Response:
    index = _index(ctx, label, False)
    svs = sorted({sv for entry in index.blocks.values() for sv in entry.counts})
    return json_response(svs)


@router.get("/supervoxel-sizes/{label}")
def get_supervoxel_sizes(ctx: Ctx, label: int) -> Response:
    index = _index(ctx, label, False)
    sizes: dict[int, int] = {}
    for entry in index.blocks.values():
        for sv, n in entry.counts.items():
            sizes[sv] = sizes.get(sv, 0) + n
    svs = sorted(sizes)
    return json_response({"supervoxels": svs, "sizes": [sizes[s] for s in svs]})


def _block_coords(index: pb.LabelIndex) -> np.ndarray:
    keys = np.array(sorted(index.blocks), dtype=np.uint64)
    return codecs.decode_block_keys(keys) if keys.size else np.empty((0, 3), np.int64)


@router.get("/sparsevol-size/{label}")
def sparsevol_size(ctx: Ctx, label: int, supervoxels: str | None = None) -> Response:
    index = _index(ctx, label, flag(supervoxels))
    coords = _block_coords(index)
    size = np.array(ctx.instance.settings["BlockSize"])
    return json_response(
        {
            "voxels": _voxels(index),
            "numblocks": len(coords),
            "minvoxel": (coords.min(axis=0) * size).tolist(),
            "maxvoxel": ((coords.max(axis=0) + 1) * size - 1).tolist(),
        }
    )


@router.get("/sparsevol-coarse/{label}")
def sparsevol_coarse(ctx: Ctx, label: int, supervoxels: str | None = None) -> Response:
    coords = _block_coords(_index(ctx, label, flag(supervoxels)))
    return Response(codecs.encode_coarse(coords), media_type=OCTET)


@router.get("/sparsevols-coarse/{begin}/{end}")
def sparsevols_coarse(ctx: Ctx, begin: int, end: int) -> Response:
    dt = ctx.datatype
    view = dt.index_view(ctx)
    indices = dt.indices(ctx.services, ctx.instance)
    found = {}
    for label in indices.labels(view, begin, end):
        index = indices.get(view, label)
        if index is not None:
            found[label] = _block_coords(index)
    return Response(codecs.encode_coarse_multi(found), media_type=OCTET)


def _sparse_blocks(
    ctx: InstanceContext, label: int, supervoxels: bool, scale: int, request: Request
) -> tuple[list[tuple[tuple[int, int, int], np.ndarray]], Box | None]:
    """The label's voxels as (block coord, mask) at ``scale``, and the bounds asked."""
    index = _index(ctx, label, supervoxels)
    # Each block is tested only against the supervoxels its index entry lists.
    svs_of: dict[tuple[int, int, int], set[int]] = {}
    for key, entry in index.blocks.items():
        coord = tuple(c // 2**scale for c in codecs.decode_block_key(key))
        svs_of.setdefault(coord, set()).update(entry.counts)  # type: ignore[arg-type]
    coords = np.array(sorted(svs_of), dtype=np.int64).reshape(-1, 3)
    q = request.query_params
    lo = [int(q.get(f"min{a}", -(2**31))) for a in "xyz"]
    hi = [int(q.get(f"max{a}", 2**31 - 1)) for a in "xyz"]
    bounds = Box.from_bounds(tuple(lo), tuple(h + 1 for h in hi))  # type: ignore[arg-type]
    volume = ctx.datatype.volume(ctx.services, ctx.instance, scale)
    grid = volume.grid
    keep = [c for c in coords.tolist() if grid.block_box(tuple(c)).intersect(bounds) is not None]
    if not keep:
        raise NotFound(f"label {label} has no voxels in the given bounds")
    found = volume.read_blocks(ctx.repo.dag, ctx.version, ctx.mutable, np.array(keep))
    masks = [
        (coord, _mask_of(voxels, np.fromiter(svs_of[coord], np.uint64))) for coord, voxels in found
    ]
    limited = any(f"min{a}" in q or f"max{a}" in q for a in "xyz")
    return masks, bounds if limited else None


def _mask_of(voxels: np.ndarray, svs: np.ndarray) -> np.ndarray:
    if svs.size == 1:
        return voxels == svs[0]
    return np.isin(voxels, svs)


@dataclass
class SparsevolQuery:
    """Query parameters of ``sparsevol`` and ``sparsevol-by-point``."""

    format: str = "rles"
    scale: int = 0
    supervoxels: str | None = None
    exact: str | None = None
    compression: str | None = None


@router.get("/sparsevol/{label}")
def sparsevol(
    ctx: Ctx, request: Request, label: int, q: Annotated[SparsevolQuery, Depends()]
) -> Response:
    masks, bounds = _sparse_blocks(ctx, label, flag(q.supervoxels), _scale(ctx, q.scale), request)
    grid = ctx.datatype.volume(ctx.services, ctx.instance, q.scale).grid
    fmt = q.format.lower()
    if fmt == "blocks":
        origin_masks = [(grid.block_box(c).offset, m) for c, m in masks]
        body = codecs.encode_binary_blocks(label, origin_masks, grid.block_size)
        return Response(body, media_type=OCTET)
    clip = bounds is not None and (q.exact is None or flag(q.exact))
    runs = []
    for coord, mask in masks:
        box = grid.block_box(coord)
        if clip:
            inside = box.intersect(bounds)
            if inside is None:
                continue
            mask = mask[inside.slices_in(box)]
            box = inside
        runs.append(codecs.rles_from_mask(mask, box.offset))
    all_runs = np.concatenate(runs) if runs else np.empty((0, 4), np.int32)
    if fmt == "srles":
        body = codecs.encode_srles(all_runs)
    elif fmt == "rles":
        body = codecs.encode_rles(all_runs)
    else:
        raise BadRequest(f"unknown sparsevol format {q.format!r}: use rles, srles or blocks")
    if q.compression == "lz4":
        body = lz4.block.compress(body, store_size=False)
    elif q.compression == "gzip":
        body = gzip.compress(body)
    elif q.compression is not None:
        raise BadRequest(f"unknown compression {q.compression!r}: use lz4 or gzip")
    return Response(body, media_type=OCTET)


@router.head("/sparsevol/{label}")
def head_sparsevol(
    ctx: Ctx, request: Request, label: int, supervoxels: str | None = None
) -> Response:
    try:
        _sparse_blocks(ctx, label, flag(supervoxels), 0, request)
    except NotFound:
        return Response(status_code=204)
    return Response()


@router.get("/sparsevol-by-point/{point}")
def sparsevol_by_point(
    ctx: Ctx, request: Request, point: str, q: Annotated[SparsevolQuery, Depends()]
) -> Response:
    pt = np.array([parse_point(point)], dtype=np.int64)
    label = int(_labels_at(ctx, pt, _scale(ctx, q.scale), flag(q.supervoxels))[0])
    if label == 0:
        raise BadRequest(f"point {point} is background")
    return sparsevol(ctx, request, label, q)


# --- counters ----------------------------------------------------------------------------


@router.get("/maxlabel")
def get_maxlabel(ctx: Ctx) -> Response:
    _require_indexed(ctx)
    label = ctx.datatype.max_label(ctx)
    if label is None:
        raise BadRequest("no max label recorded at this version yet")
    return json_response({"maxlabel": label})


@router.post("/maxlabel/{label}")
def post_maxlabel(ctx: Ctx, label: int) -> Response:
    _require_indexed(ctx)
    if not 0 < label <= 2**48:
        raise BadRequest("max label must be 1 to 2^48")
    if label > (ctx.datatype.max_label(ctx) or 0):
        ctx.datatype.counters(ctx.services, ctx.instance).write(
            ctx.version.uuid, "maxlabel", str(label).encode()
        )
    ctx.datatype.repo_counter(ctx.services, ctx.instance).advance(at_least=label)
    return Response()


@router.get("/nextlabel")
def get_nextlabel(ctx: Ctx) -> Response:
    _require_indexed(ctx)
    current = ctx.datatype.repo_counter(ctx.services, ctx.instance).current()
    return json_response({"nextlabel": current + 1})


@router.post("/nextlabel/{count}")
def post_nextlabel(ctx: Ctx, count: int) -> Response:
    _require_indexed(ctx)
    if count < 1:
        raise BadRequest("count must be at least 1")
    previous, new = ctx.datatype.repo_counter(ctx.services, ctx.instance).advance(reserve=count)
    return json_response({"start": previous + 1, "end": new})


# --- listing, index and mapping access ---------------------------------------------------


@router.get("/listlabels")
def listlabels(
    ctx: Ctx,
    start: int = 0,
    number: int = Query(10_000_000, ge=1, le=10_000_000),
    sizes: str | None = None,
) -> Response:
    dt = ctx.datatype
    view = dt.index_view(ctx)
    indices = dt.indices(ctx.services, ctx.instance)
    labels = indices.labels(view, start)[:number]
    if not flag(sizes):
        return Response(np.array(labels, dtype="<u8").tobytes(), media_type=OCTET)
    pairs = []
    for label in labels:
        index = indices.get(view, label)
        pairs.extend([label, _voxels(index) if index else 0])
    return Response(np.array(pairs, dtype="<u8").tobytes(), media_type=OCTET)


@router.get("/index/{label}")
def get_index(
    ctx: Ctx, label: int, metadata_only: str | None = Query(None, alias="metadata-only")
) -> Response:
    index = _index(ctx, label, False)
    if flag(metadata_only):
        return json_response(
            {
                "num_voxels": _voxels(index),
                "last_mutid": index.last_mutid,
                "last_mod_time": index.last_mod_time,
                "last_mod_user": index.last_mod_user,
                "last_mod_app": index.last_mod_app,
            }
        )
    return Response(index.SerializeToString(), media_type=OCTET)


def _parse_index(body: bytes, message: type) -> object:
    parsed = message()
    try:
        parsed.ParseFromString(body)
    except Exception as e:  # protobuf's DecodeError
        raise BadRequest(f"body is not a protobuf {message.__name__}: {e}") from None
    return parsed


@router.post("/index/{label}")
def post_index(ctx: Ctx, body: RawBody, label: int) -> Response:
    index = _parse_index(body, pb.LabelIndex)
    if index.label != _check_label(label):
        raise BadRequest(f"index is for label {index.label}, not {label}")
    ctx.datatype.indices(ctx.services, ctx.instance).put(ctx.version.uuid, index)
    return Response()


@router.get("/indices")
def get_indices(ctx: Ctx, body: RawBody) -> Response:
    labels = _json_list(body, "labels")
    if len(labels) > 50_000:
        raise BadRequest("at most 50,000 labels per request")
    dt = ctx.datatype
    view = dt.index_view(ctx)
    indices = dt.indices(ctx.services, ctx.instance)
    out = pb.LabelIndices()
    for label in labels:
        if not isinstance(label, int) or label < 0:
            raise BadRequest(f"bad label {label!r}")
        out.indices.append(indices.get(view, label) or pb.LabelIndex(label=label))
    return Response(out.SerializeToString(), media_type=OCTET)


@router.post("/indices")
def post_indices(ctx: Ctx, body: RawBody) -> Response:
    parsed = _parse_index(body, pb.LabelIndices)
    if any(index.label == 0 for index in parsed.indices):
        raise BadRequest("label 0 cannot have an index")
    indices = ctx.datatype.indices(ctx.services, ctx.instance)
    for index in parsed.indices:
        indices.put(ctx.version.uuid, index)
    if parsed.indices:
        largest = max(index.label for index in parsed.indices)
        if largest > (ctx.datatype.max_label(ctx) or 0):
            ctx.datatype.counters(ctx.services, ctx.instance).write(
                ctx.version.uuid, "maxlabel", str(largest).encode()
            )
        ctx.datatype.repo_counter(ctx.services, ctx.instance).advance(at_least=largest)
    return Response()


@router.get("/mapping")
def get_mapping(
    ctx: Ctx,
    body: RawBody,
    hash: str | None = None,
    nolookup: str | None = None,
) -> Response:
    svs = _json_list(body, "supervoxel ids", hash)
    if not all(isinstance(s, int) and s >= 0 for s in svs):
        raise BadRequest("supervoxel ids must be non-negative integers")
    ids = np.array(svs, dtype=np.uint64)
    mapping = ctx.datatype.mapping(ctx.services, ctx.instance)
    bodies, explicit = mapping.lookup(ctx.repo.dag, ctx.version, ctx.mutable, ids, explicit=True)
    if not flag(nolookup) and ctx.instance.settings.get("IndexedLabels", True):
        # DVID: an id without a mapping entry counts only if its own index holds it.
        dt = ctx.datatype
        view = dt.index_view(ctx)
        indices = dt.indices(ctx.services, ctx.instance)
        for i in np.nonzero(~explicit & (ids != 0))[0].tolist():
            index = indices.get(view, int(ids[i]))
            if index is None or not any(int(ids[i]) in e.counts for e in index.blocks.values()):
                bodies[i] = 0
    return json_response(bodies.tolist())


@router.get("/mappings")
def get_mappings(ctx: Ctx, format: str | None = None) -> Response:
    svs, bodies = ctx.datatype.mapping(ctx.services, ctx.instance).entries(
        ctx.repo.dag, ctx.version, ctx.mutable
    )
    if format == "binary":
        pairs = np.stack([svs, bodies], axis=1).astype("<u8")
        return Response(pairs.tobytes(), media_type=OCTET)
    text = "".join(f"{s} {b}\n" for s, b in zip(svs.tolist(), bodies.tolist(), strict=True))
    return Response(text, media_type="text/plain")


@router.post("/mappings")
def post_mappings(ctx: Ctx, body: RawBody) -> Response:
    """Bulk mapping load (protobuf ``MappingOps``): every original id maps to ``mapped``."""
    ops = _parse_index(body, pb.MappingOps)
    svs, bodies = [], []
    for op in ops.mappings:
        svs.extend(op.original)
        bodies.extend([op.mapped] * len(op.original))
    if svs:
        ctx.datatype.mapping(ctx.services, ctx.instance).update(
            ctx.repo.dag, ctx.version, np.array(svs, np.uint64), np.array(bodies, np.uint64)
        )
    return Response()


@router.post("/sync")
def post_sync() -> Response:
    raise BadRequest("labelmap instances are not syncable")
