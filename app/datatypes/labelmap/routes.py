"""labelmap endpoints, relative to ``/api/node/{uuid}/{dataname}``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from google.protobuf.message import Message

from app.api.common import RawBody, flag, json_list, json_response
from app.api.routing import LazyRoute
from app.datatypes.base import bound
from app.datatypes.labelmap import Labelmap, codecs
from app.datatypes.labelmap.ingest import write_blocks
from app.datatypes.labelmap.mutate import revive, supervoxels_of
from app.errors import BadRequest, NotFound
from app.proto import labelmap_pb2 as pb
from app.volumes import images
from app.volumes.geometry import (
    COORD_LIMIT,
    Box,
    Vec,
    check_blocks,
    coordinate,
    parse_block_list,
    parse_point,
    parse_points,
)
from app.volumes.requests import (
    array_bytes,
    bounded,
    parse_dims,
    parse_label,
    parse_labels,
    plane_box,
    plane_of,
    volume_box,
)

router = APIRouter(route_class=LazyRoute)

LabelmapData = Annotated[Labelmap, Depends(bound(Labelmap))]

OCTET = "application/octet-stream"

#: The largest label ``POST maxlabel`` records and ``POST nextlabel`` hands out.
MAX_COUNTED_LABEL = 2**48


def _scale(data: Labelmap, scale: int) -> int:
    top = data.settings.get("MaxDownresLevel", 0)
    if not 0 <= scale <= top:
        raise BadRequest(f"scale {scale} is outside 0..{top} (MaxDownresLevel)")
    return scale


#: ``compression=`` values of ``GET raw`` and of ``sparsevol``.
RAW_COMPRESSIONS = ("", "none", "lz4", "gzip", "google", "googlegzip")
SPARSEVOL_COMPRESSIONS = ("", "lz4", "gzip")
GZIPPED = {"Content-Encoding": "gzip"}


def _choice(value: str | None, allowed: tuple[str, ...]) -> str:
    """A ``compression=`` value, lower-cased; 400 naming the choices if unknown."""
    mode = (value or "").lower()
    if mode not in allowed:
        choices = ", ".join(a for a in allowed if a)
        raise BadRequest(f"unknown compression {value!r}: use {choices}")
    return mode


def read_labels(data: Labelmap, box: Box, scale: int, supervoxels: bool) -> np.ndarray:
    """Labels of ``box`` at ``scale``: supervoxels, or mapped to bodies."""
    labels = data.volume(_scale(data, scale)).read(box)
    return labels if supervoxels else data.bodies(labels)


# --- voxels ------------------------------------------------------------------------------


@router.get("/raw/{dims}/{size}/{offset}")
@router.get("/raw/{dims}/{size}/{offset}/{fmt}")
@router.get("/isotropic/{dims}/{size}/{offset}")
def get_raw(
    data: LabelmapData,
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
    mode = _choice(compression, RAW_COMPRESSIONS)
    axes = parse_dims(dims)
    if axes is not None:
        box = bounded(data, plane_box(axes, size, offset))
        plane = plane_of(read_labels(data, box, scale, flag(supervoxels)), axes)
        name, quality = images.parse_format(fmt, "png")
        if name == "raw":
            return Response(array_bytes(np.ascontiguousarray(plane)), media_type=OCTET)
        body = images.encode(plane, name, quality, "labelmap")
        return Response(body, media_type=images.MEDIA_TYPES[name])
    box = volume_box(data, size, offset)
    labels = read_labels(data, box, scale, flag(supervoxels))
    if mode in ("", "none"):
        return Response(array_bytes(np.ascontiguousarray(labels)), media_type=OCTET)
    if mode == "lz4":
        return Response(codecs.lz4_compress(labels), media_type=OCTET)
    if mode == "gzip":
        return Response(codecs.gzip_compress(labels, 1), media_type=OCTET)
    if any(s % 8 for s in box.size):
        raise BadRequest("compressed_segmentation needs a size that is a multiple of 8")
    if mode == "google":
        return Response(codecs.encode_google(labels), media_type=OCTET)
    return Response(codecs.encode_googlegzip(labels, 6), headers=GZIPPED, media_type=OCTET)


@router.post("/raw/{dims}/{size}/{offset}")
async def post_raw(
    request: Request,
    data: LabelmapData,
    dims: str,
    size: str,
    offset: str,
    compression: str | None = None,
    scale: int = 0,
) -> Response:
    """Block-aligned supervoxels at scale 0; indices, extents and lower scales follow.
    An uncompressed body is staged slab by slab of blocks as it arrives
    (:meth:`VolumeData.receive_staged`); a compressed one is read whole first."""
    if dims.lower().replace(",", "_") not in ("0_1_2", "vol"):
        raise BadRequest("only 3-D (0_1_2) label volumes can be POSTed")
    if scale != 0:
        raise BadRequest("POST raw writes scale 0 only; lower scales are computed")
    box = volume_box(data, size, offset)
    grid = data.volume().grid
    if not grid.is_aligned(box):
        raise BadRequest(f"POST raw needs a box aligned to blocks of {grid.block_size}")
    mode = (compression or "").lower()
    if mode not in ("", "none", "lz4", "gzip"):
        raise BadRequest(f"unknown compression {compression!r}: use lz4 or gzip")
    if mode in ("", "none") and data.can_stage_body():
        staged = await data.receive_staged(request, box)
        await run_in_threadpool(write_blocks, data, staged, staged=True)
        return Response()
    body = await request.body()
    await run_in_threadpool(_post_body, data, box, body, mode)
    return Response()


def _post_body(data: Labelmap, box: Box, body: bytes, mode: str) -> None:
    """``POST raw`` of a whole body in hand (compressed, or outside a transaction)."""
    expected = box.voxels * 8
    if mode in ("lz4", "gzip"):
        try:
            body = codecs.decompress_volume(body, mode, expected)
        except codecs.BadBlock as e:
            raise BadRequest(f"body does not decompress as {mode}: {e}") from None
    if len(body) != expected:
        raise BadRequest(f"body has {len(body)} bytes but {box.size} uint64 voxels need {expected}")
    labels = np.frombuffer(body, dtype="<u8").reshape(box.shape_zyx)
    grid = data.volume().grid
    blocks = []
    for x, y, z in grid.iter_blocks(box):
        part = grid.block_box((x, y, z))
        blocks.append(((x, y, z), np.ascontiguousarray(labels[part.slices_in(box)])))
    write_blocks(data, blocks)


def _block_stream(
    data: Labelmap, coords: np.ndarray, scale: int, supervoxels: bool, mode: str
) -> bytes:
    if mode not in codecs.PAYLOAD_FORMATS:
        raise BadRequest(f"unknown block compression {mode!r}: use blocks, uncompressed, lz4, gzip")
    records = []
    for coord, voxels in data.volume(scale).read_blocks(coords):
        labels = voxels if supervoxels else data.bodies(voxels)
        payload = codecs.encode_block_payload(np.ascontiguousarray(labels), mode, gzip_level=1)
        records.append((coord, payload))
    return codecs.write_block_stream(records)


@router.get("/blocks/{size}/{offset}")
def get_blocks(
    data: LabelmapData,
    size: str,
    offset: str,
    scale: int = 0,
    supervoxels: str | None = None,
    compression: str = "lz4",
) -> Response:
    box = volume_box(data, size, offset)
    grid = data.volume(_scale(data, scale)).grid
    if not grid.is_aligned(box):
        raise BadRequest(f"blocks needs a box aligned to blocks of {grid.block_size}")
    body = _block_stream(data, grid.blocks(box), scale, flag(supervoxels), compression.lower())
    return Response(body, media_type=OCTET)


@router.get("/specificblocks")
def specificblocks(
    data: LabelmapData,
    blocks: str = "",
    scale: int = 0,
    supervoxels: str | None = None,
    compression: str = "blocks",
) -> Response:
    coords = parse_block_list(blocks)
    body = _block_stream(data, coords, _scale(data, scale), flag(supervoxels), compression.lower())
    return Response(body, media_type=OCTET)


@router.post("/blocks")
def post_blocks(
    data: LabelmapData,
    body: RawBody,
    scale: int = 0,
    downres: str | None = None,
    noindexing: str | None = None,
) -> Response:
    """DVID's block stream of gzip'd compressed label blocks."""
    _scale(data, scale)
    if flag(downres) and scale != 0:
        raise BadRequest("downres=true is only possible for scale 0 blocks")
    blocks = _parse_stream(data, body)
    write_blocks(
        data, blocks, scale, index=scale == 0 and not flag(noindexing), downres=flag(downres)
    )
    return Response()


@router.post("/ingest-supervoxels")
def ingest_supervoxels(data: LabelmapData, body: RawBody, scale: int = 0) -> Response:
    """Blocks only: no indexing, counters, extents or downres (the client does those)."""
    _scale(data, scale)
    write_blocks(data, _parse_stream(data, body), scale, bookkeeping=False)
    return Response()


def _parse_stream(data: Labelmap, body: bytes) -> list[tuple[Vec, np.ndarray]]:
    """The blocks of a block stream of gzip'd compressed label blocks, each inflated no
    further than a block of the instance's size can be."""
    bx, by, bz = data.block_size
    try:
        records = codecs.read_block_stream(body)
        check_blocks(np.array([coord for coord, _ in records]), "block stream coordinate")
        return [
            (coord, codecs.decode_block_payload(payload, "blocks", (bz, by, bx)))
            for coord, payload in records
        ]
    except codecs.BadBlock as e:
        raise BadRequest(f"bad block stream: {e}") from None


