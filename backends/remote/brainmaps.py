"""Google BrainMaps as a remote volume: OAuth2 service-account tokens, the v1 wire calls
(volume metadata, binary subvolumes and image tiles) and big reads split into pieces.

:class:`BrainMapsClient` is the wire: one per configuration, shared by the volumes it
reads. :class:`BrainMapsVolume` is one volume behind a proxy URL
``brainmaps://<project>:<dataset>:<volume>``; the ``googlevoxels`` datatype reads its
geometries (BrainMaps' name for its scaled volumes) by index, ordinary proxy instances
through :meth:`BrainMapsVolume.read` by DVID scale.

Geometry JSON spells 64-bit integers as strings (``"volumeSize": {"x": "1024", ...}``);
subvolumes come back as ZYX little-endian voxels, raw or snappy-compressed.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import google.auth
import google.auth.exceptions
import numpy as np
import snappy

from backends.remote import BrainMapsConfig
from backends.remote.base import (
    RemoteAuthFailed,
    RemoteError,
    RemoteLevel,
    RemoteMetadata,
    RemoteNotFound,
    RemoteRejected,
    RemoteUnavailable,
    RemoteVolume,
    Vec,
)
from backends.remote.http import RemoteHTTP

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

SCOPE = "https://www.googleapis.com/auth/brainmaps"
SCHEME = "brainmaps://"
#: BrainMaps ``channelType`` -> numpy voxel type (what the API documents; no UINT16).
CHANNEL_TYPES: dict[str, np.dtype] = {
    "UINT8": np.dtype(np.uint8),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FLOAT": np.dtype(np.float32),
}
#: Largest subvolume one request asks for: BrainMaps refuses big subvolumes, and smaller
#: pieces are fetched concurrently.
DEFAULT_MAX_REQUEST_BYTES = 64 << 20
#: The request granularity proxies are told (BrainMaps' metadata names no storage block).
CHUNK: Vec = (64, 64, 64)
#: Two pixel sizes are equal within this relative tolerance (they arrive as floats).
PIXEL_TOLERANCE = 1e-3
_VOLUME_ID = re.compile(r"[A-Za-z0-9_.:-]+")


def parse_volume_id(text: str) -> str:
    """A BrainMaps volume id (``project:dataset:volume``); ValueError saying what is
    expected otherwise. Ids go into URL paths, so only their own characters are allowed."""
    if not _VOLUME_ID.fullmatch(text) or ":" not in text:
        raise ValueError(
            f"bad BrainMaps volume id {text!r}: expected <project>:<dataset>:<volume> "
            "(letters, digits, '_', '.', '-', ':')"
        )
    return text


@dataclass(frozen=True)
class Geometry:
    """One scaled volume of a BrainMaps volume, as its metadata lists it."""

    volume_size: Vec
    channel_count: int
    channel_type: str
    pixel_size: tuple[float, float, float]

    @classmethod
    def from_api(cls, obj: Any) -> Geometry:
        """Parse one ``geometry`` entry; ValueError (or KeyError/TypeError) if malformed.
        Pixel sizes must be positive: scales are their ratios."""
        size, pixel = obj["volumeSize"], obj["pixelSize"]
        sx, sy, sz = (int(size[axis]) for axis in "xyz")
        px, py, pz = (float(pixel[axis]) for axis in "xyz")
        if min(sx, sy, sz) < 0 or not min(px, py, pz) > 0:
            raise ValueError("negative volume size or non-positive pixel size")
        channels = int(obj.get("channelCount", 1))
        return cls((sx, sy, sz), channels, str(obj["channelType"]), (px, py, pz))

    @property
    def voxel_volume(self) -> float:
        px, py, pz = self.pixel_size
        return px * py * pz

    def dtype(self) -> np.dtype:
        """The voxel type; RemoteRejected for a channel type BrainMaps does not document
        or a multi-channel volume (a ZYX array holds one channel)."""
        if self.channel_type not in CHANNEL_TYPES:
            raise RemoteRejected(f"BrainMaps channel type {self.channel_type!r} is not supported")
        if self.channel_count != 1:
            raise RemoteRejected(
                f"BrainMaps geometry has {self.channel_count} channels; only one is supported"
            )
        return CHANNEL_TYPES[self.channel_type]


def finest(geometries: Sequence[Geometry]) -> int:
    """The index of the highest-resolution geometry: the smallest voxels (the first of
    equals). It is DVID scale 0, for proxies and googlevoxels alike."""
    return min(range(len(geometries)), key=lambda i: geometries[i].voxel_volume)


def _csv(values: Vec) -> str:
    return ",".join(str(v) for v in values)


class BrainMapsAuth:
    """Bearer tokens from a service-account key file, else application default
    credentials, refreshed when expired. Loading and refreshing happen on first use (a
    bad key is then a request's error, not the server's), under a lock so concurrent
    requests refresh once. Refused or unloadable credentials are
    :class:`RemoteAuthFailed`; a token endpoint that cannot be reached or keeps failing
    (google-auth retries it) is :class:`RemoteUnavailable`. Failures never quote the key.

    google-auth's service accounts and its ``requests`` transport are imported here, on
    first use, not with the module: with requests, urllib3 and cryptography they took
    about a tenth of every server's start-up, and few servers proxy BrainMaps."""

    def __init__(self, key_file: str | None) -> None:
        self.key_file = key_file
        self._credentials: Credentials | None = None
        self._lock = threading.Lock()

    def _load(self) -> Credentials:
        if self.key_file is not None:
            from google.oauth2 import service_account

            creds: Credentials = service_account.Credentials.from_service_account_file(
                self.key_file, scopes=[SCOPE]
            )
            return creds
        default, _project = google.auth.default(scopes=[SCOPE])
        return default

    def headers(self) -> dict[str, str]:
        with self._lock:
            try:
                if self._credentials is None:
                    self._credentials = self._load()
                if not self._credentials.valid:
                    from google.auth.transport.requests import Request

                    self._credentials.refresh(Request())
            except google.auth.exceptions.TransportError as e:
                raise RemoteUnavailable(
                    f"BrainMaps authentication failed: the token endpoint could not be "
                    f"reached ({type(e).__name__})"
                ) from None
            except google.auth.exceptions.RefreshError as e:
                reason = e.args[0] if e.args and isinstance(e.args[0], str) else ""
                if e.retryable:
                    raise RemoteUnavailable(
                        f"BrainMaps authentication failed: the token endpoint kept failing "
                        f"({reason[:200]})"
                    ) from None
                raise RemoteAuthFailed(
                    f"BrainMaps authentication failed: the token endpoint refused the "
                    f"credentials ({reason[:200]})"
                ) from None
            except (google.auth.exceptions.GoogleAuthError, OSError, ValueError, KeyError) as e:
                what = "service-account key file" if self.key_file else "default credentials"
                raise RemoteAuthFailed(
                    f"BrainMaps authentication failed: the {what} could not be loaded "
                    f"({type(e).__name__})"
                ) from None
            return {"Authorization": f"Bearer {self._credentials.token}"}


