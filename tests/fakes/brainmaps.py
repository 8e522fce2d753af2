"""A fake Google BrainMaps API on 127.0.0.1, built from the public wire formats.

* ``POST /token``: Google's OAuth2 token endpoint for the JWT-bearer grant (RFC 7523):
  the RS256 assertion must be signed by the key of a service account this fake generated
  (:meth:`FakeBrainMaps.write_key_file`), be addressed to this endpoint and ask for the
  BrainMaps scope; the answer is a bearer token good for an hour.
* ``GET /v1/volumes/{id}``: the volume's ``geometry`` list (64-bit integers as strings).
* ``POST /v1/volumes/{id}/subvolume:binary``: a box of one geometry as ZYX little-endian
  voxels, ``RAW`` or ``RAW_SNAPPY``.
* ``POST /v1/volumes/{id}/imagetile:binary``: a one-voxel-thick box as a PNG or JPEG.

Every ``/v1`` call needs a bearer token the fake issued. Boxes must lie inside their
geometry and hold at most ``max_request_bytes`` (else 400, as BrainMaps refuses them), so
a client that forgets to clip or split fails here. Requests are counted per kind
(``token``, ``volume``, ``subvolume``, ``imagetile``), POST bodies kept, and faults can be
injected: :meth:`fail_next`, :meth:`always_fail`, :attr:`delay` on ``/v1`` calls,
:meth:`fail_tokens` on the token endpoint.
"""

from __future__ import annotations

import base64
import collections
import io
import itertools
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import snappy
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from PIL import Image

SCOPE = "https://www.googleapis.com/auth/brainmaps"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: The audience Google's token endpoint accepts whatever URL it is reached at (google-auth
#: always addresses service-account assertions to it).
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
CHANNEL_TYPES = {
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.float32): "FLOAT",
}
#: Google's error ``status`` names for the HTTP statuses the fake answers with.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_V1 = re.compile(r"/v1/volumes/(?P<id>[^/]+?)(?:/(?P<call>subvolume|imagetile):binary)?")


@dataclass(frozen=True)
class FakeGeometry:
    """One scaled volume: its voxels (ZYX) and pixel size in nanometers (x, y, z)."""

    data: np.ndarray
    pixel_size: tuple[float, float, float]

    def api_json(self) -> dict[str, Any]:
        nz, ny, nx = self.data.shape
        px, py, pz = self.pixel_size
        return {
            "volumeSize": {"x": str(nx), "y": str(ny), "z": str(nz)},
            "channelCount": "1",
            "channelType": CHANNEL_TYPES[self.data.dtype],
            "pixelSize": {"x": px, "y": py, "z": pz},
        }


def pyramid(
    level0: np.ndarray,
    pixel_size: tuple[float, float, float] = (8.0, 8.0, 8.0),
    levels: int = 3,
    xy_tile: bool = False,
) -> list[FakeGeometry]:
    """``level0`` and ``levels - 1`` halvings of it (every other voxel along each axis,
    so a test can compute any box it expects), then, with ``xy_tile``, an anisotropic
    geometry halved in x and y only (BrainMaps' XY tile pyramids)."""
    px, py, pz = pixel_size
    out = [
        FakeGeometry(level0[:: 2**s, :: 2**s, :: 2**s].copy(), (px * 2**s, py * 2**s, pz * 2**s))
        for s in range(levels)
    ]
    if xy_tile:
        out.append(FakeGeometry(level0[:, ::2, ::2].copy(), (px * 2, py * 2, pz)))
    return out


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _triple(text: Any) -> tuple[int, int, int]:
    x, y, z = (int(v) for v in str(text).split(","))
    return x, y, z


class _Refused(Exception):
    """Answer the request with ``status`` and ``body``, by default Google's API error."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        error = {"code": status, "message": message, "status": STATUS_NAMES.get(status, "")}
        self.body = body if body is not None else {"error": error}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeBrainMaps

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out hang up mid-answer; that is expected, not news."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.fake.handle(self)

    def do_POST(self) -> None:
        self.server.fake.handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read counters, not logs."""