# --- points ------------------------------------------------------------------------------


@router.get("/label/{point}")
def get_label(
    data: LabelmapData, point: str, scale: int = 0, supervoxels: str | None = None
) -> Response:
    pt = np.array([parse_point(point)], dtype=np.int64)
    label = data.labels_at(pt, _scale(data, scale), flag(supervoxels))
    return json_response({"Label": int(label[0])})


@router.get("/labels")
@router.post("/labels")
def get_labels(
    data: LabelmapData,
    body: RawBody,
    scale: int = 0,
    supervoxels: str | None = None,
    hash: str | None = None,
) -> Response:
    """Labels at the points the body lists (also answered to POST: it only reads)."""
    array = parse_points(json_list(body, "[x,y,z] points", hash))
    labels = data.labels_at(array, _scale(data, scale), flag(supervoxels))
    return json_response(labels.tolist())


# --- label index queries -----------------------------------------------------------------


def require_indexed(data: Labelmap) -> None:
    data.require_indexed()


def _index(data: Labelmap, label: int, supervoxels: bool) -> pb.LabelIndex:
    """The label's index (or, for a supervoxel, its body's index restricted to it)."""
    require_indexed(data)
    label = parse_label(label)
    body = label
    if supervoxels:
        body = int(data.mapping.lookup(np.array([label], np.uint64))[0])
    index = data.indices().get(body)
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
def get_size(data: LabelmapData, label: int, supervoxels: str | None = None) -> Response:
    return json_response({"voxels": _voxels(_index(data, label, flag(supervoxels)))})


