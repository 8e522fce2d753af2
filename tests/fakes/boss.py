"""A fake BOSS (bossDB) API on 127.0.0.1, for tests and benchmarks of the BOSS proxy.

Written from BOSS's public wire formats (the BOSS wire notes, ``boss.md``), not from
its code. It serves, for the channels it is given:

* metadata (request kind ``"metadata"``): ``GET /v1/collection/{c}/experiment/{e}/``,
  ``/v1/collection/{c}/experiment/{e}/channel/{ch}/``, ``/v1/coord/{frame}/`` and
  ``/v1/downsample/{c}/{e}/{ch}/`` with BOSS's field names;
* cutouts (kind ``"cutout"``): ``GET /v1/cutout/{c}/{e}/{ch}/{r}/{x0}:{x1}/{y0}:{y1}/{z0}:{z1}/``
  as ``blosc.compress(<ZYX little-endian bytes>, typesize=<bit depth>)`` (BOSS's quirk:
  the typesize is the bit depth), validated in BOSS's order with its statuses and
  ``{"status", "code", "message"}`` bodies: unknown resource 404/4000, resolution outside
  ``base_resolution .. + num_hierarchy_levels - 1`` 400/1002, a range empty or outside the
  **resolution-0** frame 400/1001 (BOSS checks that frame at every resolution), over
  :attr:`FakeBoss.max_cutout_bytes` uncompressed (64-bit voxels counting a quarter)
  413/2000, a uint32 channel 500/9002. Accept must be ``application/blosc`` (or absent,
  or ``*/*``), else 406. Anything else (kind ``"other"``) is a 404 HTML page.

Levels: resolution ``r`` of a channel is its resolution-0 volume (the frame from the
origin to its stop, zeros outside the channel's data) taken every ``2**r``-th voxel along
X and Y, and Z too for ``hierarchy_method="isotropic"`` (``anisotropic`` channels keep
Z, as BOSS's non-iso pyramid does). :meth:`FakeBoss.level` gives that array, so a test
knows byte for byte what a proxy must return. ``/v1/downsample/`` describes resolutions
``0 .. levels - 1`` like BOSS, whatever the base resolution.

Authentication: with ``token=None`` every request is let in. Otherwise
``Authorization: Token <token>`` (keyword case-insensitive) is required: another token
answers :attr:`FakeBoss.auth_status` (401 with a ``WWW-Authenticate`` header, or 403)
with ``{"detail": "Invalid token."}``; no header at all is an anonymous user, who reads
only channels made with ``public=True`` (403/3001 otherwise).

Usage::

    data = np.arange(40 * 60 * 80, dtype=np.uint16).reshape(40, 60, 80)  # Z, Y, X
    channels = {("col", "exp", "em"): FakeChannel(data, start=(100, 0, 0), levels=2)}
    with FakeBoss(channels, token="secret") as fake:
        config = BossConfig(endpoint=fake.url, token="secret")
        ...
        fake.count("cutout")            # requests seen, by kind and/or status
        fake.fail_next(1, 503)          # the next request answers 503
        fake.always_fail(503)           # every request does, until always_fail(None)
        fake.delay = 1.0                # every answer waits (for client timeouts)
        fake.max_cutout_bytes = 4096    # 413 beyond

Faults are injected before anything else, as a gateway would; the request log
(:attr:`FakeBoss.requests`) records each request's kind, path and answered status.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import blosc
import numpy as np

Vec = tuple[int, int, int]
Key = tuple[str, str, str]
"""(collection, experiment, channel)."""

#: BOSS's ``CUTOUT_MAX_SIZE`` in bytes.
CUTOUT_MAX_SIZE = 520 * 1048576

_BIT_DEPTHS = {"uint8": 8, "uint16": 16, "uint64": 64}
_NAME = r"([\w-]+)"
_RANGE = r"(\d+):(\d+)"
_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern + r"/?$"))
    for name, pattern in (
        ("channel", rf"/v1/collection/{_NAME}/experiment/{_NAME}/channel/{_NAME}"),
        ("experiment", rf"/v1/collection/{_NAME}/experiment/{_NAME}"),
        ("coord", rf"/v1/coord/{_NAME}"),
        ("downsample", rf"/v1/downsample/{_NAME}/{_NAME}/{_NAME}"),
        ("cutout", rf"/v1/cutout/{_NAME}/{_NAME}/{_NAME}/(\d)/{_RANGE}/{_RANGE}/{_RANGE}"),
    )
)


@dataclass(eq=False)
class FakeChannel:
    """A channel, its experiment and its coordinate frame.

    ``data`` is the resolution-0 voxels (Z, Y, X), placed at ``start`` (x, y, z); the
    frame runs from ``start`` to ``start + shape``. ``datatype`` defaults to the data's
    (``"uint32"`` with uint32 data makes a channel BOSS cannot cut out). Channels of one
    experiment must agree on everything the experiment and frame hold.
    """

    data: np.ndarray
    start: Vec = (0, 0, 0)
    voxel_size: tuple[float, float, float] = (4.0, 4.0, 40.0)
    voxel_unit: str = "nanometers"
    levels: int = 1
    hierarchy_method: str = "isotropic"
    base_resolution: int = 0
    cuboid_size: Vec = (512, 512, 16)
    channel_type: str = "image"
    downsample_status: str = "DOWNSAMPLED"
    public: bool = False
    datatype: str = field(default="")
    _full: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.datatype = self.datatype or self.data.dtype.name
        if self.hierarchy_method not in ("isotropic", "anisotropic"):
            raise ValueError(f"unknown hierarchy_method {self.hierarchy_method!r}")
        x, y, z = self.stop
        self._full = np.zeros((z, y, x), self.data.dtype)
        sx, sy, sz = self.start
        dz, dy, dx = self.data.shape
        self._full[sz : sz + dz, sy : sy + dy, sx : sx + dx] = self.data

    @property
    def stop(self) -> Vec:
        dz, dy, dx = self.data.shape
        sx, sy, sz = self.start
        return sx + dx, sy + dy, sz + dz

    def factor(self, resolution: int) -> Vec:
        """How many resolution-0 voxels one voxel at ``resolution`` spans, x, y, z."""
        f = 2**resolution
        return f, f, f if self.hierarchy_method == "isotropic" else 1

    def extent(self, resolution: int) -> Vec:
        """BOSS's ``extent``: the frame's stop divided by the factor, rounding up."""
        x, y, z = (-(-s // f) for s, f in zip(self.stop, self.factor(resolution), strict=True))
        return x, y, z

    def level(self, resolution: int) -> np.ndarray:
        """The ZYX voxels at ``resolution`` from the origin to :meth:`extent`."""
        fx, fy, fz = self.factor(resolution)
        return self._full[::fz, ::fy, ::fx]

    def experiment_fields(self) -> tuple[object, ...]:
        """What channels sharing an experiment must agree on."""
        return (
            self.start,
            self.stop,
            self.voxel_size,
            self.voxel_unit,
            self.levels,
            self.hierarchy_method,
        )


@dataclass(frozen=True)
class FakeRequest:
    """One request the fake answered."""

    kind: str
    path: str
    status: int


class _BossError(Exception):
    """An error answer: status and JSON body."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def _boss_error(status: int, code: int, message: str) -> _BossError:
    return _BossError(status, {"status": status, "code": code, "message": message})