class BrainMapsClient:
    """The BrainMaps v1 calls, authenticated and retried (:class:`RemoteHTTP`)."""

    def __init__(
        self,
        config: BrainMapsConfig,
        *,
        timeout: float = 30.0,
        attempts: int = 5,
        backoff: float = 0.2,
        concurrency: int = 8,
    ) -> None:
        self.endpoint = config.endpoint.rstrip("/")
        self.auth = BrainMapsAuth(config.credentials)
        self.http = RemoteHTTP(
            f"BrainMaps at {self.endpoint}",
            timeout=timeout,
            attempts=attempts,
            backoff=backoff,
            concurrency=concurrency,
        )

    def _url(self, volume_id: str, call: str = "") -> str:
        return f"{self.endpoint}/v1/volumes/{quote(volume_id, safe=':')}{call}"

    def _post(self, volume_id: str, call: str, body: dict[str, Any], what: str) -> bytes:
        response = self.http.request(
            "POST", self._url(volume_id, call), what=what, headers=self.auth.headers, json=body
        )
        return response.content

    def geometries(self, volume_id: str) -> tuple[Geometry, ...]:
        """``GET /v1/volumes/{id}``: the volume's geometries, in the API's order (their
        index is the ``scale`` of subvolume and tile requests)."""
        what = f"volume {volume_id}"
        response = self.http.request(
            "GET", self._url(volume_id), what=what, headers=self.auth.headers
        )
        try:
            listed = json.loads(response.content)["geometry"]
            return tuple(Geometry.from_api(g) for g in listed)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise RemoteError(
                f"{self.http.name} answered malformed metadata for {what} ({type(e).__name__})"
            ) from None

    def subvolume(
        self,
        volume_id: str,
        scale: int,
        dtype: np.dtype,
        corner: Vec,
        size: Vec,
        subvolume_format: str = "RAW_SNAPPY",
    ) -> np.ndarray:
        """``POST .../subvolume:binary``: one box of geometry ``scale`` (inside it), as a
        ZYX array. ``RAW_SNAPPY`` halves what crosses the network for typical EM data."""
        what = f"subvolume {_csv(corner)}+{_csv(size)} of {volume_id} geometry {scale}"
        body = {
            "geometry": {"corner": _csv(corner), "size": _csv(size), "scale": scale},
            "subvolumeFormat": subvolume_format,
        }
        data = self._post(volume_id, "/subvolume:binary", body, what)
        if subvolume_format == "RAW_SNAPPY":
            try:
                data = snappy.decompress(data)
            except snappy.UncompressError as e:
                raise RemoteError(
                    f"{self.http.name} answered undecodable snappy for {what} ({type(e).__name__})"
                ) from None
        sx, sy, sz = size
        expected = sx * sy * sz * dtype.itemsize
        if len(data) != expected:
            raise RemoteError(
                f"{self.http.name} answered {len(data)} bytes for {what}, not {expected}"
            )
        return np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(sz, sy, sx)

    def image_tile(
        self,
        volume_id: str,
        scale: int,
        corner: Vec,
        size: Vec,
        image_format: str = "PNG",
        level: int | None = None,
    ) -> bytes:
        """``POST .../imagetile:binary``: a one-voxel-thick box (inside geometry
        ``scale``) as an encoded image; ``level`` is the JPEG quality or PNG compression
        level (BrainMaps' default if None)."""
        options: dict[str, Any] = {"imageFormat": image_format}
        if level is not None:
            options["jpegQuality" if image_format == "JPEG" else "pngCompressionLevel"] = level
        body = {
            "imageSpec": {
                "geometry": {"corner": _csv(corner), "size": _csv(size), "scale": scale},
                "imageOptions": options,
            }
        }
        what = f"{image_format} tile {_csv(corner)}+{_csv(size)} of {volume_id} geometry {scale}"
        return self._post(volume_id, "/imagetile:binary", body, what)

    def close(self) -> None:
        self.http.close()