@router.get("/sizes")
@router.post("/sizes")
def get_sizes(
    data: LabelmapData, body: RawBody, supervoxels: str | None = None, hash: str | None = None
) -> Response:
    """Sizes of the labels the body lists (also answered to POST: it only reads)."""
    sizes = []
    for label in parse_labels(json_list(body, "labels", hash)):
        try:
            sizes.append(_voxels(_index(data, label, flag(supervoxels))) if label else 0)
        except NotFound:
            sizes.append(0)
    return json_response(sizes)


@router.get("/supervoxels/{label}")
def get_supervoxels(data: LabelmapData, label: int) -> Response:
    return json_response(sorted(supervoxels_of(_index(data, label, False))))


@router.get("/supervoxel-sizes/{label}")
def get_supervoxel_sizes(data: LabelmapData, label: int) -> Response:
    index = _index(data, label, False)
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
def sparsevol_size(data: LabelmapData, label: int, supervoxels: str | None = None) -> Response:
    index = _index(data, label, flag(supervoxels))
    coords = _block_coords(index)
    size = np.array(data.block_size)
    return json_response(
        {
            "voxels": _voxels(index),
            "numblocks": len(coords),
            "minvoxel": (coords.min(axis=0) * size).tolist(),
            "maxvoxel": ((coords.max(axis=0) + 1) * size - 1).tolist(),
        }
    )