class FakeBoss:
    """The fake server, listening from construction until :meth:`close` (or the end of
    a ``with`` block). ``volumes`` maps (collection, experiment, channel) to channels."""

    def __init__(
        self,
        volumes: Mapping[Key, FakeChannel],
        *,
        token: str | None = None,
        auth_status: int = 401,
        max_cutout_bytes: int = CUTOUT_MAX_SIZE,
        delay: float = 0.0,
    ) -> None:
        self.channels = dict(volumes)
        self.experiments: dict[tuple[str, str], FakeChannel] = {}
        for (c, e, _), channel in self.channels.items():
            known = self.experiments.setdefault((c, e), channel)
            if known.experiment_fields() != channel.experiment_fields():
                raise ValueError(f"channels of experiment {c}/{e} disagree on its frame or levels")
        self.token = token
        self.auth_status = auth_status
        #: The largest cutout served, in BOSS's uncompressed bytes; 413 beyond.
        self.max_cutout_bytes = max_cutout_bytes
        #: Seconds every answer waits first (past a client's timeout to time it out).
        self.delay = delay
        #: Every request answered, in order.
        self.requests: list[FakeRequest] = []
        self._lock = threading.Lock()
        #: Bumped by :meth:`reset`: an answer that was still waiting on :attr:`delay` when
        #: the log was reset (a timed-out request of the test before) stays out of it.
        self._generation = 0
        self._fail_next: list[tuple[int, str | None]] = []
        self._always: tuple[int, str | None] | None = None
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-boss", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> FakeBoss:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving; answers still waiting on :attr:`delay` give up."""
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def frame_name(self, collection: str, experiment: str) -> str:
        """The coordinate frame's name for an experiment."""
        return f"{collection}_{experiment}_frame"

    def level(self, key: Key, resolution: int) -> np.ndarray:
        """What the fake serves for a channel at ``resolution`` (ZYX, from the origin)."""
        return self.channels[key].level(resolution)

    def count(self, kind: str | None = None, status: int | None = None) -> int:
        """Requests answered, of ``kind`` (``metadata``, ``cutout``, ``other``) and/or
        with ``status``."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (kind is None or r.kind == kind) and (status is None or r.status == status)
            )

    def fail_next(self, n: int, status: int = 503, kind: str | None = None) -> None:
        """The next ``n`` requests (of ``kind``, if given) answer ``status``."""
        with self._lock:
            self._fail_next.extend([(status, kind)] * n)

    def always_fail(self, status: int | None = 503, kind: str | None = None) -> None:
        """Every request (of ``kind``) answers ``status`` from now on; ``None`` heals."""
        with self._lock:
            self._always = None if status is None else (status, kind)

    def reset(self) -> None:
        """Forget the request log and pending faults."""
        with self._lock:
            self.requests.clear()
            self._generation += 1
            self._fail_next.clear()
            self._always = None

    def _injected(self, kind: str) -> int | None:
        with self._lock:
            if self._always is not None and self._always[1] in (None, kind):
                return self._always[0]
            for i, (status, wanted) in enumerate(self._fail_next):
                if wanted in (None, kind):
                    del self._fail_next[i]
                    return status
        return None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        route, match = next(
            ((name, m) for name, pattern in _ROUTES if (m := pattern.match(path))), ("", None)
        )
        kind = "cutout" if route == "cutout" else "metadata" if route else "other"
        generation = self._generation
        if self.delay:
            self._closing.wait(self.delay)
        status, headers, body = 200, {"Content-Type": "application/json"}, b""
        try:
            injected = self._injected(kind)
            if injected is not None:
                raise _boss_error(injected, 9002, "injected fault")
            if match is None:
                status, headers = 404, {"Content-Type": "text/html"}
                body = b"<html><body><h1>Not Found</h1></body></html>"
            elif route == "cutout":
                headers, body = self._cutout(handler, match.groups())
            else:
                body = json.dumps(self._metadata(handler, route, match.groups())).encode()
        except _BossError as err:
            status, body = err.status, json.dumps(err.body).encode()
            headers = {"Content-Type": "application/json", **err.headers}
        with self._lock:
            if generation == self._generation:
                self.requests.append(FakeRequest(kind, path, status))
        handler.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    def _authenticate(self, handler: BaseHTTPRequestHandler, cutout: bool) -> bool:
        """Whether the request carries the token (raises for a wrong one)."""
        if self.token is None:
            return True
        header = handler.headers.get("Authorization")
        if header is None:
            return False
        keyword, _, value = header.partition(" ")
        if keyword.lower() == "token" and value == self.token:
            return True
        if self.auth_status == 403 and cutout:
            raise _boss_error(403, 3004, "Access denied, are you logged in?")
        headers = {"WWW-Authenticate": 'Bearer realm="api"'} if self.auth_status == 401 else {}
        raise _BossError(self.auth_status, {"detail": "Invalid token."}, headers)

    def _lookup(self, c: str, e: str, ch: str | None, metadata: bool) -> FakeChannel:
        """The channel (without ``ch``: one of the experiment's), or BOSS's 404
        (metadata and cutout views word it differently)."""
        checks = [
            ("Collection", c, any(k[0] == c for k in self.channels)),
            ("Experiment", e, (c, e) in self.experiments),
        ]
        if ch is not None:
            checks.append(("Channel", ch, (c, e, ch) in self.channels))
        for level, name, exists in checks:
            if not exists:
                message = f"{name} does not exist." if metadata else f"{level} {name} not found"
                raise _boss_error(404, 4000, message)
        return self.experiments[(c, e)] if ch is None else self.channels[(c, e, ch)]

    def _metadata(
        self, handler: BaseHTTPRequestHandler, route: str, args: tuple[str, ...]
    ) -> dict[str, Any]:
        authenticated = self._authenticate(handler, cutout=False)
        if route == "coord":
            return self._coord(args[0])
        c, e = args[0], args[1]
        if route == "experiment":
            channel = self._lookup(c, e, None, metadata=True)
            readable = any(ch.public for k, ch in self.channels.items() if k[:2] == (c, e))
        else:
            channel = self._lookup(c, e, args[2], metadata=route == "channel")
            readable = channel.public
        if not (authenticated or readable):
            name = args[2] if route != "experiment" else e
            raise _boss_error(403, 3001, f"Missing read permissions on the resource {name}")
        if route == "experiment":
            return self._experiment(c, e, channel)
        if route == "channel":
            return {
                "name": args[2],
                "public": channel.public,
                "description": "",
                "experiment": e,
                "default_time_sample": 0,
                "type": channel.channel_type,
                "base_resolution": channel.base_resolution,
                "datatype": channel.datatype,
                "creator": "fake",
                "sources": [],
                "downsample_status": channel.downsample_status,
                "related": [],
                "storage_type": "spdb",
                "bucket": None,
                "cv_path": None,
            }
        levels = range(channel.levels)
        return {
            "status": channel.downsample_status,
            "num_hierarchy_levels": channel.levels,
            "voxel_size": {
                str(r): [v * f for v, f in zip(channel.voxel_size, channel.factor(r), strict=True)]
                for r in levels
            },
            "extent": {str(r): list(channel.extent(r)) for r in levels},
            "cuboid_size": {str(r): list(channel.cuboid_size) for r in levels},
        }

    def _experiment(self, c: str, e: str, channel: FakeChannel) -> dict[str, Any]:
        return {
            "channels": [k[2] for k in self.channels if k[:2] == (c, e)],
            "name": e,
            "public": channel.public,
            "description": "",
            "collection": c,
            "coord_frame": self.frame_name(c, e),
            "num_hierarchy_levels": channel.levels,
            "hierarchy_method": channel.hierarchy_method,
            "num_time_samples": 1,
            "time_step": None,
            "time_step_unit": None,
            "creator": "fake",
        }

    def _coord(self, name: str) -> dict[str, Any]:
        for (c, e), channel in self.experiments.items():
            if self.frame_name(c, e) == name:
                body: dict[str, Any] = {"name": name, "description": ""}
                for axis, a, b, v in zip(
                    "xyz", channel.start, channel.stop, channel.voxel_size, strict=True
                ):
                    body |= {f"{axis}_start": a, f"{axis}_stop": b, f"{axis}_voxel_size": v}
                return body | {"voxel_unit": channel.voxel_unit}
        raise _boss_error(404, 4000, f"{name} does not exist.")

    def _cutout(
        self, handler: BaseHTTPRequestHandler, args: tuple[str, ...]
    ) -> tuple[dict[str, str], bytes]:
        accept = handler.headers.get("Accept", "*/*")
        if accept not in ("*/*", "application/blosc"):
            raise _BossError(406, {"detail": "Could not satisfy the request Accept header."})
        authenticated = self._authenticate(handler, cutout=True)
        c, e, ch, r = args[:4]
        channel = self._lookup(c, e, ch, metadata=False)
        if not (authenticated or channel.public):
            raise _boss_error(403, 3001, "This user does not have the required permissions")
        resolution, base = int(r), channel.base_resolution
        if resolution not in range(base, base + channel.levels):
            raise _boss_error(
                400,
                1002,
                f"Invalid resolution {resolution}. The resolution has to be within "
                f"{base} and {base + channel.levels - 1}",
            )
        lo = cast(Vec, tuple(int(v) for v in args[4::2]))
        hi = cast(Vec, tuple(int(v) for v in args[5::2]))
        if any(
            a >= b or a < s or b > t
            for a, b, s, t in zip(lo, hi, channel.start, channel.stop, strict=True)
        ):
            ranges = "/".join(f"{a}:{b}" for a, b in zip(lo, hi, strict=True))
            raise _boss_error(400, 1001, f"Incorrect cutout arguments {resolution}/{ranges}")
        voxels = (hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2])
        bits = _BIT_DEPTHS.get(channel.datatype)
        counted = voxels * (bits or 32) // 8 // (4 if bits == 64 else 1)
        if counted > self.max_cutout_bytes:
            raise _boss_error(
                413,
                2000,
                "Cutout request is over 500MB when uncompressed. Reduce cutout dimensions.",
            )
        if bits is None:
            raise _boss_error(500, 9002, f"Unsupported datatype {channel.datatype}")
        level = channel.level(resolution)
        out = np.zeros((hi[2] - lo[2], hi[1] - lo[1], hi[0] - lo[0]), channel.data.dtype)
        nz, ny, nx = level.shape
        x1, y1, z1 = min(hi[0], nx), min(hi[1], ny), min(hi[2], nz)
        if x1 > lo[0] and y1 > lo[1] and z1 > lo[2]:
            out[: z1 - lo[2], : y1 - lo[1], : x1 - lo[0]] = level[
                lo[2] : z1, lo[1] : y1, lo[0] : x1
            ]
        raw = out.astype(out.dtype.newbyteorder("<")).tobytes()
        return {"Content-Type": "application/blosc"}, blosc.compress(raw, typesize=bits)


class _Server(ThreadingHTTPServer):
    """Threads that never hold up shutdown; clients hanging up early are not errors."""

    daemon_threads = True
    block_on_close = False
    fake: FakeBoss

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out close their end while an answer waits: not a failure."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's algorithm holds the
    # body until the client's delayed ACK (~40 ms a request).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        cast(_Server, self.server).fake._serve(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the fake's own log is :attr:`FakeBoss.requests`."""
