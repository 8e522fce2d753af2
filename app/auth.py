"""Optional authentication and per-repo authorization, as one ASGI middleware.

Auth is **off by default** (``auth_required = false``): every endpoint works for everyone and
``Authorization`` headers are ignored. With ``auth_required = true`` every endpoint except the
public ones needs a caller identified by a bearer token or by ``?admintoken=``.

Identity
--------
* ``Authorization: Bearer <JWT>``, verified with ``auth_jwt_key`` (a PEM public key or
  certificate for RS*/ES* tokens, or else a shared secret for HS* tokens) or with the key of the
  token's ``kid`` from ``auth_jwks_url`` (fetched with PyJWT's cached ``PyJWKClient``).
  ``exp``/``nbf`` are checked when present; ``aud`` and ``iss`` when ``auth_audience`` /
  ``auth_issuer`` are configured; ``sub`` is required.
* ``?admintoken=<token>`` equal to ``admin_token`` (env ``DVID_CLOUD_ADMIN_TOKEN``): admin of
  everything, as DVID's ``admintoken`` is. A wrong one is a 401.
* Anything in ``Authorization`` that is not a JWT, such as neuroglancer's malformed
  ``Bearer [object Object]``, is ignored: the caller is anonymous (so it gets a 401 only where a
  token is needed), never an error by itself.

JWT claims
----------
::

    {
      "sub": "alice@example.org",                         # the user (required)
      "exp": 1767225600,                                  # checked when present
      "dvid": {
        "admin": false,                                   # true: server admin, every repo
        "repos": {                                        # repo root UUID or "*" -> level
          "0123456789abcdef0123456789abcdef": "write",
          "*": "read"
        }
      }
    }

Levels are ``read`` < ``write`` < ``admin``; each includes the ones below it, and ``"*"``
applies to every repo. A token without a ``dvid`` claim identifies a user with no repo rights.
A malformed ``dvid`` claim makes the token invalid.

What a request needs
--------------------
============================================================  ==============================
Public: OPTIONS (CORS preflight), ``/api/heartbeat``,          nothing
``/api/help*``, ``/api/server/info``, ``/api/server/types``,
``/api/server/compiled-types``, ``/docs``, ``/openapi.json``
``GET /api/server/token``, ``GET /api/server/whoami``          answered here (below)
the console: ``/``, ``/console/...``, ``/neuroglancer/...``    nothing (files, no data)
``GET|HEAD`` of ``/api/node/{uuid}/...``, ``/api/repo/{uuid}...``  read on that repo
``POST /api/node/{uuid}/{data}/{keyword}`` that only reads       read on that repo
(the datatype says so, e.g. labelmap ``labels``)
other ``POST|PUT|DELETE`` under ``/api/node/{uuid}``,            write on that repo
``/api/repo/{uuid}``
``DELETE /api/repo/{uuid}/{dataname}`` (delete an instance),   admin on that repo
``POST /api/node/{uuid}/{data}/{keyword}`` the datatype reserves
to admins (labelmap ``maxlabel``, ``set-nextlabel``)
``POST /api/repos``, ``/api/storage``, ``/api/server/config``,  server admin
``/api/server/settings``, any other server-level write
any other ``GET|HEAD`` (``/api/repos/info``, ``/api/load``...)  any identified caller
============================================================  ==============================

Which POSTs to a data instance only read, and which need an admin, is the instance's datatype's
to say (:meth:`app.datatypes.base.Data.is_mutation`, :meth:`~app.datatypes.base.Data.needs_admin`).
The repo of ``{uuid}`` and the datatype of ``{data}`` are found through the catalog only after
the caller is identified (an anonymous caller gets 401 without learning whether the UUID exists);
a UUID the catalog cannot resolve goes on to the endpoint, which answers its usual 400 (and a
request to an instance that cannot be resolved needs what any write needs).
``GET /api/repos/info`` lists only the repos the caller may read.

Missing or invalid credentials answer 401 with ``WWW-Authenticate: Bearer``; an identified caller
without the needed right gets 403. Both use DVID's plain-text error form.

``GET /api/server/token`` returns the caller's bearer token as ``text/plain`` (neuroglancer
fetches it); without one it answers 401 when auth is on and an empty 200 when it is off.
``GET /api/server/whoami`` tells the caller who it is and its levels (:func:`whoami`); the web
console hides what they would not allow. Only invalid credentials make it a 401.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio.to_thread
import orjson
from fastapi import FastAPI
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.instances import error_response
from app.console import PUBLIC_PATHS as CONSOLE_PATHS
from app.console import PUBLIC_PREFIXES as CONSOLE_PREFIXES
from app.datatypes import get as datatype_of
from app.datatypes.base import Data
from app.errors import DVIDError
from app.settings import Settings
from backends import StoreUnavailable

if TYPE_CHECKING:
    from app.tokens import TokenVerifier

log = logging.getLogger("dvid_cloud")

TOKEN_PATH = "/api/server/token"
WHOAMI_PATH = "/api/server/whoami"
REPOS_INFO_PATH = "/api/repos/info"
ANY_REPO = "*"

READ_METHODS = frozenset({"GET", "HEAD"})
PUBLIC_PATHS = frozenset(
    {
        "/api/heartbeat",
        "/api/help",
        "/api/server/info",
        "/api/server/types",
        "/api/server/compiled-types",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        *CONSOLE_PATHS,
    }
)
PUBLIC_PREFIXES = ("/api/help/", *CONSOLE_PREFIXES)
#: Server-level paths that need server admin whatever the method.
ADMIN_PATHS = frozenset({"/api/storage", "/api/server/config", "/api/server/settings"})

JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class Level(IntEnum):
    """What a caller may do with a repo; each level includes the ones below."""

    NONE = 0
    READ = 1
    WRITE = 2
    ADMIN = 3


LEVEL_NAMES = {"read": Level.READ, "write": Level.WRITE, "admin": Level.ADMIN}


class Unauthorized(DVIDError):
    """No valid credentials where they are needed (401, with a Bearer challenge)."""

    status = 401

    def __init__(self, message: str, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"


class Forbidden(DVIDError):
    """An identified caller without the right the request needs (403)."""

    status = 403


@dataclass(frozen=True)
class Principal:
    """An identified caller: a user name, server admin or not, and a level per repo root."""

    user: str
    admin: bool = False
    repos: Mapping[str, Level] = field(default_factory=dict)

    def level(self, root: str) -> Level:
        """The caller's level on the repo with this root UUID."""
        if self.admin:
            return Level.ADMIN
        return max(self.repos.get(root.lower(), Level.NONE), self.repos.get(ANY_REPO, Level.NONE))

    def everywhere(self) -> Level:
        """The level the caller has on every repo, known or not."""
        return Level.ADMIN if self.admin else self.repos.get(ANY_REPO, Level.NONE)


