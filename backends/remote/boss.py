"""BOSS (bossDB) channels as remote volumes: ``boss://<collection>/<experiment>/<channel>``.

Metadata comes from four JSON GETs (channel, experiment, coordinate frame, downsample);
voxels from the cutout service as blosc frames (``Accept: application/blosc``), the only
compact format BOSS offers that is not a pickle. BOSS refuses cutouts over 520 MiB
uncompressed (a quarter of the bytes for 64-bit channels), so a box is read as pieces
aligned to BOSS's storage cuboids, fetched concurrently; a piece BOSS still refuses with
413 is halved until it passes, and later reads keep under the size that passed.

BOSS quirks handled here (see the BOSS wire notes, ``boss.md``):

* the cutout service checks every range against the resolution-0 coordinate frame, even
  at lower resolutions, so only the part of a level inside both its extent and that frame
  can be read; the rest of a box reads 0;
* the cutout URL's resolution is one digit, so resolutions above 9 are not exposed;
* ``/v1/downsample/`` describes resolutions ``0 .. num_hierarchy_levels - 1`` while a
  channel serves ``base_resolution ..`` that ``+ num_hierarchy_levels - 1``; levels it
  does not describe follow its arithmetic (X, Y and, for isotropic channels, Z halve,
  extents rounding up from the frame's stop values).

The token is sent as ``Authorization: Token <token>`` and kept out of every message and
repr; the proxy URL names no secret.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any, TypedDict, Unpack
from urllib.parse import quote

import blosc
import numpy as np

from backends.remote import BossConfig
from backends.remote.base import (
    RemoteLevel,
    RemoteMetadata,
    RemoteNotFound,
    RemoteRejected,
    RemoteUnavailable,
    RemoteVolume,
    Vec,
)
from backends.remote.http import RemoteHTTP

#: BOSS's ``CUTOUT_MAX_SIZE``: the largest cutout it serves, in uncompressed bytes (a
#: 64-bit channel's bytes count a quarter).
CUTOUT_MAX_SIZE = 520 * 1048576

#: Channel datatypes the cutout service can serve (uint32 has no bit depth there).
READABLE_DATATYPES = ("uint8", "uint16", "uint64")

#: The cutout URL's resolution is a single digit.
MAX_RESOLUTION = 9

#: BOSS's storage cuboid, should the downsample service not name one for a level.
DEFAULT_CUBOID: Vec = (512, 512, 16)

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_URL_FORM = "boss://<collection>/<experiment>/<channel>"
_TOO_LARGE = frozenset({413})

Box = tuple[Vec, Vec]
"""A half-open box ``(lo, hi)``, x, y, z."""


class BossOptions(TypedDict, total=False):
    """Keyword options of :class:`BossVolume` (tests make them small and fast)."""

    timeout: float
    attempts: int
    backoff: float
    concurrency: int
    max_request_bytes: int


@dataclass(frozen=True)
class _Layout:
    """What reads need from the metadata: per DVID scale, the BOSS resolution and the box
    BOSS agrees to cut out (the level's extent within the resolution-0 frame)."""

    dtype: np.dtype
    resolutions: tuple[int, ...]
    levels: tuple[RemoteLevel, ...]
    readable: tuple[Box, ...]


class BossVolume(RemoteVolume):
    """One BOSS channel. DVID scale ``s`` is BOSS resolution ``base_resolution + s``.

    Levels are exposed as BOSS stores them: an ``anisotropic`` channel halves only X and
    Y from one level to the next (its ``voxel_size`` keeps Z), an ``isotropic`` one all
    three axes. A level's ``offset`` is the frame's start scaled down (rounding down) and
    its end the downsample service's ``extent`` (exclusive), so the two always cover the
    frame's voxels; ``chunk`` is the cuboid size.
    """

    def __init__(
        self,
        collection: str,
        experiment: str,
        channel: str,
        config: BossConfig,
        *,
        timeout: float = 30.0,
        attempts: int = 5,
        backoff: float = 0.2,
        concurrency: int = 8,
        max_request_bytes: int = CUTOUT_MAX_SIZE,
    ) -> None:
        for name in (collection, experiment, channel):
            if not _NAME.fullmatch(name):
                raise ValueError(
                    f"BOSS name {name!r} must be letters, digits, '_' or '-' ({_URL_FORM})"
                )
        if max_request_bytes < 1:
            raise ValueError("max_request_bytes must be positive")
        self.collection, self.experiment, self.channel = collection, experiment, channel
        self.url = f"boss://{collection}/{experiment}/{channel}"
        self.endpoint = config.endpoint.rstrip("/")
        self.http = RemoteHTTP(
            f"BOSS at {self.endpoint}",
            timeout=timeout,
            attempts=attempts,
            backoff=backoff,
            concurrency=concurrency,
        )
        self._token = config.token
        self._layout: _Layout | None = None
        self._layout_lock = threading.Lock()
        # The cutout size limit, in BOSS's bytes: lowered to half a piece BOSS refused
        # with 413, so later reads split at once.
        self._limit = max_request_bytes
        self._limit_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, config: BossConfig, **options: Unpack[BossOptions]) -> BossVolume:
        """The channel ``boss://<collection>/<experiment>/<channel>`` names."""
        parts = url.removeprefix("boss://").split("/") if url.startswith("boss://") else []
        if len(parts) != 3 or not all(_NAME.fullmatch(part) for part in parts):
            raise ValueError(
                f"malformed BOSS proxy {url!r}: expected {_URL_FORM}, "
                "names of letters, digits, '_' or '-'"
            )
        collection, experiment, channel = parts
        return cls(collection, experiment, channel, config, **options)

    def __repr__(self) -> str:
        return f"BossVolume({self.url!r}, endpoint={self.endpoint!r})"

    def metadata(self) -> RemoteMetadata:
        layout, voxel_unit = self._load()
        return RemoteMetadata(self.url, layout.dtype, voxel_unit, layout.levels)

    def _load(self) -> tuple[_Layout, str]:
        """Fetch the metadata, keep the layout for reads, return it with the voxel unit."""
        c, e, ch = self.collection, self.experiment, self.channel
        channel = self._get_json(
            f"/v1/collection/{c}/experiment/{e}/channel/{ch}/", f"channel {c}/{e}/{ch}"
        )
        datatype = channel.get("datatype")
        if datatype not in READABLE_DATATYPES:
            raise RemoteRejected(
                f"{self.http.name}: channel {c}/{e}/{ch} has datatype {datatype}, which the "
                f"BOSS cutout service cannot cut out (readable: {', '.join(READABLE_DATATYPES)})"
            )
        experiment = self._get_json(f"/v1/collection/{c}/experiment/{e}/", f"experiment {c}/{e}")
        frame_name = str(experiment.get("coord_frame"))
        frame = self._get_json(
            f"/v1/coord/{quote(frame_name, safe='')}/", f"coordinate frame {frame_name}"
        )
        downsample = self._get_json(f"/v1/downsample/{c}/{e}/{ch}/", f"downsample of {c}/{e}/{ch}")
        try:
            layout = _layout(np.dtype(datatype), channel, experiment, frame, downsample)
            voxel_unit = str(frame["voxel_unit"])
        except (KeyError, TypeError, ValueError) as err:
            raise RemoteUnavailable(
                f"{self.http.name} answered unexpected metadata for {self.url} "
                f"({type(err).__name__}: {err})"
            ) from err
        with self._layout_lock:
            self._layout = layout
        return layout, voxel_unit

    def read(self, level: int, offset: Vec, size: Vec) -> np.ndarray:
        if min(size) < 0:
            raise ValueError(f"negative box size {size}")
        layout = self._ensure_layout()
        if not 0 <= level < len(layout.levels):
            raise RemoteNotFound(
                f"{self.http.name} has no scale {level} of {self.url} "
                f"(scales 0..{len(layout.levels) - 1})"
            )
        out = np.zeros(size[::-1], layout.dtype)
        (rlo, rhi), end = layout.readable[level], _add(offset, size)
        lo = _vmax(offset, rlo)
        hi = _vmin(end, rhi)
        if any(a >= b for a, b in zip(lo, hi, strict=True)):
            return out
        chunk = layout.levels[level].chunk
        pieces = list(_pieces((lo, hi), chunk, self._max_voxels(layout.dtype)))
        resolution = layout.resolutions[level]
        self.http.map(lambda piece: self._fetch_into(out, offset, piece, resolution, chunk), pieces)
        return out

    def close(self) -> None:
        self.http.close()

    def _ensure_layout(self) -> _Layout:
        """The metadata reads need, fetched once if :meth:`metadata` was not called."""
        with self._layout_lock:
            layout = self._layout
        return layout if layout is not None else self._load()[0]

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if self._token:
            headers["Authorization"] = f"Token {self._token}"
        return headers

    def _get_json(self, path: str, what: str) -> dict[str, Any]:
        response = self.http.request(
            "GET",
            self.endpoint + path,
            what=what,
            headers=lambda: self._headers("application/json"),
        )
        try:
            body = response.json()
        except ValueError as err:
            raise RemoteUnavailable(f"{self.http.name} answered {what} with non-JSON") from err
        if not isinstance(body, dict):
            raise RemoteUnavailable(f"{self.http.name} answered {what} with a non-object")
        return body

    def _max_voxels(self, dtype: np.dtype) -> int:
        """The most voxels one cutout may hold under the current limit (BOSS counts a
        64-bit voxel as 2 bytes)."""
        with self._limit_lock:
            limit = self._limit
        return max(1, limit // _counted_bytes(dtype))

    def _fetch_into(
        self, out: np.ndarray, origin: Vec, piece: Box, resolution: int, chunk: Vec
    ) -> None:
        """Cut ``piece`` out and write it into ``out`` (whose corner is ``origin``),
        halving it while BOSS answers 413."""
        (x0, y0, z0), (x1, y1, z1) = piece
        what = (
            f"cutout of {self.collection}/{self.experiment}/{self.channel} "
            f"resolution {resolution} {x0}:{x1}/{y0}:{y1}/{z0}:{z1}"
        )
        path = (
            f"/v1/cutout/{self.collection}/{self.experiment}/{self.channel}/{resolution}/"
            f"{x0}:{x1}/{y0}:{y1}/{z0}:{z1}/"
        )
        response = self.http.request(
            "GET",
            self.endpoint + path,
            what=what,
            headers=lambda: self._headers("application/blosc"),
            accept=_TOO_LARGE,
        )
        voxels = _volume(piece)
        if response.status_code == 413:
            if voxels == 1:
                raise RemoteRejected(f"{self.http.name} refused a one-voxel {what} as too large")
            with self._limit_lock:
                self._limit = min(self._limit, voxels // 2 * _counted_bytes(out.dtype))
            for half in _halve(piece, chunk):
                self._fetch_into(out, origin, half, resolution, chunk)
            return
        shape = (z1 - z0, y1 - y0, x1 - x0)
        out[_slices(piece, origin)] = _decode(
            response.content, out.dtype, shape, self.http.name, what
        )


def _decode(
    body: bytes, dtype: np.dtype, shape: tuple[int, int, int], name: str, what: str
) -> np.ndarray:
    """A blosc cutout body as a ZYX array (BOSS sends little-endian voxels)."""
    try:
        raw = blosc.decompress(body)
    except blosc.blosc_extension.error as err:
        raise RemoteUnavailable(f"{name} answered {what} with a body that is not blosc") from err
    expected = shape[0] * shape[1] * shape[2] * dtype.itemsize
    if len(raw) != expected:
        raise RemoteUnavailable(
            f"{name} answered {what} with {len(raw)} bytes, expected {expected}"
        )
    return np.frombuffer(raw, dtype.newbyteorder("<")).reshape(shape)


def _layout(
    dtype: np.dtype,
    channel: dict[str, Any],
    experiment: dict[str, Any],
    frame: dict[str, Any],
    downsample: dict[str, Any],
) -> _Layout:
    """Levels from the four metadata answers (KeyError/TypeError/ValueError if malformed)."""
    base = int(channel["base_resolution"])
    count = min(int(experiment["num_hierarchy_levels"]), MAX_RESOLUTION + 1 - base)
    isotropic = experiment["hierarchy_method"] == "isotropic"
    start = _ints(frame[f"{axis}_start"] for axis in "xyz")
    stop = _ints(frame[f"{axis}_stop"] for axis in "xyz")
    voxel0 = _floats(frame[f"{axis}_voxel_size"] for axis in "xyz")
    levels, readable = [], []
    for resolution in range(base, base + count):
        factor = (2**resolution, 2**resolution, 2**resolution if isotropic else 1)
        key = str(resolution)
        if key in downsample["extent"]:
            end = _ints(downsample["extent"][key])
            voxel = _floats(downsample["voxel_size"][key])
            chunk = _ints(downsample["cuboid_size"][key])
        else:
            end = _ints(-(-s // f) for s, f in zip(stop, factor, strict=True))
            voxel = _floats(v * f for v, f in zip(voxel0, factor, strict=True))
            chunk = DEFAULT_CUBOID
        offset = _ints(s // f for s, f in zip(start, factor, strict=True))
        size = _ints(b - a for a, b in zip(offset, end, strict=True))
        levels.append(RemoteLevel(offset, size, voxel, chunk))
        readable.append((_vmax(offset, start), _vmin(end, stop)))
    return _Layout(dtype, tuple(range(base, base + count)), tuple(levels), tuple(readable))


def _pieces(box: Box, chunk: Vec, max_voxels: int) -> Iterator[Box]:
    """Split ``box`` into pieces of at most ``max_voxels`` on a grid of cuboid multiples
    anchored at a cuboid corner, so that inner pieces read whole cuboids."""
    lo, hi = box
    anchor = _ints(a // c * c for a, c in zip(lo, chunk, strict=True))
    span = _ints(-(-b // c) * c - a for a, b, c in zip(anchor, hi, chunk, strict=True))
    step = list(span)
    while step[0] * step[1] * step[2] > max_voxels and max(step) > 1:
        # Halve the longest axis still over one cuboid; cut cuboids only when none is.
        over = [n if n > c else 0 for n, c in zip(step, chunk, strict=True)]
        axis = over.index(max(over)) if max(over) else step.index(max(step))
        n, c = step[axis], chunk[axis]
        step[axis] = -(-n // (2 * c)) * c if n > c else -(-n // 2)
    ranges = [
        [(max(a, lo_), min(a + s, hi_)) for a in range(anc, hi_, s) if a + s > lo_]
        for anc, s, lo_, hi_ in zip(anchor, step, lo, hi, strict=True)
    ]
    for (xa, xb), (ya, yb), (za, zb) in product(*ranges):
        yield (xa, ya, za), (xb, yb, zb)


def _halve(box: Box, chunk: Vec) -> tuple[Box, Box]:
    """``box`` cut across its longest axis, at a cuboid boundary when one is inside."""
    lo, hi = box
    lengths = [b - a for a, b in zip(lo, hi, strict=True)]
    axis = lengths.index(max(lengths))
    cut = lo[axis] + lengths[axis] // 2
    aligned = cut // chunk[axis] * chunk[axis]
    if aligned > lo[axis]:
        cut = aligned
    first_hi, second_lo = list(hi), list(lo)
    first_hi[axis] = second_lo[axis] = cut
    return (lo, _ints(first_hi)), (_ints(second_lo), hi)


def _counted_bytes(dtype: np.dtype) -> int:
    """Bytes per voxel as BOSS's size check counts them (64-bit voxels count a quarter)."""
    return dtype.itemsize // 4 if dtype.itemsize == 8 else dtype.itemsize


def _volume(box: Box) -> int:
    lo, hi = box
    return (hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2])


def _slices(box: Box, origin: Vec) -> tuple[slice, slice, slice]:
    """ZYX slices of ``box`` in an array whose corner is ``origin``."""
    (x0, y0, z0), (x1, y1, z1) = box
    ox, oy, oz = origin
    return slice(z0 - oz, z1 - oz), slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox)


def _ints(values: Iterable[Any]) -> Vec:
    x, y, z = (int(v) for v in values)
    return x, y, z


def _floats(values: Iterable[Any]) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return x, y, z


def _add(a: Vec, b: Vec) -> Vec:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def _vmax(a: Vec, b: Vec) -> Vec:
    return max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2])


def _vmin(a: Vec, b: Vec) -> Vec:
    return min(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2])