class FakeBrainMaps:
    """The fake server (start it with ``with FakeBrainMaps() as fake:``)."""

    def __init__(self, *, max_request_bytes: int = 1 << 20) -> None:
        #: Largest subvolume or tile (decoded bytes) one request may ask for.
        self.max_request_bytes = max_request_bytes
        #: Seconds every ``/v1`` call waits before answering (for client timeouts).
        self.delay = 0.0
        #: Requests received per kind, including refused and failed ones.
        self.counts: collections.Counter[str] = collections.Counter()
        #: JSON bodies of the POSTs received, per kind, in order.
        self.bodies: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self.volumes: dict[str, list[FakeGeometry]] = {}
        self._accounts: dict[str, rsa.RSAPublicKey] = {}
        self._tokens: dict[str, float] = {}
        self._failures = 0
        self._failure_status = 503
        self._always: int | None = None
        self._token_failure: int | None = None
        self._serial = itertools.count(1)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeBrainMaps:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="fake-brainmaps", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeBrainMaps:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The API root (``endpoint`` of ``[proxy.brainmaps]``)."""
        assert self._server is not None, "start the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    # --- what it serves -------------------------------------------------------------------

    def add_volume(self, volume_id: str, geometries: Sequence[FakeGeometry]) -> None:
        """Serve ``volume_id``; geometry ``i`` of the metadata is ``geometries[i]``."""
        self.volumes[volume_id] = list(geometries)

    def write_key_file(self, path: str | Path, *, known: bool = True) -> Path:
        """Write a new service account's JSON key whose ``token_uri`` is this fake. With
        ``known=False`` the fake never learns the account, so its tokens are refused."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        n = next(self._serial)
        email = f"dvid-{n}@fake-project.iam.gserviceaccount.com"
        if known:
            with self._lock:
                self._accounts[email] = key.public_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        info = {
            "type": "service_account",
            "project_id": "fake-project",
            "private_key_id": secrets.token_hex(20),
            "private_key": pem,
            "client_email": email,
            "client_id": str(10**20 + n),
            "auth_uri": f"{self.url}/auth",
            "token_uri": self.token_uri,
        }
        out = Path(path)
        out.write_text(json.dumps(info))
        return out

    # --- faults ---------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 503) -> None:
        """Answer the next ``n`` ``/v1`` calls with ``status``."""
        with self._lock:
            self._failures, self._failure_status = n, status

    def always_fail(self, status: int = 503) -> None:
        """Answer every ``/v1`` call with ``status`` until :meth:`heal`."""
        with self._lock:
            self._always = status

    def fail_tokens(self, status: int = 503) -> None:
        """Answer every token request with ``status`` until :meth:`heal`."""
        with self._lock:
            self._token_failure = status

    def heal(self) -> None:
        """Stop injecting failures and delays."""
        with self._lock:
            self._failures, self._always, self._token_failure = 0, None, None
            self.delay = 0.0

    def revoke_tokens(self) -> None:
        """Forget every token issued (as if they expired early)."""
        with self._lock:
            self._tokens.clear()

    # --- requests -------------------------------------------------------------------------

    def handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        path = unquote(urlsplit(handler.path).path)
        try:
            if handler.command == "POST" and path == "/token":
                self._count("token")
                self._send(handler, 200, self._token(body), "application/json")
                return
            match = _V1.fullmatch(path)
            if match is None:
                raise _Refused(404, f"no such method {handler.command} {path}")
            kind = match["call"] or "volume"
            if (kind == "volume") != (handler.command == "GET"):
                raise _Refused(400, f"{kind} is not called with {handler.command}")
            self._count(kind)
            self._before_v1(handler)
            request = json.loads(body) if kind != "volume" else {}
            if kind != "volume":
                with self._lock:
                    self.bodies[kind].append(request)
            geometries = self.volumes.get(match["id"])
            if geometries is None:
                raise _Refused(404, f"Volume {match['id']} not found")
            if kind == "volume":
                listed = {"geometry": [g.api_json() for g in geometries]}
                self._send(handler, 200, json.dumps(listed).encode(), "application/json")
            elif kind == "subvolume":
                self._send(
                    handler, 200, self._subvolume(geometries, request), "application/octet-stream"
                )
            else:
                image, media_type = self._image_tile(geometries, request)
                self._send(handler, 200, image, media_type)
        except _Refused as e:
            self._send(handler, e.status, json.dumps(e.body).encode(), "application/json")
        except (ValueError, KeyError, TypeError) as e:
            refused = _Refused(400, f"Invalid request: {type(e).__name__}: {e}")
            self._send(handler, 400, json.dumps(refused.body).encode(), "application/json")

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def _before_v1(self, handler: _Handler) -> None:
        """Delay, injected faults, then the bearer token check."""
        if self.delay:
            self._stopping.wait(self.delay)
        with self._lock:
            status = self._always
            if status is None and self._failures:
                self._failures -= 1
                status = self._failure_status
            auth = handler.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ")
            expiry = self._tokens.get(token) if auth.startswith("Bearer ") else None
        if status is not None:
            raise _Refused(status, "injected failure")
        if expiry is None or expiry < time.time():
            raise _Refused(401, "Request had invalid authentication credentials.")

    def _token(self, body: bytes) -> bytes:
        with self._lock:
            failure = self._token_failure
        if failure is not None:
            raise _Refused(failure, "injected failure", {"error": "server_error"})
        form = parse_qs(body.decode())
        if form.get("grant_type") != [JWT_BEARER]:
            raise _Refused(400, "unsupported grant", {"error": "unsupported_grant_type"})
        problem = self._check_assertion(form.get("assertion", [""])[0])
        if problem is not None:
            refusal = {"error": "invalid_grant", "error_description": problem}
            raise _Refused(400, problem, refusal)
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.time() + 3600
        return json.dumps(
            {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
        ).encode()

    def _check_assertion(self, assertion: str) -> str | None:
        """Why the JWT is refused, or None: RS256, signed by the key of a known service
        account (``iss``), for a token endpoint (``aud``), the BrainMaps scope, not expired."""
        try:
            head, payload, signature = assertion.split(".")
            header = json.loads(_b64decode(head))
            claims = json.loads(_b64decode(payload))
        except ValueError:
            return "Invalid JWT."
        if header.get("alg") != "RS256":
            return "Invalid JWT: only RS256 is accepted."
        with self._lock:
            key = self._accounts.get(str(claims.get("iss")))
        if key is None:
            return "Invalid grant: account not found"
        try:
            key.verify(
                _b64decode(signature),
                f"{head}.{payload}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return "Invalid JWT Signature."
        if claims.get("aud") not in (self.token_uri, GOOGLE_TOKEN_AUDIENCE):
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
        if SCOPE not in str(claims.get("scope", "")).split():
            return "Invalid JWT: the BrainMaps scope was not requested."
        if float(claims.get("exp", 0)) < time.time():
            return "Invalid JWT: expired."
        return None

    def _box(
        self, geometries: list[FakeGeometry], geometry: dict[str, Any]
    ) -> tuple[FakeGeometry, np.ndarray]:
        """The geometry a request names and its voxels in the requested box; 400 for a
        box outside the geometry or over the size limit."""
        scale = int(geometry.get("scale", 0))
        if not 0 <= scale < len(geometries):
            raise _Refused(400, f"scale {scale} is not a geometry of this volume")
        found = geometries[scale]
        (x, y, z), (sx, sy, sz) = _triple(geometry["corner"]), _triple(geometry["size"])
        nz, ny, nx = found.data.shape
        if min(x, y, z) < 0 or min(sx, sy, sz) < 1 or x + sx > nx or y + sy > ny or z + sz > nz:
            raise _Refused(400, f"box {x},{y},{z}+{sx},{sy},{sz} is outside volume {nx},{ny},{nz}")
        size = math.prod((sx, sy, sz)) * found.data.dtype.itemsize
        if size > self.max_request_bytes:
            raise _Refused(
                400, f"Request of {size} bytes exceeds the maximum of {self.max_request_bytes}"
            )
        return found, found.data[z : z + sz, y : y + sy, x : x + sx]

    def _subvolume(self, geometries: list[FakeGeometry], request: dict[str, Any]) -> bytes:
        found, voxels = self._box(geometries, request["geometry"])
        raw = np.ascontiguousarray(voxels, dtype=found.data.dtype.newbyteorder("<")).tobytes()
        fmt = request.get("subvolumeFormat", "RAW")
        if fmt == "RAW_SNAPPY":
            return snappy.compress(raw)
        if fmt != "RAW":
            raise _Refused(400, f"subvolumeFormat {fmt!r} is not served by the fake")
        return raw

    def _image_tile(
        self, geometries: list[FakeGeometry], request: dict[str, Any]
    ) -> tuple[bytes, str]:
        spec = request["imageSpec"]
        found, voxels = self._box(geometries, spec["geometry"])
        if found.data.dtype != np.uint8:
            raise _Refused(400, "image tiles are served for UINT8 volumes only")
        nz, ny, nx = voxels.shape
        if nz == 1:
            plane = voxels[0]
        elif ny == 1:
            plane = voxels[:, 0, :]
        elif nx == 1:
            plane = voxels[:, :, 0]
        else:
            raise _Refused(400, "an image tile is one voxel thick along one axis")
        options = spec.get("imageOptions", {})
        out = io.BytesIO()
        image = Image.fromarray(np.ascontiguousarray(plane))
        if options.get("imageFormat", "PNG") == "JPEG":
            image.save(out, format="JPEG", quality=int(options.get("jpegQuality", 75)))
            return out.getvalue(), "image/jpeg"
        image.save(out, format="PNG", compress_level=int(options.get("pngCompressionLevel", 6)))
        return out.getvalue(), "image/png"

    # --- answers --------------------------------------------------------------------------

    @staticmethod
    def _send(handler: _Handler, status: int, body: bytes, media_type: str) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", media_type)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