@dataclass(frozen=True)
class Need:
    """What a request needs: a level, on the repo named by ``ref`` or server-wide if None."""

    level: Level
    ref: str | None = None


ADMIN = Principal(user="admin", admin=True)


# --- classifying requests -------------------------------------------------------------------


def is_public(method: str, path: str) -> bool:
    """Requests anyone may make: CORS preflights, liveness, help, server facts, the docs."""
    return method == "OPTIONS" or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def need_for(method: str, path: str, datatype: type[Data] | None = None) -> Need:
    """The level a (non-public) request needs, and the version reference it applies to.
    ``datatype`` is the class of the instance a ``/api/node/{uuid}/{data}/...`` request
    addresses (see :func:`data_target`), when known."""
    parts = path.strip("/").split("/")
    reads = method in READ_METHODS
    if len(parts) >= 3 and parts[0] == "api" and parts[1] in ("node", "repo") and parts[2]:
        ref, rest = parts[2], parts[3:]
        return Need(_repo_level(method, parts[1], rest, datatype), ref)
    if path in ADMIN_PATHS or not reads:
        return Need(Level.ADMIN)
    return Need(Level.READ)


def data_target(method: str, path: str) -> tuple[str, str] | None:
    """(version reference, data name) of a request whose needed level depends on the
    instance's datatype: a non-read under ``/api/node/{uuid}/{data}/{keyword}``."""
    parts = path.strip("/").split("/")
    if method in READ_METHODS or len(parts) < 5 or parts[:2] != ["api", "node"]:
        return None
    return (parts[2], parts[3]) if parts[2] and parts[3] else None


def _repo_level(method: str, kind: str, rest: list[str], datatype: type[Data] | None) -> Level:
    """The level on a repo for a request under ``/api/node/{uuid}`` or ``/api/repo/{uuid}``."""
    if method in READ_METHODS:
        return Level.READ
    if kind == "repo":
        return Level.ADMIN if method == "DELETE" and len(rest) == 1 else Level.WRITE
    keyword = rest[1] if len(rest) >= 2 else ""
    if datatype is not None and keyword:
        if datatype.needs_admin(method, keyword):
            return Level.ADMIN
        if not datatype.is_mutation(method, keyword):
            return Level.READ
    return Level.WRITE