@router.get("/sparsevol-coarse/{label}")
def sparsevol_coarse(data: LabelmapData, label: int, supervoxels: str | None = None) -> Response:
    coords = _block_coords(_index(data, label, flag(supervoxels)))
    return Response(codecs.encode_coarse(coords), media_type=OCTET)


@router.get("/sparsevols-coarse/{begin}/{end}")
def sparsevols_coarse(data: LabelmapData, begin: int, end: int) -> Response:
    first = parse_label(begin, "begin label", zero_ok=True)
    last = parse_label(end, "end label", zero_ok=True)
    indices = data.indices()
    found = {}
    for label in indices.labels(first, last):
        index = indices.get(label)
        if index is not None:
            found[label] = _block_coords(index)
    return Response(codecs.encode_coarse_multi(found), media_type=OCTET)


@dataclass
class SparsevolBounds:
    """Query parameters limiting a sparse volume to voxels within (inclusive) bounds."""

    minx: int | None = None
    miny: int | None = None
    minz: int | None = None
    maxx: int | None = None
    maxy: int | None = None
    maxz: int | None = None

    def box(self) -> Box | None:
        """The bounds as a box (empty when a min exceeds its max), or None when unbounded."""
        given = {f"{end}{a}": getattr(self, f"{end}{a}") for end in ("min", "max") for a in "xyz"}
        if all(v is None for v in given.values()):
            return None
        edge = {"min": -COORD_LIMIT + 1, "max": COORD_LIMIT - 1}
        at = {k: edge[k[:3]] if v is None else coordinate(v, k) for k, v in given.items()}
        lo = (at["minx"], at["miny"], at["minz"])
        return Box.from_bounds(lo, (at["maxx"] + 1, at["maxy"] + 1, at["maxz"] + 1))