def _clip(offset: Vec, size: Vec, extent: Vec) -> tuple[Vec, Vec] | None:
    """The part of the box inside ``[0, extent)``, or None."""
    lo = [max(o, 0) for o in offset]
    hi = [min(o + s, e) for o, s, e in zip(offset, size, extent, strict=True)]
    if any(h <= a for a, h in zip(lo, hi, strict=True)):
        return None
    return (lo[0], lo[1], lo[2]), (hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2])


def pieces(offset: Vec, size: Vec, itemsize: int, limit: int) -> Iterator[tuple[Vec, Vec]]:
    """The box cut into equal pieces (smaller at its far faces) of at most ``limit``
    bytes: the largest side is halved until one piece fits."""
    piece = list(size)
    while math.prod(piece) * itemsize > limit and max(piece) > 1:
        axis = piece.index(max(piece))
        piece[axis] = -(-piece[axis] // 2)
    starts = [range(o, o + s, p) for o, s, p in zip(offset, size, piece, strict=True)]
    end = [o + s for o, s in zip(offset, size, strict=True)]
    for z, y, x in itertools.product(starts[2], starts[1], starts[0]):
        corner = (x, y, z)
        yield (
            corner,
            (
                min(piece[0], end[0] - x),
                min(piece[1], end[1] - y),
                min(piece[2], end[2] - z),
            ),
        )


class BrainMapsVolume(RemoteVolume):
    """One BrainMaps volume. Its geometries are read once (remotes are immutable);
    DVID scale ``s`` of a proxy is the geometry whose pixels are 2^s times the finest
    along every axis, so anisotropic tile geometries are not levels."""

    def __init__(
        self,
        volume_id: str,
        client: BrainMapsClient,
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        if max_request_bytes < 8:
            raise ValueError("max_request_bytes must hold at least one voxel (8 bytes)")
        self.volume_id = parse_volume_id(volume_id)
        self.url = SCHEME + volume_id
        self.client = client
        self.max_request_bytes = max_request_bytes
        self._geometries: tuple[Geometry, ...] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(
        cls,
        url: str,
        config: BrainMapsConfig,
        *,
        timeout: float = 30.0,
        attempts: int = 5,
        backoff: float = 0.2,
        concurrency: int = 8,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> BrainMapsVolume:
        """``brainmaps://<project>:<dataset>:<volume>`` with its own client (the options
        are BOSS's: per-request timeout, tries, backoff, concurrent pieces, piece size);
        ValueError if malformed."""
        if not url.startswith(SCHEME):
            raise ValueError(f"not a BrainMaps proxy URL: {url!r} (use {SCHEME}<volume id>)")
        client = BrainMapsClient(
            config, timeout=timeout, attempts=attempts, backoff=backoff, concurrency=concurrency
        )
        return cls(url[len(SCHEME) :], client, max_request_bytes=max_request_bytes)

    def geometries(self) -> tuple[Geometry, ...]:
        """The volume's geometries (fetched on first use)."""
        with self._lock:
            if self._geometries is None:
                self._geometries = self.client.geometries(self.volume_id)
            return self._geometries

    def levels(self) -> tuple[int, ...]:
        """Geometry indices of DVID scales 0, 1, ...: the finest geometry, then each one
        whose pixels are twice the previous level's along every axis."""
        geometries = self.geometries()
        if not geometries:
            raise RemoteNotFound(f"BrainMaps volume {self.volume_id} lists no geometries")
        found = [finest(geometries)]
        base = geometries[found[0]]
        while True:
            factor = 2 ** len(found)
            want = [p * factor for p in base.pixel_size]
            match = next(
                (
                    i
                    for i, g in enumerate(geometries)
                    if g.channel_type == base.channel_type
                    and all(
                        math.isclose(p, w, rel_tol=PIXEL_TOLERANCE)
                        for p, w in zip(g.pixel_size, want, strict=True)
                    )
                ),
                None,
            )
            if match is None:
                return tuple(found)
            found.append(match)

    def metadata(self) -> RemoteMetadata:
        geometries = self.geometries()
        indices = self.levels()
        dtype = geometries[indices[0]].dtype()
        levels = tuple(
            RemoteLevel(
                offset=(0, 0, 0),
                size=geometries[i].volume_size,
                voxel_size=geometries[i].pixel_size,
                chunk=CHUNK,
            )
            for i in indices
        )
        return RemoteMetadata(url=self.url, dtype=dtype, voxel_unit="nanometers", levels=levels)

    def read(self, level: int, offset: Vec, size: Vec) -> np.ndarray:
        indices = self.levels()
        if not 0 <= level < len(indices):
            raise RemoteNotFound(
                f"BrainMaps volume {self.volume_id} has no level {level} "
                f"(levels 0 to {len(indices) - 1})"
            )
        index = indices[level]
        return self.read_geometry(index, self.geometries()[index], offset, size)

    def read_geometry(self, index: int, geometry: Geometry, offset: Vec, size: Vec) -> np.ndarray:
        """The box of geometry ``index`` as a ZYX array; outside the geometry reads 0.
        The inside is fetched in pieces of at most ``max_request_bytes``, concurrently."""
        dtype = geometry.dtype()
        sx, sy, sz = size
        out = np.zeros((sz, sy, sx), dtype=dtype)
        inside = _clip(offset, size, geometry.volume_size)
        if inside is None:
            return out
        parts = list(pieces(*inside, dtype.itemsize, self.max_request_bytes))

        def fetch(part: tuple[Vec, Vec]) -> np.ndarray:
            return self.client.subvolume(self.volume_id, index, dtype, *part)

        for (corner, piece), voxels in zip(parts, self.client.http.map(fetch, parts), strict=True):
            x, y, z = (c - o for c, o in zip(corner, offset, strict=True))
            px, py, pz = piece
            out[z : z + pz, y : y + py, x : x + px] = voxels
        return out

    def image_tile(
        self, index: int, corner: Vec, size: Vec, image_format: str, level: int | None
    ) -> bytes:
        """An encoded image of a one-voxel-thick box inside geometry ``index``."""
        return self.client.image_tile(self.volume_id, index, corner, size, image_format, level)

    def close(self) -> None:
        self.client.close()


__all__ = [
    "CHANNEL_TYPES",
    "SCOPE",
    "BrainMapsClient",
    "BrainMapsVolume",
    "Geometry",
    "finest",
    "parse_volume_id",
    "pieces",
]