# --- reading credentials --------------------------------------------------------------------


def route_path(scope: Scope) -> str:
    """The request path without the ``root_path`` the server may be mounted under."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def bearer_token(scope: Scope) -> str | None:
    """The JWT of an ``Authorization: Bearer`` header; None when absent or not a JWT at all
    (neuroglancer sends ``Bearer [object Object]``), so such callers are anonymous."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and JWT_RE.match(token):
                return token
            return None
    return None


def admin_token_param(scope: Scope) -> str | None:
    """The ``admintoken`` query parameter, if given."""
    query = scope.get("query_string", b"").decode("latin-1")
    values = parse_qs(query, keep_blank_values=True).get("admintoken")
    return values[0] if values else None


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """The caller a verified token describes (its ``sub`` and ``dvid`` claims)."""
    dvid = claims.get("dvid") or {}
    if not isinstance(dvid, dict):
        raise Unauthorized("token's 'dvid' claim must be an object", invalid_token=True)
    admin = dvid.get("admin", False)
    repos = dvid.get("repos") or {}
    if not isinstance(admin, bool) or not isinstance(repos, dict):
        raise Unauthorized(
            "token's 'dvid' claim needs a boolean 'admin' and an object 'repos'", invalid_token=True
        )
    levels = {}
    for root, name in repos.items():
        level = LEVEL_NAMES.get(name) if isinstance(name, str) else None
        if level is None:
            raise Unauthorized(
                f"token gives repo {root!r} level {name!r}: use read, write or admin",
                invalid_token=True,
            )
        levels[str(root).lower()] = level
    return Principal(user=str(claims["sub"]), admin=admin, repos=levels)


# --- the middleware -------------------------------------------------------------------------


class AuthMiddleware:
    """ASGI middleware: identify the caller, check the request's needed level, filter
    ``/api/repos/info`` and answer ``/api/server/token`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings, verifier: TokenVerifier | None) -> None:
        self.app = app
        self.enabled = settings.auth_required
        self.admin_token = settings.admin_token or None
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], route_path(scope)
        if path in (TOKEN_PATH, WHOAMI_PATH) and method in READ_METHODS:
            answer = self._token_response if path == TOKEN_PATH else self._whoami_response
            response = await answer(scope, scope["path"])
            await response(scope, receive, send)
            return
        if not self.enabled or is_public(method, path):
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._authorize(scope, method, path)
        except DVIDError as e:
            await self._error(e, scope["path"])(scope, receive, send)
            return
        scope.setdefault("state", {})["auth_user"] = principal.user
        if path == REPOS_INFO_PATH and method == "GET" and principal.everywhere() < Level.READ:
            send = repos_filter(send, principal)
        await self.app(scope, receive, send)

    async def identify(self, scope: Scope) -> Principal | None:
        """The caller, or None for anonymous; Unauthorized for invalid credentials."""
        given_admin = admin_token_param(scope)
        if given_admin is not None:
            if self.admin_token and hmac.compare_digest(given_admin, self.admin_token):
                return ADMIN
            raise Unauthorized("invalid admintoken")
        token = bearer_token(scope)
        if token is None:
            return None
        if self.verifier is None:
            raise Unauthorized("this server accepts no bearer tokens", invalid_token=True)
        return await self.verifier.verify(token)

    async def _authorize(self, scope: Scope, method: str, path: str) -> Principal:
        """The caller, when allowed what the request needs; else Unauthorized or
        Forbidden."""
        principal = await self.identify(scope)
        if principal is None:
            raise Unauthorized("this request needs a bearer token")
        if principal.admin:
            return principal
        target = data_target(method, path)
        root, datatype = await instance_of(scope, *target) if target else (None, None)
        need = need_for(method, path, datatype)
        if need.ref is None:
            if need.level > Level.READ:
                raise Forbidden(f"user {principal.user!r} is not a server admin")
            return principal
        if principal.everywhere() >= need.level:
            return principal
        root = root or await repo_root(scope, need.ref)
        if root is not None and principal.level(root) < need.level:
            raise Forbidden(
                f"user {principal.user!r} lacks {need.level.name.lower()} access to repo {root}"
            )
        return principal

    async def _token_response(self, scope: Scope, path: str) -> Response:
        """``GET /api/server/token``: the caller's bearer token as text."""
        token = bearer_token(scope)
        if not self.enabled:
            return PlainTextResponse(token or "")
        try:
            principal = await self.identify(scope)
        except DVIDError as e:
            return self._error(e, path)
        if principal is None:
            return self._error(Unauthorized("no bearer token was sent"), path)
        return PlainTextResponse(token or "")

    async def _whoami_response(self, scope: Scope, path: str) -> Response:
        """``GET /api/server/whoami``: who the caller is and what it may do, so that a
        client (the console) can hide what would be refused. Anonymous is not an error."""
        if not self.enabled:
            return JSONResponse(whoami(None, enabled=False))
        try:
            principal = await self.identify(scope)
        except DVIDError as e:
            return self._error(e, path)
        return JSONResponse(whoami(principal, enabled=True))

    @staticmethod
    def _error(error: DVIDError, path: str) -> Response:
        """DVID's plain-text error, with the Bearer challenge for a 401."""
        response = error_response(error, path)
        if isinstance(error, Unauthorized):
            response.headers["WWW-Authenticate"] = error.challenge
        return response


