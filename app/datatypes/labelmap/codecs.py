"""Binary formats of DVID's labelmap, byte-compatible with DVID (spec labelmap.md section 3).

Everything here is a pure function over bytes and numpy arrays: no I/O, no global state.
Label volumes are numpy arrays indexed ``[z, y, x]`` (C order, x fastest), as DVID lays
voxels out on the wire; coordinates passed as tuples are ``(x, y, z)``, as in DVID's URLs.

Contents:

* DVID compressed label block (section 3.1): :func:`encode_block`, :func:`decode_block`,
  :func:`block_labels`, :func:`block_shape`, :func:`relabel_block`.
* Block stream (3.2): :func:`write_block_stream`, :func:`read_block_stream`,
  :func:`iter_block_stream`, and the per-block payload forms :func:`encode_block_payload` /
  :func:`decode_block_payload` (``blocks``, ``uncompressed``, ``lz4``, ``gzip``).
* Volume compressions (3.3): :func:`lz4_compress` / :func:`lz4_decompress` (raw LZ4 block),
  :func:`gzip_compress` / :func:`gzip_decompress`, :func:`decompress_volume` (a POSTed
  volume, size-bounded), :func:`encode_google` and :func:`encode_googlegzip` (neuroglancer
  compressed_segmentation), :func:`decode_google`, and :func:`encode_segmentation_chunk`
  (compressed_segmentation of any shape, as precomputed chunks hold it).
* Sparse volumes (3.4): :func:`rles_from_mask`, :func:`rles_to_mask`, :func:`encode_rles`,
  :func:`encode_srles`, :func:`decode_rles`, :func:`decode_srles`,
  :func:`encode_binary_blocks`, :func:`encode_coarse`, :func:`encode_coarse_multi`.
* Label index (3.5): :func:`encode_block_key`, :func:`decode_block_key`,
  :func:`encode_block_keys`, :func:`decode_block_keys`, :func:`compress_index`,
  :func:`decompress_index`.

Malformed input raises :class:`BadBlock` (a ``ValueError`` and an :class:`app.errors.BadRequest`,
so a handler that lets it propagate answers 400); bad arguments from our own code raise plain
``ValueError`` / ``TypeError``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping

import compressed_segmentation as _cseg
import fastremap
import lz4.block
import numpy as np

from app.errors import BadRequest
from app.volumes.lz4block import lz4_compress

__all__ = [
    "MAX_BLOCK_SIZE",
    "PAYLOAD_FORMATS",
    "SUB_BLOCK",
    "BadBlock",
    "block_labels",
    "block_shape",
    "compress_index",
    "decode_block",
    "decode_block_key",
    "decode_block_keys",
    "decode_block_payload",
    "decode_google",
    "decode_rles",
    "decode_srles",
    "decompress_index",
    "decompress_volume",
    "encode_binary_blocks",
    "encode_block",
    "encode_block_key",
    "encode_block_keys",
    "encode_block_payload",
    "encode_coarse",
    "encode_coarse_multi",
    "encode_google",
    "encode_googlegzip",
    "encode_rles",
    "encode_segmentation_chunk",
    "encode_srles",
    "gzip_compress",
    "gzip_decompress",
    "iter_block_stream",
    "lz4_compress",
    "lz4_decompress",
    "max_block_bytes",
    "read_block_stream",
    "relabel_block",
    "rles_from_mask",
    "rles_to_mask",
    "write_block_stream",
]

SUB_BLOCK = 8
"""Edge of a sub-block (and of a compressed_segmentation encoding block), in voxels."""

MAX_BLOCK_SIZE = 1024
"""Largest block edge DVID accepts (``labels.MaxBlockSize``)."""

_SB_VOXELS = SUB_BLOCK**3  # 512
_MAX_SB_PER_DIM = MAX_BLOCK_SIZE // SUB_BLOCK  # 128

_U16 = np.dtype("<u2")
_U32 = np.dtype("<u4")
_U64 = np.dtype("<u8")
_I32 = np.dtype("<i4")

_KEY_MAG_BITS = 20
_KEY_FIELD_BITS = 21
_KEY_MAG_MASK = (1 << _KEY_MAG_BITS) - 1
_KEY_SIGN = 1 << _KEY_MAG_BITS

_RLE_HEADER = bytes([0, 3, 0, 0]) + b"\x00\x00\x00\x00"  # binary, 3 dims, run along X, reserved
_STREAM_HDR = struct.Struct("<iiiI")


class BadBlock(BadRequest, ValueError):
    """Malformed binary input: a label block, stream record, RLE list or index envelope."""


# --------------------------------------------------------------------------------------------
# small helpers


def _bits_for(ns: np.ndarray) -> np.ndarray:
    """Bits per voxel index for sub-blocks with ``ns`` labels: ceil(log2(ns)), 0 for ns <= 1.

    Exact integer arithmetic (DVID's ``bitsFor``): the bit length of ``ns - 1``.
    """
    ns = np.asarray(ns, dtype=np.int64)
    m = np.maximum(ns - 1, 0)
    bits = np.zeros(m.shape, dtype=np.int64)
    # ns <= 512 in valid blocks, but compute the bit length for any 16-bit count.
    for shift in range(16):
        bits += (m >> shift) > 0
    return bits


def _check_block_array(labels: np.ndarray) -> np.ndarray:
    """Validate a ``[z, y, x]`` label array and return it as C-contiguous little-endian uint64."""
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise ValueError(f"label block must be 3-d [z,y,x], got shape {arr.shape}")
    if arr.dtype.kind not in "ui":
        raise TypeError(f"label block must have an integer dtype, got {arr.dtype}")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise ValueError("label block has negative labels")
    for n in arr.shape:
        if n < SUB_BLOCK or n > MAX_BLOCK_SIZE or n % SUB_BLOCK:
            raise ValueError(
                f"block shape {arr.shape} invalid: each dimension must be a multiple of "
                f"{SUB_BLOCK} between {SUB_BLOCK} and {MAX_BLOCK_SIZE}"
            )
    return np.ascontiguousarray(arr, dtype=_U64)


def _to_subblocks(vol: np.ndarray) -> np.ndarray:
    """[z,y,x] volume -> (Nsb, 512) rows, sub-blocks in ZYX order, voxels ZYX within each."""
    nz, ny, nx = vol.shape
    gz, gy, gx = nz // SUB_BLOCK, ny // SUB_BLOCK, nx // SUB_BLOCK
    v = vol.reshape(gz, SUB_BLOCK, gy, SUB_BLOCK, gx, SUB_BLOCK)
    return v.transpose(0, 2, 4, 1, 3, 5).reshape(gz * gy * gx, _SB_VOXELS)


def _from_subblocks(rows: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`_to_subblocks`: (Nsb, 512) rows -> C-contiguous [z,y,x] volume."""
    nz, ny, nx = shape
    gz, gy, gx = nz // SUB_BLOCK, ny // SUB_BLOCK, nx // SUB_BLOCK
    v = rows.reshape(gz, gy, gx, SUB_BLOCK, SUB_BLOCK, SUB_BLOCK)
    return np.ascontiguousarray(v.transpose(0, 3, 1, 4, 2, 5)).reshape(nz, ny, nx)


def _first_appearance(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber ``values`` 0..n-1 in order of first appearance (C order).

    Returns ``(renumbered, table)`` with ``table[renumbered] == values``. fastremap's hash
    renumbering is fastest but builds a Python dict of all distinct values, which dominates
    for tens of thousands of them; a 4096-voxel sample picks the sort-based path then.
    """
    flat = values.reshape(-1)
    sample = np.sort(flat[:: max(1, flat.size // 4096)])
    if np.count_nonzero(sample[1:] != sample[:-1]) >= 2048:
        uniq, first, inverse = fastremap.unique(flat, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty(order.size, dtype=np.int64)
        rank[order] = np.arange(order.size)
        return rank[inverse].reshape(values.shape), uniq[order].astype(np.uint64)
    ren, mapping = fastremap.renumber(values, start=0, preserve_zero=False)
    n = len(mapping)
    keys = np.fromiter(mapping.keys(), dtype=np.uint64, count=n)
    order = np.fromiter(mapping.values(), dtype=np.int64, count=n)
    table = np.empty(n, dtype=np.uint64)
    table[order] = keys
    return ren, table


# --------------------------------------------------------------------------------------------
# 3.1 DVID compressed label block


def _pack_values(local: np.ndarray, bits: int) -> np.ndarray:
    """Pack (m, 512) sub-block indices MSB-first at ``bits`` bits each -> (m, 64*bits) bytes.

    1, 2, 4 and 8 bits are byte-aligned groups. Otherwise eight values fill exactly ``bits``
    bytes: each group of eight is OR-ed into one integer whose low ``bits`` bytes are taken
    big-endian (9 bits make 72, so the top byte is split off first).
    """
    m = local.shape[0]
    if bits == 8:
        return local.astype(np.uint8)
    if bits == 1:
        return np.packbits(local.astype(np.uint8), axis=1)
    if bits in (2, 4):
        per = 8 // bits
        v8 = local.astype(np.uint8).reshape(m, 512 // per, per)
        out = v8[:, :, 0] << np.uint8(8 - bits)
        for j in range(1, per):
            out |= v8[:, :, j] << np.uint8(8 - bits * (j + 1))
        return out
    v = local.astype(np.uint64).reshape(m, 64, 8)
    if bits < 8:
        acc = v[:, :, 7].copy()
        for j in range(7):
            acc |= v[:, :, j] << np.uint64(bits * (7 - j))
        be = acc.astype(">u8").view(np.uint8).reshape(m, 64, 8)
        return be[:, :, 8 - bits :].reshape(m, 64 * bits)
    if bits != 9:
        raise ValueError(f"cannot pack {bits}-bit values")
    acc = (v[:, :, 0] & np.uint64(1)) << np.uint64(63)
    for j in range(1, 8):
        acc |= v[:, :, j] << np.uint64(9 * (7 - j))
    out = np.empty((m, 64, 9), dtype=np.uint8)
    out[:, :, 0] = v[:, :, 0] >> np.uint64(1)
    out[:, :, 1:] = acc.astype(">u8").view(np.uint8).reshape(m, 64, 8)
    return out.reshape(m, 64 * 9)


def _unpack_values(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`_pack_values`: (m, 64*bits) bytes -> (m, 512) uint16 indices."""
    m = packed.shape[0]
    if bits == 8:
        return packed.astype(np.uint16)
    if bits == 1:
        return np.unpackbits(packed, axis=1).astype(np.uint16)
    if bits in (2, 4):
        per = 8 // bits
        mask8 = np.uint8((1 << bits) - 1)
        out = np.empty((m, 512 // per, per), dtype=np.uint16)
        for j in range(per):
            out[:, :, j] = (packed >> np.uint8(8 - bits * (j + 1))) & mask8
        return out.reshape(m, _SB_VOXELS)
    groups = packed.reshape(m, 64, bits)
    wide = np.zeros((m, 64, 8), dtype=np.uint8)
    if bits < 8:
        wide[:, :, 8 - bits :] = groups
    else:  # 9 bits: the first byte holds the top 8 bits of the first value
        wide[:, :, :] = groups[:, :, 1:]
    acc = wide.view(">u8")[:, :, 0]
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((m, 64, 8), dtype=np.uint16)
    for j in range(8):
        out[:, :, j] = (acc >> np.uint64(bits * (7 - j))) & mask
    if bits == 9:
        out[:, :, 0] = (groups[:, :, 0].astype(np.uint16) << 1) | (acc >> np.uint64(63))
    return out.reshape(m, _SB_VOXELS)


def encode_block(labels: np.ndarray) -> bytes:
    """Encode a ``[z, y, x]`` label block into DVID's compressed label block format (3.1).

    Each dimension must be a multiple of 8 between 8 and 1024 (DVID itself only makes blocks
    of at least 16 per side, but reads any multiple of 8). A uniform block becomes a 24-byte
    solid block (N = 1). Otherwise the block table lists labels in order of first appearance
    scanning sub-blocks in ZYX order and voxels in ZYX order within each, and each sub-block's
    index list is in order of first appearance within the sub-block (what DVID does at the
    sub-block level; its block-level order is Go map order, i.e. random). So the output is
    deterministic, and for the same voxels differs from DVID's only by a permutation of the
    block table (and the index entries pointing into it): the ``Ns`` array and packed values
    are identical. For DVID's test block ``fib19-64x64x64-sample1-block`` it is byte-identical.
    """
    vol = _check_block_array(labels)
    nz, ny, nx = vol.shape
    gx, gy, gz = nx // SUB_BLOCK, ny // SUB_BLOCK, nz // SUB_BLOCK
    first = vol.flat[0]
    if (vol[0] == first).all() and (vol == first).all():  # cheap reject on the first plane
        return struct.pack("<4IQ", gx, gy, gz, 1, int(first))

    rows = _to_subblocks(vol)  # (Nsb, 512) copy, sub-block-major scan order
    nsb = rows.shape[0]
    blk, table = _first_appearance(rows)  # block-level indices, first-appearance order
    n = table.size

    # Sub-block level: renumber (sub-block, block index) pairs by first appearance in the same
    # scan. Pairs of sub-block i get consecutive numbers starting at off_i (its first voxel is
    # always a first appearance), in order of first appearance within the sub-block.
    key_dtype = np.dtype(np.uint32 if nsb * n < 2**32 else np.uint64)
    key = np.arange(nsb, dtype=key_dtype)[:, None] * np.array(n, key_dtype) + blk.astype(key_dtype)
    g, _ = _first_appearance(key)  # narrowest unsigned dtype (or int64)
    off = g[:, 0].astype(np.int64)
    ns = g.max(axis=1).astype(np.int64) - off + 1
    total = int(ns.sum())
    sb_idx = np.empty(total, dtype=_U32)
    sb_idx[g.reshape(-1)] = blk.reshape(-1)  # every write to one slot carries the same value

    bits = _bits_for(ns)
    nbytes = bits * (_SB_VOXELS // 8)  # 512*b bits is always a whole number of bytes
    vstart = np.concatenate(([0], np.cumsum(nbytes)[:-1]))
    values = np.empty(int(nbytes.sum()), dtype=np.uint8)
    for b in np.unique(bits[bits > 0]):
        sel = np.flatnonzero(bits == b)
        local = g[sel] - g[sel, :1]  # < 512, same unsigned dtype as g
        packed = _pack_values(local, int(b))
        values[vstart[sel, None] + np.arange(packed.shape[1])] = packed

    header = struct.pack("<4I", gx, gy, gz, n)
    return b"".join(
        (
            header,
            table.astype(_U64, copy=False).tobytes(),
            ns.astype(_U16).tobytes(),
            sb_idx.tobytes(),
            values.tobytes(),
        )
    )


def _parse_header(data: bytes | memoryview) -> tuple[int, int, int, int]:
    if len(data) < 24:
        raise BadBlock(f"label block too short: {len(data)} bytes, need at least 24")
    gx, gy, gz, n = struct.unpack_from("<4I", data, 0)
    if n == 0:
        raise BadBlock("label block has 0 labels (N=0)")
    for g in (gx, gy, gz):
        if g == 0 or g > _MAX_SB_PER_DIM:
            raise BadBlock(
                f"label block has {gx}x{gy}x{gz} sub-blocks: each must be 1..{_MAX_SB_PER_DIM}"
            )
    if len(data) < 16 + 8 * n:
        raise BadBlock(
            f"label block truncated in label table: {len(data)} bytes, table of {n} labels "
            f"needs {16 + 8 * n}"
        )
    return gx, gy, gz, n


def block_shape(data: bytes) -> tuple[int, int, int]:
    """The ``(nz, ny, nx)`` voxel shape a compressed label block declares in its header."""
    gx, gy, gz, _ = _parse_header(data)
    return gz * SUB_BLOCK, gy * SUB_BLOCK, gx * SUB_BLOCK


def block_labels(data: bytes) -> np.ndarray:
    """The block label table of a compressed label block, without decoding voxels.

    Returns a copy (uint64, in table order, possibly with duplicates or 0 entries; DVID
    tables may list labels no voxel uses, e.g. after in-place relabeling). Only the header
    and table are validated.
    """
    _, _, _, n = _parse_header(data)
    return np.frombuffer(data, dtype=_U64, count=n, offset=16).astype(np.uint64)


def relabel_block(
    data: bytes, mapping: Mapping[int, int] | Callable[[np.ndarray], np.ndarray]
) -> bytes:
    """Rewrite a compressed block's label table through ``mapping``, leaving voxels alone.

    This is how DVID serves mapped (agglomerated) block reads. ``mapping`` is either a dict
    ``{old: new}`` (labels not in it are kept) or a vectorized callable taking the uint64
    table array and returning an array of the same length. The result may hold duplicate
    labels in its table, which the format allows.
    """
    _, _, _, n = _parse_header(data)
    table = block_labels(data)
    if callable(mapping):
        new = np.asarray(mapping(table))
        if new.shape != table.shape:
            raise ValueError(f"relabel callable returned shape {new.shape}, want {table.shape}")
    else:
        new = np.fromiter(
            (mapping.get(int(v), int(v)) for v in table), dtype=np.uint64, count=table.size
        )
    new = new.astype(_U64)
    mv = memoryview(data)
    return b"".join((mv[:16], new.tobytes(), mv[16 + 8 * n :]))


def decode_block(data: bytes, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Decode a DVID compressed label block (3.1) into a ``[z, y, x]`` uint64 array.

    ``shape`` (``(nz, ny, nx)``), if given, must agree with the header. Validation is strict
    and raises :class:`BadBlock` for: fewer than 24 bytes, N = 0, sub-block counts of 0 or
    beyond 128, a header disagreeing with ``shape``, truncated label table / ``Ns`` /
    index / value sections, trailing bytes, ``Ns > 512``, indices into the label table out
    of range, and packed values beyond a sub-block's ``Ns``. (DVID itself ignores trailing
    bytes and does not range-check; we refuse rather than guess.) Pass ``shape`` for
    untrusted input: a 4 MB block may otherwise legally declare 1024³ voxels (8 GB).
    """
    gx, gy, gz, n = _parse_header(data)
    out_shape = (gz * SUB_BLOCK, gy * SUB_BLOCK, gx * SUB_BLOCK)
    if shape is not None and tuple(int(s) for s in shape) != out_shape:
        raise BadBlock(
            f"label block header says {gx}x{gy}x{gz} sub-blocks, i.e. shape (z,y,x) "
            f"{out_shape}, but {tuple(shape)} was expected"
        )
    size = len(data)
    if n == 1:
        if size != 24:
            raise BadBlock(f"solid label block must be 24 bytes, got {size}")
        label = np.frombuffer(data, dtype=_U64, count=1, offset=16)[0]
        return np.full(out_shape, label, dtype=np.uint64)

    nsb = gx * gy * gz
    pos = 16 + 8 * n
    if size < pos + 2 * nsb:
        raise BadBlock(
            f"label block truncated in sub-block label counts: {size} bytes, need {pos + 2 * nsb}"
        )
    table = np.frombuffer(data, dtype=_U64, count=n, offset=16)
    ns = np.frombuffer(data, dtype=_U16, count=nsb, offset=pos).astype(np.int64)
    pos += 2 * nsb
    if ns.max() > _SB_VOXELS:
        bad = int(np.argmax(ns))
        raise BadBlock(f"sub-block {bad} claims {int(ns[bad])} labels, more than 512 voxels")
    total = int(ns.sum())
    if size < pos + 4 * total:
        raise BadBlock(
            f"label block truncated in sub-block indices: {size} bytes, need {pos + 4 * total}"
        )
    sb_idx = np.frombuffer(data, dtype=_U32, count=total, offset=pos)
    pos += 4 * total
    if total and int(sb_idx.max()) >= n:
        raise BadBlock(
            f"sub-block index {int(sb_idx.max())} out of range for a table of {n} labels"
        )
    bits = _bits_for(ns)
    nbytes = bits * (_SB_VOXELS // 8)
    vbytes = int(nbytes.sum())
    if size < pos + vbytes:
        raise BadBlock(f"label block truncated in voxel values: {size} bytes, need {pos + vbytes}")
    if size > pos + vbytes:
        raise BadBlock(f"label block has {size - pos - vbytes} trailing bytes")

    off = np.concatenate(([0], np.cumsum(ns)[:-1]))
    sb_labels = table[sb_idx]  # label of each sub-block index entry
    rows = np.zeros((nsb, _SB_VOXELS), dtype=np.uint64)
    one = np.flatnonzero(ns == 1)
    if one.size:
        rows[one] = sb_labels[off[one], None]
    multi = bits > 0
    if multi.any():
        vbuf = np.frombuffer(data, dtype=np.uint8, count=vbytes, offset=pos)
        vstart = np.concatenate(([0], np.cumsum(nbytes)[:-1]))
        for b in np.unique(bits[multi]):
            sel = np.flatnonzero(bits == b)
            nb = int(b) * (_SB_VOXELS // 8)
            packed = vbuf[vstart[sel, None] + np.arange(nb)]
            local = _unpack_values(packed, int(b))
            partial = ns[sel] < (1 << int(b))  # only then can a b-bit value be out of range
            if partial.any():
                over = local[partial] >= ns[sel[partial], None]
                if over.any():
                    r, k = np.argwhere(over)[0]
                    sb = int(sel[partial][r])
                    raise BadBlock(
                        f"sub-block {sb} voxel {int(k)} has index "
                        f"{int(local[partial][r, k])} but only {int(ns[sb])} labels"
                    )
            rows[sel] = sb_labels[off[sel, None] + local]
    return _from_subblocks(rows, out_shape)


# --------------------------------------------------------------------------------------------
# 3.2 / 3.3 compressions and the block stream


def gzip_compress(data: bytes | memoryview | np.ndarray, level: int = 6) -> bytes:
    """Gzip (RFC 1952) ``data``; level 6 is Go's ``gzip.DefaultCompression``. Deterministic
    (header mtime 0)."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).data
    return zlib.compress(data, level, wbits=31)


def gzip_decompress(data: bytes | memoryview, max_size: int | None = None) -> bytes:
    """Inflate gzip data (concatenated members allowed, as Go's reader does).

    Raises :class:`BadBlock` on corrupt or truncated input, or when the output would exceed
    ``max_size`` bytes.
    """
    out: list[bytes] = []
    produced = 0
    buf = bytes(data)
    if not buf:
        raise BadBlock("empty gzip data")
    while buf:
        d = zlib.decompressobj(wbits=31)
        limit = 0 if max_size is None else max_size - produced + 1  # 0 = unlimited
        try:
            chunk = d.decompress(buf, limit)
        except zlib.error as e:
            raise BadBlock(f"bad gzip data: {e}") from None
        produced += len(chunk)
        if max_size is not None and (produced > max_size or d.unconsumed_tail):
            raise BadBlock(f"gzip data inflates beyond {max_size} bytes")
        out.append(chunk)
        if not d.eof:
            raise BadBlock("truncated gzip data")
        buf = d.unused_data
    return b"".join(out)


def lz4_decompress(data: bytes | memoryview, size: int) -> bytes:
    """Decompress one raw LZ4 block that must inflate to exactly ``size`` bytes (BadBlock)."""
    if size == 0:
        return b""
    try:
        out = lz4.block.decompress(data, uncompressed_size=size)
    except Exception as e:  # lz4.block.LZ4BlockError is not importable by name everywhere
        raise BadBlock(f"bad lz4 data (expected {size} bytes): {e}") from None
    if len(out) != size:
        raise BadBlock(f"lz4 data inflated to {len(out)} bytes, expected {size}")
    return out


def decompress_volume(data: bytes | memoryview, compression: str, size: int) -> bytes:
    """A volume compressed as ``compression`` (``lz4`` or ``gzip``), inflated to at most
    ``size`` bytes: lz4 must inflate to exactly ``size``, gzip is cut off (BadBlock) as soon
    as it would exceed it. A shorter gzip result is returned for the caller to refuse."""
    if compression == "lz4":
        return lz4_decompress(data, size)
    if compression == "gzip":
        return gzip_decompress(data, max_size=size)
    raise ValueError(f"unknown volume compression {compression!r}: want lz4 or gzip")


PAYLOAD_FORMATS = ("blocks", "uncompressed", "lz4", "gzip")


def max_block_bytes(shape: tuple[int, int, int]) -> int:
    """An upper bound on the size of a valid compressed label block (3.1) of ``shape``:
    header, a label table and sub-block indices of at most one entry per voxel, label
    counts, and at most 9 bits per voxel of packed values."""
    voxels = int(np.prod(shape))
    subblocks = -(-voxels // _SB_VOXELS)
    return 16 + 8 * voxels + 2 * subblocks + 4 * voxels + subblocks * (9 * _SB_VOXELS // 8)


def encode_block_payload(
    labels: np.ndarray, compression: str = "blocks", gzip_level: int = 6
) -> bytes:
    """One block-stream payload for a ``[z, y, x]`` label block (3.2).

    ``blocks`` = gzip of :func:`encode_block`; ``uncompressed`` = the raw little-endian uint64
    array; ``lz4`` = raw LZ4 block of that; ``gzip`` = gzip of that. ``gzip_level`` 6 is Go's
    default (what DVID sends); level 1 gzips a 200-label 64³ block ~3x faster, 1.3x larger.
    """
    if compression == "blocks":
        return gzip_compress(encode_block(labels), gzip_level)
    vol = _check_block_array(labels)
    if compression == "uncompressed":
        return vol.tobytes()
    if compression == "lz4":
        return lz4_compress(vol)
    if compression == "gzip":
        return gzip_compress(vol, gzip_level)
    raise ValueError(f"unknown block compression {compression!r}, want one of {PAYLOAD_FORMATS}")


def decode_block_payload(
    payload: bytes, compression: str, shape: tuple[int, int, int]
) -> np.ndarray:
    """Decode one block-stream payload into a ``[z, y, x]`` uint64 array of ``shape``.

    The inverse of :func:`encode_block_payload`; raises :class:`BadBlock` on bad data.
    """
    nz, ny, nx = (int(s) for s in shape)
    raw_size = nz * ny * nx * 8
    if compression == "blocks":
        inflated = gzip_decompress(payload, max_size=max_block_bytes((nz, ny, nx)))
        return decode_block(inflated, (nz, ny, nx))
    if compression == "uncompressed":
        raw = payload
    elif compression == "lz4":
        raw = lz4_decompress(payload, raw_size)
    elif compression == "gzip":
        raw = gzip_decompress(payload, max_size=raw_size)
    else:
        raise ValueError(
            f"unknown block compression {compression!r}, want one of {PAYLOAD_FORMATS}"
        )
    if len(raw) != raw_size:
        raise BadBlock(f"block payload has {len(raw)} bytes, expected {raw_size} for {shape}")
    return np.frombuffer(raw, dtype=_U64).astype(np.uint64).reshape(nz, ny, nx)


def write_block_stream(records: Iterable[tuple[tuple[int, int, int], bytes]]) -> bytes:
    """Serialize ``((bx, by, bz), payload)`` records as a DVID block stream (3.2).

    Each record is ``int32 bx, by, bz, uint32 n, n bytes``; payloads must be non-empty.
    """
    parts: list[bytes] = []
    for (bx, by, bz), payload in records:
        n = len(payload)
        if n == 0:
            raise ValueError(f"empty payload for block ({bx}, {by}, {bz})")
        try:
            parts.append(_STREAM_HDR.pack(bx, by, bz, n))
        except struct.error as e:
            raise ValueError(f"block coordinate ({bx}, {by}, {bz}) out of int32 range") from e
        parts.append(bytes(payload))
    return b"".join(parts)


def iter_block_stream(data: bytes | memoryview) -> Iterator[tuple[tuple[int, int, int], bytes]]:
    """Yield ``((bx, by, bz), payload)`` from a DVID block stream, validating lengths.

    Raises :class:`BadBlock` for a partial 16-byte record header, a zero payload length
    (DVID: "illegal zero length block"), or a payload running past the end of the data.
    """
    mv = memoryview(data)
    size = len(mv)
    pos = 0
    while pos < size:
        if size - pos < 16:
            raise BadBlock(
                f"block stream truncated: {size - pos} bytes left at offset {pos}, "
                "need a 16-byte record header"
            )
        bx, by, bz, n = _STREAM_HDR.unpack_from(mv, pos)
        pos += 16
        if n == 0:
            raise BadBlock(f"illegal zero length block at block ({bx}, {by}, {bz})")
        if size - pos < n:
            raise BadBlock(
                f"block stream truncated: block ({bx}, {by}, {bz}) claims {n} bytes, "
                f"only {size - pos} left"
            )
        yield (bx, by, bz), bytes(mv[pos : pos + n])
        pos += n


def read_block_stream(data: bytes | memoryview) -> list[tuple[tuple[int, int, int], bytes]]:
    """All records of a DVID block stream as a list (see :func:`iter_block_stream`)."""
    return list(iter_block_stream(data))


# --------------------------------------------------------------------------------------------
# 3.3 compressed_segmentation (neuroglancer)


def encode_google(volume: np.ndarray) -> bytes:
    """Neuroglancer compressed_segmentation of a ``[z, y, x]`` uint64 volume (``google``).

    Single channel, 8x8x8 encoding blocks; output starts with ``uint32 1`` (channel offset).
    Every dimension must be a positive multiple of 8 (DVID answers 400 otherwise), else
    ``ValueError``. The compressed-segmentation package reads memory in the layout its
    ``order`` argument names, whatever the array's flags say (so a C-ordered ``[z, y, x]``
    array, or an F-ordered one with the default ``order='C'``, silently encodes transposed
    voxels): we hand it the ``[x, y, z]`` Fortran-contiguous view of the C-contiguous
    ``[z, y, x]`` data with ``order='F'``. Read-only input is copied (the package needs a
    writable buffer).
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3-d [z,y,x], got shape {vol.shape}")
    if any(n <= 0 or n % SUB_BLOCK for n in vol.shape):
        raise ValueError(
            f"volume shape {vol.shape} (z,y,x) must be a positive multiple of 8 in every "
            "dimension for compressed_segmentation"
        )
    if vol.dtype.kind not in "ui":
        raise TypeError(f"volume must have an integer dtype, got {vol.dtype}")
    xyz = np.asfortranarray(np.ascontiguousarray(vol, dtype=np.uint64).T)
    if not xyz.flags.writeable:  # the package takes a writable memoryview
        xyz = xyz.copy(order="F")
    return bytes(_cseg.compress(xyz, block_size=(SUB_BLOCK,) * 3, order="F"))


def encode_googlegzip(volume: np.ndarray, level: int = 6) -> bytes:
    """Gzip of :func:`encode_google` (``googlegzip``; served with ``Content-Encoding: gzip``)."""
    return gzip_compress(encode_google(volume), level)


def encode_segmentation_chunk(volume: np.ndarray) -> bytes:
    """compressed_segmentation (one channel, 8x8x8 blocks) of a ``[z, y, x]`` uint64 volume
    of any shape, as neuroglancer precomputed chunks hold it: partial encoding blocks at the
    chunk's far edges. Same memory-order care as :func:`encode_google`."""
    xyz = np.asfortranarray(np.ascontiguousarray(volume, dtype=np.uint64).T)
    if not xyz.flags.writeable:
        xyz = xyz.copy(order="F")
    return bytes(_cseg.compress(xyz, block_size=(SUB_BLOCK,) * 3, order="F"))


def decode_google(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """Decode single-channel compressed_segmentation (8x8x8 blocks) into ``[z, y, x]`` uint64.

    ``shape`` is ``(nz, ny, nx)``, multiples of 8. Pure numpy with bounds checks, raising
    :class:`BadBlock` on malformed input (the compressed-segmentation package's own
    ``decompress`` can crash the process on bad data, so it must not see untrusted bytes).
    """
    nz, ny, nx = (int(s) for s in shape)
    if any(n <= 0 or n % SUB_BLOCK for n in (nz, ny, nx)):
        raise ValueError(f"shape {shape} (z,y,x) must be positive multiples of 8")
    gz, gy, gx = nz // SUB_BLOCK, ny // SUB_BLOCK, nx // SUB_BLOCK
    nblocks = gx * gy * gz
    if len(data) % 4:
        raise BadBlock(f"compressed_segmentation data of {len(data)} bytes is not whole words")
    words = np.frombuffer(data, dtype=_U32)
    if words.size < 1 or words[0] != 1:
        raise BadBlock("compressed_segmentation must start with channel offset 1")
    ch = words[1:]
    if ch.size < 2 * nblocks:
        raise BadBlock(f"compressed_segmentation truncated in the headers of {nblocks} blocks")
    hdr = ch[: 2 * nblocks].reshape(nblocks, 2).astype(np.int64)
    table_off = hdr[:, 0] & 0xFFFFFF
    bits = hdr[:, 0] >> 24
    values_off = hdr[:, 1]
    if not np.isin(bits, (0, 1, 2, 4, 8, 16, 32)).all():
        raise BadBlock(f"compressed_segmentation block with {int(bits.max())}-bit values")
    nwords = bits * (_SB_VOXELS // 32)
    if (values_off + nwords > ch.size).any():
        raise BadBlock("compressed_segmentation values run past the end of the data")
    local = np.zeros((nblocks, _SB_VOXELS), dtype=np.int64)
    k = np.arange(_SB_VOXELS)
    for b in np.unique(bits[bits > 0]):
        b = int(b)
        sel = np.flatnonzero(bits == b)
        w = ch[values_off[sel, None] + np.arange(b * (_SB_VOXELS // 32))]
        word = w[:, (k * b) // 32].astype(np.uint64)  # LSB-first within 32-bit words
        shift = ((k * b) % 32).astype(np.uint64)
        local[sel] = (word >> shift) & np.uint64((1 << b) - 1)
    pos = table_off[:, None] + 2 * local
    if (pos + 1 >= ch.size).any():
        raise BadBlock("compressed_segmentation table index runs past the end of the data")
    labels = ch[pos].astype(np.uint64) | (ch[pos + 1].astype(np.uint64) << np.uint64(32))
    return _from_subblocks(labels, (nz, ny, nx))


# --------------------------------------------------------------------------------------------
# 3.4 sparse volumes


def rles_from_mask(mask: np.ndarray, origin: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Runs along +X of the true voxels of a ``[z, y, x]`` boolean mask.

    Returns an ``(n, 4)`` int32 array of ``(x, y, z, length)`` in voxel coordinates offset
    by ``origin`` = ``(x0, y0, z0)`` (the coordinate of ``mask[0, 0, 0]``), sorted by z, y, x.
    Runs are maximal within the mask (adjacent voxels of a row form one run).
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"mask must be 3-d [z,y,x], got shape {m.shape}")
    nz, ny, nx = m.shape
    if m.size == 0:
        return np.zeros((0, 4), dtype=np.int32)
    rows = m.reshape(nz * ny, nx).view(np.int8)
    padded = np.zeros((nz * ny, nx + 2), dtype=np.int8)
    padded[:, 1:-1] = rows
    d = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past its end
    srow, sx = np.nonzero(d == 1)
    _, ex = np.nonzero(d == -1)  # same row-major order, one end per start
    x0, y0, z0 = (int(v) for v in origin)
    out = np.empty((srow.size, 4), dtype=np.int64)
    out[:, 0] = sx + x0
    out[:, 1] = srow % ny + y0
    out[:, 2] = srow // ny + z0
    out[:, 3] = ex - sx
    return _as_runs(out)


def _as_runs(runs: np.ndarray) -> np.ndarray:
    arr = np.asarray(runs)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.int32)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"runs must be an (n, 4) array of x, y, z, length; got {arr.shape}")
    if arr.dtype != np.int32:
        info = np.iinfo(np.int32)
        if arr.min() < info.min or arr.max() > info.max:
            raise ValueError("run coordinates or lengths beyond int32")
        arr = arr.astype(np.int32)
    return arr


def rles_to_mask(
    runs: np.ndarray, origin: tuple[int, int, int], shape: tuple[int, int, int]
) -> np.ndarray:
    """Rasterize ``(x, y, z, length)`` runs into a ``[z, y, x]`` boolean mask.

    ``origin`` = ``(x0, y0, z0)`` is the coordinate of ``mask[0, 0, 0]``; ``shape`` is
    ``(nz, ny, nx)``. Parts of runs outside the box are clipped; overlaps are fine.
    """
    nz, ny, nx = (int(s) for s in shape)
    r = _as_runs(runs).astype(np.int64)
    mask = np.zeros((nz, ny, nx), dtype=bool)
    if r.size == 0:
        return mask
    x0, y0, z0 = (int(v) for v in origin)
    xs = r[:, 0] - x0
    ys = r[:, 1] - y0
    zs = r[:, 2] - z0
    xe = xs + r[:, 3]
    xs = np.clip(xs, 0, nx)
    xe = np.clip(xe, 0, nx)
    keep = (ys >= 0) & (ys < ny) & (zs >= 0) & (zs < nz) & (xe > xs)
    if not keep.any():
        return mask
    row = zs[keep] * ny + ys[keep]
    delta = np.zeros((nz * ny, nx + 1), dtype=np.int32)
    np.add.at(delta, (row, xs[keep]), 1)
    np.add.at(delta, (row, xe[keep]), -1)
    return (np.cumsum(delta[:, :nx], axis=1) > 0).reshape(nz, ny, nx)


def encode_srles(runs: np.ndarray) -> bytes:
    """Streaming RLEs (``format=srles``): just the runs, 4 little-endian int32 each."""
    return _as_runs(runs).astype(_I32, copy=False).tobytes()


def encode_rles(runs: np.ndarray) -> bytes:
    """Legacy RLEs (``format=rles``): 12-byte header then runs (see spec 3.4).

    Header: byte 0 (binary payload), uint8 3 (dims), uint8 0 (run along X), byte 0,
    uint32 0 (voxel count, always 0), uint32 number of runs.
    """
    r = _as_runs(runs)
    return _RLE_HEADER + struct.pack("<I", r.shape[0]) + r.astype(_I32, copy=False).tobytes()


def decode_srles(data: bytes) -> np.ndarray:
    """Parse header-less runs (``srles``) into an ``(n, 4)`` int32 array; BadBlock if the
    length is not a multiple of 16."""
    if len(data) % 16:
        raise BadBlock(f"RLE data of {len(data)} bytes is not a multiple of 16")
    return np.frombuffer(data, dtype=_I32).astype(np.int32).reshape(-1, 4)


def decode_rles(data: bytes) -> np.ndarray:
    """Parse legacy RLEs (the input of ``split`` / ``split-supervoxel``) into ``(n, 4)`` int32.

    Raises :class:`BadBlock` when the data is shorter than the 12-byte header, the payload
    descriptor (byte 0) is not 0 (binary), the run count disagrees with the length
    (truncated or trailing data), or a run length is negative. Bytes 1-7 are ignored, as
    DVID does.
    """
    if len(data) < 12:
        raise BadBlock(f"RLE data too short: {len(data)} bytes, need a 12-byte header")
    if data[0] != 0:
        raise BadBlock(f"sparse volume is not binary: payload descriptor {data[0]}")
    (count,) = struct.unpack_from("<I", data, 8)
    want = 12 + 16 * count
    if len(data) != want:
        raise BadBlock(f"RLE header says {count} runs ({want} bytes) but got {len(data)} bytes")
    runs = np.frombuffer(data, dtype=_I32, offset=12).astype(np.int32).reshape(-1, 4)
    if runs.size and runs[:, 3].min() < 0:
        raise BadBlock("RLE run with negative length")
    return runs


def encode_binary_blocks(
    label: int,
    blocks: Iterable[tuple[tuple[int, int, int], np.ndarray]],
    block_size: tuple[int, int, int],
) -> bytes:
    """Sparse volume as binary blocks (``format=blocks``, spec 3.4).

    ``block_size`` is ``(nx, ny, nz)``, DVID's ``BlockSize`` order. ``blocks`` holds
    ``((x0, y0, z0), mask)`` with ``mask`` a ``[z, y, x]`` boolean array of shape
    ``(nz, ny, nx)`` and ``(x0, y0, z0)`` the voxel coordinate of its first voxel. Blocks
    are written sorted by (z0, y0, x0). Flags come from the voxels:
    0 = no foreground (DVID never sends such a block; callers should drop them), 1 = all,
    2 = mixed, then per sub-block 0/1/2 with a 64-byte LSB-first mask when mixed. With no
    blocks the result is empty (no header), as DVID's.
    """
    nx, ny, nz = (int(s) for s in block_size)
    if any(n <= 0 or n % SUB_BLOCK for n in (nx, ny, nz)):
        raise ValueError(f"block size {block_size} must be positive multiples of 8")
    items = sorted(
        ((tuple(int(c) for c in off), m) for off, m in blocks),
        key=lambda it: (it[0][2], it[0][1], it[0][0]),
    )
    if not items:
        return b""
    gx, gy, gz = nx // SUB_BLOCK, ny // SUB_BLOCK, nz // SUB_BLOCK
    nsb = gx * gy * gz
    parts = [struct.pack("<3IQ", gx, gy, gz, int(label))]
    chunk = 64  # blocks per vectorized batch (bounds temporary memory to ~2 MB)
    for c0 in range(0, len(items), chunk):
        batch = items[c0 : c0 + chunk]
        masks = np.empty((len(batch), nz, ny, nx), dtype=bool)
        for i, (_, m) in enumerate(batch):
            m = np.asarray(m)
            if m.shape != (nz, ny, nx):
                raise ValueError(
                    f"mask shape {m.shape} (z,y,x) does not match block size {block_size} (x,y,z)"
                )
            masks[i] = m
        sub = masks.reshape(len(batch), gz, SUB_BLOCK, gy, SUB_BLOCK, gx, SUB_BLOCK)
        sub = sub.transpose(0, 1, 3, 5, 2, 4, 6).reshape(len(batch), nsb, _SB_VOXELS)
        counts = sub.sum(axis=2, dtype=np.int32)  # (B, Nsb)
        sflag = np.where(counts == 0, 0, np.where(counts == _SB_VOXELS, 1, 2)).astype(np.uint8)
        totals = counts.sum(axis=1)
        bflag = np.where(totals == 0, 0, np.where(totals == nsb * _SB_VOXELS, 1, 2))
        packed = np.packbits(sub, axis=2, bitorder="little")  # (B, Nsb, 64)
        rec = np.empty((len(batch), nsb, 1 + _SB_VOXELS // 8), dtype=np.uint8)
        rec[:, :, 0] = sflag
        rec[:, :, 1:] = packed
        keep = np.zeros(rec.shape, dtype=bool)
        keep[:, :, 0] = True
        keep[:, :, 1:] = (sflag == 2)[:, :, None]
        for i, (off, _) in enumerate(batch):
            parts.append(struct.pack("<3iB", off[0], off[1], off[2], int(bflag[i])))
            if bflag[i] == 2:
                parts.append(rec[i][keep[i]].tobytes())
    return b"".join(parts)


def _coarse_runs(block_coords: np.ndarray) -> np.ndarray:
    """Sorted (z, y, x), de-duplicated block coords -> runs merged along X, ``(n, 4)`` int32."""
    c = np.asarray(block_coords, dtype=np.int64)
    if c.size == 0:
        return np.zeros((0, 4), dtype=np.int32)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"block coords must be an (n, 3) array of x, y, z; got {c.shape}")
    c = np.unique(c[:, ::-1], axis=0)[:, ::-1]  # unique rows sorted by z, y, x
    new = np.ones(c.shape[0], dtype=bool)
    new[1:] = (c[1:, 2] != c[:-1, 2]) | (c[1:, 1] != c[:-1, 1]) | (c[1:, 0] != c[:-1, 0] + 1)
    starts = np.flatnonzero(new)
    lengths = np.diff(np.append(starts, c.shape[0]))
    runs = np.empty((starts.size, 4), dtype=np.int64)
    runs[:, :3] = c[starts]
    runs[:, 3] = lengths
    return _as_runs(runs)


def encode_coarse(block_coords: np.ndarray) -> bytes:
    """``sparsevol-coarse``: legacy RLE header + runs in block coordinates.

    ``block_coords`` is an ``(n, 3)`` array of ``(bx, by, bz)``; duplicates are dropped, runs
    are sorted by z, y, x and X-adjacent blocks merged (DVID's ``WriteSerializedRLEs``).
    """
    return encode_rles(_coarse_runs(block_coords))


def encode_coarse_multi(label_coords: Mapping[int, np.ndarray]) -> bytes:
    """``sparsevols-coarse`` stream: per label (ascending) ``uint64 label, int32 S`` then S
    block-coordinate runs ``(bx, by, bz, length)`` as in :func:`encode_coarse`."""
    parts: list[bytes] = []
    for label in sorted(label_coords):
        runs = _coarse_runs(label_coords[label])
        parts.append(struct.pack("<Qi", int(label), runs.shape[0]))
        parts.append(runs.astype(_I32, copy=False).tobytes())
    return b"".join(parts)


# --------------------------------------------------------------------------------------------
# 3.5 label index: block keys and the compressed envelope


def _check_key_coord(v: int) -> None:
    if not -_KEY_MAG_MASK <= v <= _KEY_MAG_MASK:
        raise ValueError(f"block coordinate {v} outside +-{_KEY_MAG_MASK} (20-bit magnitude)")


def encode_block_key(x: int, y: int, z: int) -> int:
    """Label-index block key: 21-bit sign-magnitude fields, x in bits 0-20, y 21-41, z 42-62.

    Each field holds ``|c|`` in its low 20 bits and the sign (1 = negative) in its top bit,
    as DVID's ``labels.EncodeBlockIndex``; ``|c|`` must be below 2**20 (``ValueError``;
    DVID would silently mask). Zero is always encoded without a sign bit.
    """
    key = 0
    for shift, v in ((42, int(z)), (21, int(y)), (0, int(x))):
        _check_key_coord(v)
        field = (-v | _KEY_SIGN) if v < 0 else v
        key |= field << shift
    return key


def decode_block_key(key: int) -> tuple[int, int, int]:
    """Inverse of :func:`encode_block_key`: ``(x, y, z)``. Bit 63 is ignored, as DVID does."""
    out = []
    for shift in (0, 21, 42):
        field = (int(key) >> shift) & ((1 << _KEY_FIELD_BITS) - 1)
        mag = field & _KEY_MAG_MASK
        out.append(-mag if field & _KEY_SIGN else mag)
    return out[0], out[1], out[2]


def encode_block_keys(coords: np.ndarray) -> np.ndarray:
    """Vectorized :func:`encode_block_key` of an ``(n, 3)`` ``(x, y, z)`` array -> uint64 keys."""
    c = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
    mag = np.abs(c)
    if c.size and mag.max() > _KEY_MAG_MASK:
        raise ValueError(f"block coordinate outside +-{_KEY_MAG_MASK} (20-bit magnitude)")
    fields = (mag | np.where(c < 0, _KEY_SIGN, 0)).astype(np.uint64)
    return fields[:, 0] | (fields[:, 1] << np.uint64(21)) | (fields[:, 2] << np.uint64(42))


def decode_block_keys(keys: np.ndarray) -> np.ndarray:
    """Vectorized :func:`decode_block_key`: uint64 keys -> ``(n, 3)`` int32 ``(x, y, z)``."""
    k = np.asarray(keys, dtype=np.uint64).reshape(-1)
    out = np.empty((k.size, 3), dtype=np.int32)
    for i, shift in enumerate((0, 21, 42)):
        field = (k >> np.uint64(shift)) & np.uint64((1 << _KEY_FIELD_BITS) - 1)
        mag = (field & np.uint64(_KEY_MAG_MASK)).astype(np.int32)
        out[:, i] = np.where((field & np.uint64(_KEY_SIGN)) != 0, -mag, mag)
    return out


_FMT_LZ4 = 4 << 5  # 0x80: DVID SerializationFormat for LZ4, no checksum
_FMT_LZ4_CRC = _FMT_LZ4 | (1 << 3)  # 0x88: LZ4 with CRC32


def compress_index(serialized: bytes) -> bytes:
    """DVID's stored / ``indices-compressed`` envelope of a serialized ``LabelIndex``.

    ``0x80`` (LZ4, no checksum) + uint32 LE uncompressed length + raw LZ4 block. As DVID's
    ``SerializeData``, empty input gives empty output.
    """
    if not serialized:
        return b""
    return (
        bytes([_FMT_LZ4])
        + struct.pack("<I", len(serialized))
        + lz4.block.compress(serialized, store_size=False)
    )


def decompress_index(data: bytes) -> bytes:
    """Inverse of :func:`compress_index`, tolerant like DVID's ``DeserializeData``.

    Accepts format byte 0x80 (LZ4) and 0x88 (LZ4 + CRC32 of the compressed bytes), with a
    stored length of 0 meaning "raw bytes follow" (legacy), and 0x00 (uncompressed). Empty
    input gives empty output. Anything else, a bad checksum or bad LZ4 raises
    :class:`BadBlock`.
    """
    if not data:
        return b""
    fmt = data[0]
    if fmt == 0:
        return bytes(data[1:])
    if fmt not in (_FMT_LZ4, _FMT_LZ4_CRC):
        raise BadBlock(f"unsupported label index serialization format byte 0x{fmt:02x}")
    pos = 1
    if fmt == _FMT_LZ4_CRC:
        if len(data) < 5:
            raise BadBlock("label index envelope truncated in checksum")
        (crc,) = struct.unpack_from("<I", data, 1)
        pos = 5
        if zlib.crc32(data[pos:]) != crc:
            raise BadBlock("label index envelope checksum mismatch")
    if len(data) < pos + 4:
        raise BadBlock(f"label index envelope too short: {len(data)} bytes")
    (size,) = struct.unpack_from("<I", data, pos)
    body = data[pos + 4 :]
    if size == 0:
        return bytes(body)
    return lz4_decompress(body, size)