def _sparse_blocks(
    data: Labelmap, label: int, supervoxels: bool, scale: int, bounds: Box | None
) -> list[tuple[Vec, np.ndarray]]:
    """The label's voxels as (block coord, mask) at ``scale`` in blocks meeting ``bounds``."""
    index = _index(data, label, supervoxels)
    # Each block is tested only against the supervoxels its index entry lists.
    svs_of: dict[Vec, set[int]] = {}
    for key, entry in index.blocks.items():
        x, y, z = (c // 2**scale for c in codecs.decode_block_key(key))
        svs_of.setdefault((x, y, z), set()).update(entry.counts)
    coords = np.array(sorted(svs_of), dtype=np.int64).reshape(-1, 3)
    volume = data.volume(scale)
    grid = volume.grid
    keep = [
        c
        for c in coords.tolist()
        if bounds is None or grid.block_box(c).intersect(bounds) is not None
    ]
    if not keep:
        raise NotFound(f"label {label} has no voxels in the given bounds")
    found = volume.read_blocks(np.array(keep))
    return [
        (coord, _mask_of(voxels, np.fromiter(svs_of[coord], np.uint64))) for coord, voxels in found
    ]


def _mask_of(voxels: np.ndarray, svs: np.ndarray) -> np.ndarray:
    if svs.size == 1:
        return voxels == svs[0]
    return np.isin(voxels, svs)


@dataclass
class SparsevolQuery(SparsevolBounds):
    """Query parameters of ``sparsevol`` and ``sparsevol-by-point``."""

    format: str = "rles"
    scale: int = 0
    supervoxels: str | None = None
    exact: str | None = None
    compression: str | None = None


@router.get("/sparsevol/{label}")
def sparsevol(data: LabelmapData, label: int, q: Annotated[SparsevolQuery, Depends()]) -> Response:
    compression = _choice(q.compression, SPARSEVOL_COMPRESSIONS)
    fmt = q.format.lower()
    if fmt not in ("rles", "srles", "blocks"):
        raise BadRequest(f"unknown sparsevol format {q.format!r}: use rles, srles or blocks")
    bounds = q.box()
    masks = _sparse_blocks(data, label, flag(q.supervoxels), _scale(data, q.scale), bounds)
    grid = data.volume(q.scale).grid
    if fmt == "blocks":
        origin_masks = [(grid.block_box(c).offset, m) for c, m in masks]
        body = codecs.encode_binary_blocks(label, origin_masks, grid.block_size)
        return Response(body, media_type=OCTET)
    runs = []
    for coord, mask in masks:
        box = grid.block_box(coord)
        if bounds is not None and (q.exact is None or flag(q.exact)):
            inside = box.intersect(bounds)
            if inside is None:
                continue
            mask = mask[inside.slices_in(box)]
            box = inside
        runs.append(codecs.rles_from_mask(mask, box.offset))
    all_runs = np.concatenate(runs) if runs else np.empty((0, 4), np.int32)
    body = codecs.encode_srles(all_runs) if fmt == "srles" else codecs.encode_rles(all_runs)
    if compression == "lz4":
        body = codecs.lz4_compress(body)
    elif compression == "gzip":
        body = codecs.gzip_compress(body, 9)
    return Response(body, media_type=OCTET)


@router.head("/sparsevol/{label}")
def head_sparsevol(
    data: LabelmapData,
    label: int,
    bounds: Annotated[SparsevolBounds, Depends()],
    supervoxels: str | None = None,
) -> Response:
    box = bounds.box()
    try:
        _sparse_blocks(data, label, flag(supervoxels), 0, box)
    except NotFound:
        return Response(status_code=204)
    return Response()


@router.get("/sparsevol-by-point/{point}")
def sparsevol_by_point(
    data: LabelmapData, point: str, q: Annotated[SparsevolQuery, Depends()]
) -> Response:
    pt = np.array([parse_point(point)], dtype=np.int64)
    label = int(data.labels_at(pt, _scale(data, q.scale), flag(q.supervoxels))[0])
    if label == 0:
        raise BadRequest(f"point {point} is background")
    return sparsevol(data, label, q)


# --- counters ----------------------------------------------------------------------------


@router.get("/maxlabel")
def get_maxlabel(data: LabelmapData) -> Response:
    require_indexed(data)
    label = data.max_label()
    if label is None:
        raise BadRequest("no max label recorded at this version yet")
    return json_response({"maxlabel": label})


@router.post("/maxlabel/{label}")
def post_maxlabel(data: LabelmapData, label: int) -> Response:
    require_indexed(data)
    if not 0 < parse_label(label, "max label") <= MAX_COUNTED_LABEL:
        raise BadRequest("max label must be 1 to 2^48")
    data.raise_max_label(label)
    return Response()


@router.get("/nextlabel")
def get_nextlabel(data: LabelmapData) -> Response:
    require_indexed(data)
    return json_response({"nextlabel": data.next_new_label()})


@router.post("/nextlabel/{count}")
def post_nextlabel(data: LabelmapData, count: int) -> Response:
    """Reserve ``count`` new labels; refused (before anything is stored) when they would
    take the counter past 2^48, the largest label ``maxlabel`` records."""
    require_indexed(data)
    if count < 1:
        raise BadRequest("count must be at least 1")
    if count > MAX_COUNTED_LABEL:
        raise BadRequest(f"cannot reserve {count} labels: new labels stop at 2^48")
    start, end = data.new_labels(count, ceiling=MAX_COUNTED_LABEL)
    return json_response({"start": start, "end": end})


# --- listing, index and mapping access ---------------------------------------------------


@router.get("/listlabels")
def listlabels(
    data: LabelmapData,
    start: int = 0,
    number: int = Query(10_000_000, ge=1, le=10_000_000),
    sizes: str | None = None,
) -> Response:
    indices = data.indices()
    labels = indices.labels(parse_label(start, "start label", zero_ok=True))[:number]
    if not flag(sizes):
        return Response(np.array(labels, dtype="<u8").tobytes(), media_type=OCTET)
    pairs = []
    for label in labels:
        index = indices.get(label)
        pairs.extend([label, _voxels(index) if index else 0])
    return Response(np.array(pairs, dtype="<u8").tobytes(), media_type=OCTET)


@router.get("/index/{label}")
def get_index(
    data: LabelmapData, label: int, metadata_only: str | None = Query(None, alias="metadata-only")
) -> Response:
    index = _index(data, label, False)
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


M = TypeVar("M", bound=Message)


def _parse_message(body: bytes, message: type[M]) -> M:
    parsed = message()
    try:
        parsed.ParseFromString(body)
    except Exception as e:  # protobuf's DecodeError
        raise BadRequest(f"body is not a protobuf {message.__name__}: {e}") from None
    return parsed


@router.post("/index/{label}")
def post_index(data: LabelmapData, body: RawBody, label: int) -> Response:
    index = _parse_message(body, pb.LabelIndex)
    if index.label != parse_label(label):
        raise BadRequest(f"index is for label {index.label}, not {label}")
    data.indices().put(index)
    return Response()


@router.get("/indices")
def get_indices(data: LabelmapData, body: RawBody) -> Response:
    labels = json_list(body, "labels")
    if len(labels) > 50_000:
        raise BadRequest("at most 50,000 labels per request")
    indices = data.indices()
    out = pb.LabelIndices()
    for label in parse_labels(labels):
        out.indices.append(indices.get(label) or pb.LabelIndex(label=label))
    return Response(out.SerializeToString(), media_type=OCTET)


@router.post("/indices")
def post_indices(data: LabelmapData, body: RawBody) -> Response:
    parsed = _parse_message(body, pb.LabelIndices)
    if any(index.label == 0 for index in parsed.indices):
        raise BadRequest("label 0 cannot have an index")
    indices = data.indices()
    for index in parsed.indices:
        indices.put(index)
    if parsed.indices:
        # Bodies and their supervoxels are in use: new labels must come after all of them.
        svs = (sv for index in parsed.indices for e in index.blocks.values() for sv in e.counts)
        data.raise_max_label(max(max(index.label for index in parsed.indices), max(svs, default=0)))
    return Response()


@router.get("/mapping")
@router.post("/mapping")
def get_mapping(
    data: LabelmapData,
    body: RawBody,
    hash: str | None = None,
    nolookup: str | None = None,
) -> Response:
    """Bodies of the supervoxels the body lists (also answered to POST: it only reads)."""
    svs = parse_labels(json_list(body, "supervoxel ids", hash), "supervoxel id")
    ids = np.array(svs, dtype=np.uint64)
    bodies, explicit = data.mapping.lookup_explicit(ids)
    if not flag(nolookup) and data.indexed:
        # DVID: an id without a mapping entry counts only if its own index holds it.
        indices = data.indices()
        for i in np.nonzero(~explicit & (ids != 0))[0].tolist():
            index = indices.get(int(ids[i]))
            if index is None or not any(int(ids[i]) in e.counts for e in index.blocks.values()):
                bodies[i] = 0
    return json_response(bodies.tolist())


@router.get("/mappings")
def get_mappings(data: LabelmapData, format: str | None = None) -> Response:
    svs, bodies = data.mapping.entries()
    if format == "binary":
        pairs = np.stack([svs, bodies], axis=1).astype("<u8")
        return Response(pairs.tobytes(), media_type=OCTET)
    text = "".join(f"{s} {b}\n" for s, b in zip(svs.tolist(), bodies.tolist(), strict=True))
    return Response(text, media_type="text/plain")


@router.post("/mappings")
def post_mappings(data: LabelmapData, body: RawBody) -> Response:
    """Bulk mapping load (protobuf ``MappingOps``): every original id maps to ``mapped``."""
    ops = _parse_message(body, pb.MappingOps)
    svs, bodies = [], []
    for op in ops.mappings:
        svs.extend(op.original)
        bodies.extend([op.mapped] * len(op.original))
    if svs:
        ids = np.array(svs, np.uint64)
        targets = np.array(bodies, np.uint64)
        for body in np.unique(targets[targets != 0]):
            revive(data, int(body))
        data.mapping.update(ids, targets)
        # Every id named is in use: new labels (cleave, split) must come after all of them.
        data.raise_max_label(int(max(ids.max(), targets.max())))
    return Response()