def whoami(principal: Principal | None, enabled: bool) -> dict[str, Any]:
    """``{"auth", "user", "admin", "everywhere", "repos"}``: levels by name (``none``,
    ``read``, ``write``, ``admin``), ``everywhere`` applying to every repo. Without auth
    everyone may do everything."""
    if not enabled:
        return {"auth": False, "user": None, "admin": True, "everywhere": "admin", "repos": {}}
    if principal is None:
        return {"auth": True, "user": None, "admin": False, "everywhere": "none", "repos": {}}
    return {
        "auth": True,
        "user": principal.user,
        "admin": principal.admin,
        "everywhere": principal.everywhere().name.lower(),
        "repos": {
            root: level.name.lower() for root, level in principal.repos.items() if root != ANY_REPO
        },
    }


async def instance_of(
    scope: Scope, ref: str, dataname: str
) -> tuple[str | None, type[Data] | None]:
    """The root UUID of the repo ``ref`` names and the datatype class of its instance
    ``dataname``; None for what the catalog cannot tell."""
    catalog = scope["app"].state.services.catalog
    try:
        repo, _ = await anyio.to_thread.run_sync(catalog.resolve, ref)
    except (DVIDError, StoreUnavailable):
        return None, None
    inst = repo.instances.get(dataname)
    try:
        return repo.root, datatype_of(inst.typename) if inst is not None else None
    except DVIDError:  # a type this server does not serve
        return repo.root, None


async def repo_root(scope: Scope, ref: str) -> str | None:
    """The root UUID of the repo ``ref`` names; None when the catalog cannot tell (the
    endpoint then answers the failure itself)."""
    catalog = scope["app"].state.services.catalog
    try:
        repo, _ = await anyio.to_thread.run_sync(catalog.resolve, ref)
    except (DVIDError, StoreUnavailable):
        return None
    return repo.root


def repos_filter(send: Send, principal: Principal) -> Send:
    """A ``send`` that passes a ``/api/repos/info`` answer on with only the repos the
    caller may read."""
    start: Message = {}
    chunks: list[bytes] = []

    async def filtered(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(chunks)
        if start["status"] == 200:
            body = readable_repos(body, principal)
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return filtered


def readable_repos(body: bytes, principal: Principal) -> bytes:
    """The ``{root: repo JSON}`` object ``body`` without the repos ``principal`` cannot read."""
    try:
        repos = orjson.loads(body)
    except orjson.JSONDecodeError:
        repos = None
    if not isinstance(repos, dict):
        return b"{}"
    return orjson.dumps(
        {root: info for root, info in repos.items() if principal.level(root) >= Level.READ}
    )


def install_auth(app: FastAPI, settings: Settings) -> None:
    """Add the auth middleware to ``app`` (call it before adding CORS, so that CORS headers
    also reach 401 and 403 answers). Raises ValueError for an unusable configuration."""
    verifier = None
    if settings.auth_jwt_key or settings.auth_jwks_url:
        from app.tokens import TokenVerifier

        verifier = TokenVerifier(settings)
    if settings.auth_required:
        if verifier is None and not settings.admin_token:
            raise ValueError(
                "auth_required needs auth_jwt_key, auth_jwks_url or admin_token to be set"
            )
        log.info("auth required", extra={"jwks": settings.auth_jwks_url or ""})
    app.add_middleware(AuthMiddleware, settings=settings, verifier=verifier)
