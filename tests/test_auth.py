"""Optional auth: bearer JWTs, per-repo levels, ?admintoken=, /api/server/token, CORS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from httpx import Response

from app.auth import Level, Need, data_target, need_for
from app.datatypes.keyvalue import KeyValue
from app.datatypes.labelmap import Labelmap
from app.server import create_app
from app.settings import Settings
from backends.memory import MemoryStore

ADMIN_TOKEN = "adm-0123456789"
HS_SECRET = "a-shared-secret-that-is-long-enough-for-hs256"
ORIGIN = "https://neuroglancer.example.org"


# --- keys, tokens and servers ---------------------------------------------------------------


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return new_rsa_key()


@pytest.fixture(scope="module")
def foreign_key() -> rsa.RSAPrivateKey:
    """A key the server does not trust."""
    return new_rsa_key()


def make_token(
    key: Any,
    sub: str = "alice",
    dvid: Any = None,
    expires_in: float = 3600,
    algorithm: str = "RS256",
    headers: dict | None = None,
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {"sub": sub, "exp": int(time.time() + expires_in), **claims}
    if dvid is not None:
        payload["dvid"] = dvid
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def auth_settings(signing_key: rsa.RSAPrivateKey, **more: Any) -> Settings:
    return Settings(
        auth_required=True, auth_jwt_key=public_pem(signing_key), admin_token=ADMIN_TOKEN, **more
    )


@dataclass
class World:
    """A server with auth on and two new repos (A and B), each with keyvalue ``kv`` holding
    key ``k``."""

    client: TestClient
    a: str
    b: str

    def repo_info(self, headers: dict[str, str]) -> dict:
        r = self.client.get("/api/repos/info", headers=headers)
        assert r.status_code == 200, r.text
        return r.json()


def admin_setup(client: TestClient) -> tuple[str, str]:
    """Two repos made with ?admintoken=, each with a keyvalue instance and one key."""
    admin = {"admintoken": ADMIN_TOKEN}
    roots = []
    for alias in ("A", "B"):
        r = client.post("/api/repos", json={"alias": alias}, params=admin)
        assert r.status_code == 200, r.text
        root = r.json()["root"]
        r = client.post(
            f"/api/repo/{root}/instance",
            json={"typename": "keyvalue", "dataname": "kv"},
            params=admin,
        )
        assert r.status_code == 200, r.text
        r = client.post(f"/api/node/{root}/kv/key/k", content=b"v", params=admin)
        assert r.status_code == 200, r.text
        roots.append(root)
    return roots[0], roots[1]


@pytest.fixture(scope="module")
def auth_client(signing_key: rsa.RSAPrivateKey) -> Iterator[TestClient]:
    """One server with auth on, shared by the tests of this module (each makes its own repos)."""
    with TestClient(create_app(auth_settings(signing_key), {"default": MemoryStore()})) as client:
        yield client


@pytest.fixture
def world(auth_client: TestClient) -> World:
    a, b = admin_setup(auth_client)
    return World(auth_client, a, b)


# --- the matrix: endpoint classes x credentials -----------------------------------------------

#: name -> (method, path template, request keywords); {a} is repo A's root UUID.
ENDPOINTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "server public": ("GET", "/api/server/info", {}),
    "server read": ("GET", "/api/load", {}),
    "server admin": ("GET", "/api/storage", {}),
    "repos create": ("POST", "/api/repos", {"json": {"alias": "new"}}),
    "repos info": ("GET", "/api/repos/info", {}),
    "repo read (info)": ("GET", "/api/repo/{a}/info", {}),
    "repo read (prefix)": ("HEAD", "/api/repo/{a8}", {}),
    "repo write (log)": ("POST", "/api/repo/{a}/log", {"json": {"log": ["hello"]}}),
    "repo write (instance)": (
        "POST",
        "/api/repo/{a}/instance",
        {"json": {"typename": "keyvalue", "dataname": "kv2"}},
    ),
    "repo admin (delete instance)": ("DELETE", "/api/repo/{a}/kv", {"params": {"imsure": "true"}}),
    "node read (note)": ("GET", "/api/node/{a}/note", {}),
    "node write (note)": ("POST", "/api/node/{a}/note", {"json": {"note": "n"}}),
    "node write (commit)": ("POST", "/api/node/{a}/commit", {"json": {"note": "c"}}),
    "data read (key)": ("GET", "/api/node/{a}/kv/key/k", {}),
    "data write (key)": ("POST", "/api/node/{a}/kv/key/k", {"content": b"v2"}),
    "data write (delete key)": ("DELETE", "/api/node/{a}/kv/key/k", {}),
    "server token": ("GET", "/api/server/token", {}),
}

CREDENTIALS = [
    "none",
    "bad signature",
    "expired",
    "[object Object]",
    "garbage",
    "read A",
    "write A",
    "write B",
    "admintoken",
    "admin JWT",
]

ANONYMOUS = {"none": 401, "bad signature": 401, "expired": 401, "[object Object]": 401}
ANONYMOUS["garbage"] = 401


def profile(read_a: int, write_a: int, write_b: int) -> dict[str, int]:
    return {
        **ANONYMOUS,
        "read A": read_a,
        "write A": write_a,
        "write B": write_b,
        "admintoken": 200,
        "admin JWT": 200,
    }


IDENTIFIED = profile(200, 200, 200)
SERVER_ADMIN = profile(403, 403, 403)
REPO_READ = profile(200, 200, 403)
REPO_WRITE = profile(403, 200, 403)
REPO_ADMIN = profile(403, 403, 403)

EXPECTED: dict[str, dict[str, int]] = {
    "server public": dict.fromkeys(CREDENTIALS, 200),
    "server read": IDENTIFIED,
    "server admin": SERVER_ADMIN,
    "repos create": SERVER_ADMIN,
    "repos info": IDENTIFIED,
    "repo read (info)": REPO_READ,
    "repo read (prefix)": REPO_READ,
    "repo write (log)": REPO_WRITE,
    "repo write (instance)": REPO_WRITE,
    "repo admin (delete instance)": REPO_ADMIN,
    "node read (note)": REPO_READ,
    "node write (note)": REPO_WRITE,
    "node write (commit)": REPO_WRITE,
    "data read (key)": REPO_READ,
    "data write (key)": REPO_WRITE,
    "data write (delete key)": REPO_WRITE,
    "server token": IDENTIFIED,
}


def credentials(
    name: str, world: World, signing_key: rsa.RSAPrivateKey, foreign_key: rsa.RSAPrivateKey
) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, query parameters) for one kind of caller."""
    if name == "none":
        return {}, {}
    if name == "admintoken":
        return {}, {"admintoken": ADMIN_TOKEN}
    tokens = {
        "bad signature": lambda: make_token(foreign_key, dvid={"admin": True}),
        "expired": lambda: make_token(signing_key, dvid={"admin": True}, expires_in=-60),
        "[object Object]": lambda: "[object Object]",
        "garbage": lambda: "not-a-jwt",
        "read A": lambda: make_token(signing_key, dvid={"repos": {world.a: "read"}}),
        "write A": lambda: make_token(signing_key, dvid={"repos": {world.a: "write"}}),
        "write B": lambda: make_token(signing_key, dvid={"repos": {world.b: "write"}}),
        "admin JWT": lambda: make_token(signing_key, sub="root", dvid={"admin": True}),
    }
    return bearer(tokens[name]()), {}


def call(world: World, endpoint: str, headers: dict, params: dict) -> Response:
    method, template, kwargs = ENDPOINTS[endpoint]
    path = template.format(a=world.a, a8=world.a[:8])
    kwargs = {**kwargs, "params": {**kwargs.get("params", {}), **params}}
    return world.client.request(method, path, headers=headers, **kwargs)


def assert_denied(r: Response, status: int) -> None:
    assert r.status_code == status, r.text
    if r.request.method != "HEAD":
        assert r.headers["content-type"].startswith("text/plain")
        assert r.text.rstrip().endswith(").")
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    else:
        assert "www-authenticate" not in r.headers


@pytest.mark.parametrize("cred", CREDENTIALS)
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_endpoint_matrix(
    endpoint: str,
    cred: str,
    world: World,
    signing_key: rsa.RSAPrivateKey,
    foreign_key: rsa.RSAPrivateKey,
) -> None:
    headers, params = credentials(cred, world, signing_key, foreign_key)
    r = call(world, endpoint, headers, params)
    expected = EXPECTED[endpoint][cred]
    if expected == 200:
        assert r.status_code == 200, r.text
        return
    assert_denied(r, expected)
    if expected == 401:  # a bad token is called invalid; no token (or no JWT) just needs one
        invalid = cred in ("bad signature", "expired")
        assert ("invalid_token" in r.headers["www-authenticate"]) == invalid


def test_denied_writes_change_nothing(world: World, signing_key: rsa.RSAPrivateKey) -> None:
    reader = bearer(make_token(signing_key, dvid={"repos": {world.a: "read"}}))
    r = world.client.post(f"/api/node/{world.a}/kv/key/k", content=b"x", headers=reader)
    assert r.status_code == 403
    r = world.client.get(f"/api/node/{world.a}/kv/key/k", headers=reader)
    assert (r.status_code, r.content) == (200, b"v")


# --- levels and repo references -------------------------------------------------------------


def test_repo_admin_level_and_wildcards(world: World, signing_key: rsa.RSAPrivateKey) -> None:
    c = world.client
    repo_admin = bearer(make_token(signing_key, dvid={"repos": {world.a: "admin"}}))
    assert c.delete(f"/api/repo/{world.b}/kv?imsure=true", headers=repo_admin).status_code == 403
    assert c.delete(f"/api/repo/{world.a}/kv?imsure=true", headers=repo_admin).status_code == 200
    assert c.post("/api/repos", json={}, headers=repo_admin).status_code == 403

    everywhere = bearer(make_token(signing_key, dvid={"repos": {"*": "write"}}))
    assert (
        c.post(f"/api/node/{world.b}/kv/key/new", content=b"1", headers=everywhere).status_code
        == 200
    )
    assert (
        c.post(f"/api/node/{world.a}/note", json={"note": "x"}, headers=everywhere).status_code
        == 200
    )
    assert c.delete(f"/api/repo/{world.b}/kv?imsure=true", headers=everywhere).status_code == 403
    assert c.get("/api/storage", headers=everywhere).status_code == 403

    mixed = bearer(make_token(signing_key, dvid={"repos": {"*": "read", world.b: "write"}}))
    assert c.get(f"/api/node/{world.a}/note", headers=mixed).status_code == 200
    assert c.post(f"/api/node/{world.a}/note", json={"note": "x"}, headers=mixed).status_code == 403
    assert c.post(f"/api/node/{world.b}/note", json={"note": "x"}, headers=mixed).status_code == 200


def test_branch_references_resolve_to_the_repo(
    world: World, signing_key: rsa.RSAPrivateKey
) -> None:
    reader = bearer(make_token(signing_key, dvid={"repos": {world.b.upper(): "read"}}))
    assert (
        world.client.get(f"/api/node/{world.b[:6]}:master/note", headers=reader).status_code == 200
    )
    assert (
        world.client.get(f"/api/node/{world.a[:6]}:master/note", headers=reader).status_code == 403
    )


def test_unknown_uuid_is_401_before_resolving_and_400_after(
    world: World, signing_key: rsa.RSAPrivateKey
) -> None:
    unknown = "f" * 32
    r = world.client.get(f"/api/node/{unknown}/note")
    assert_denied(r, 401)
    reader = bearer(make_token(signing_key, dvid={"repos": {world.a: "read"}}))
    r = world.client.get(f"/api/node/{unknown}/note", headers=reader)
    assert r.status_code == 400, r.text


def test_token_without_dvid_claim_identifies_but_grants_nothing(
    world: World, signing_key: rsa.RSAPrivateKey
) -> None:
    plain = bearer(make_token(signing_key))
    assert world.client.get("/api/load", headers=plain).status_code == 200
    assert world.repo_info(plain) == {}
    assert world.client.get(f"/api/repo/{world.a}/info", headers=plain).status_code == 403


@pytest.mark.parametrize(
    "dvid",
    ["admin", {"admin": "yes"}, {"repos": ["x"]}, {"repos": {"*": "owner"}}, {"repos": {"*": 3}}],
)
def test_malformed_dvid_claim_is_an_invalid_token(
    world: World, signing_key: rsa.RSAPrivateKey, dvid: Any
) -> None:
    r = world.client.get("/api/load", headers=bearer(make_token(signing_key, dvid=dvid)))
    assert_denied(r, 401)
    assert "invalid_token" in r.headers["www-authenticate"]


def test_token_without_sub_is_invalid(world: World, signing_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode({"exp": int(time.time()) + 60}, signing_key, algorithm="RS256")
    assert_denied(world.client.get("/api/load", headers=bearer(token)), 401)


def test_wrong_admintoken_is_401(world: World) -> None:
    r = world.client.get("/api/storage", params={"admintoken": "nope"})
    assert_denied(r, 401)
    assert_denied(world.client.get("/api/storage", params={"admintoken": ""}), 401)


def test_hs256_token_signed_with_the_public_key_is_refused(
    world: World, signing_key: rsa.RSAPrivateKey
) -> None:
    """Algorithm confusion: the PEM text used as an HMAC secret must not verify."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "mallory", "dvid": {"admin": True}}).encode())
    mac = hmac.new(public_pem(signing_key).encode(), f"{head}.{body}".encode(), hashlib.sha256)
    token = f"{head}.{body}.{b64(mac.digest())}"
    assert_denied(world.client.get("/api/storage", headers=bearer(token)), 401)


@pytest.mark.parametrize(
    "path", ["/api/heartbeat", "/api/help", "/api/help/keyvalue", "/docs", "/openapi.json"]
)
def test_public_paths_need_nothing(auth_client: TestClient, path: str) -> None:
    r = auth_client.get(path, headers=bearer("not.a.valid-token"))
    assert r.status_code == 200, r.text


def test_audience_and_issuer(signing_key: rsa.RSAPrivateKey) -> None:
    settings = auth_settings(signing_key, auth_audience="dvid", auth_issuer="https://login")
    with TestClient(create_app(settings, {"default": MemoryStore()})) as c:
        good = make_token(signing_key, aud="dvid", iss="https://login")
        assert c.get("/api/load", headers=bearer(good)).status_code == 200
        for claims in ({}, {"aud": "other", "iss": "https://login"}, {"aud": "dvid"}):
            token = make_token(signing_key, **claims)
            assert_denied(c.get("/api/load", headers=bearer(token)), 401)


def test_shared_secret_hs256() -> None:
    settings = Settings(auth_required=True, auth_jwt_key=HS_SECRET)
    with TestClient(create_app(settings, {"default": MemoryStore()})) as c:
        token = make_token(HS_SECRET, algorithm="HS256", dvid={"admin": True})
        assert c.post("/api/repos", json={}, headers=bearer(token)).status_code == 200
        rs = make_token(new_rsa_key(), dvid={"admin": True})
        assert_denied(c.post("/api/repos", json={}, headers=bearer(rs)), 401)


# --- repos/info filtering -------------------------------------------------------------------


def test_repos_info_lists_only_readable_repos(world: World, signing_key: rsa.RSAPrivateKey) -> None:
    def roots(dvid: Any) -> set[str]:
        return set(world.repo_info(bearer(make_token(signing_key, dvid=dvid))))

    assert roots({"repos": {world.a: "read"}}) == {world.a}
    assert roots({"repos": {world.b: "write"}}) == {world.b}
    assert roots({"repos": {"*": "read"}}) >= {world.a, world.b}  # the server is shared
    assert roots({"admin": True}) >= {world.a, world.b}
    assert roots({"repos": {"0" * 32: "admin"}}) == set()
    r = world.client.get("/api/repos/info", params={"admintoken": ADMIN_TOKEN})
    assert set(r.json()) >= {world.a, world.b}
    info = world.repo_info(bearer(make_token(signing_key, dvid={"repos": {world.a: "read"}})))
    assert info[world.a]["Alias"] == "A" and "kv" in info[world.a]["DataInstances"]


# --- /api/server/token ----------------------------------------------------------------------


def test_server_token_returns_the_bearer_token(
    world: World, signing_key: rsa.RSAPrivateKey
) -> None:
    token = make_token(signing_key)
    r = world.client.get("/api/server/token", headers=bearer(token))
    assert (r.status_code, r.text) == (200, token)
    assert r.headers["content-type"].startswith("text/plain")
    r = world.client.get("/api/server/token", params={"admintoken": ADMIN_TOKEN})
    assert (r.status_code, r.text) == (200, "")
    assert_denied(world.client.get("/api/server/token"), 401)


def test_server_token_with_auth_off(signing_key: rsa.RSAPrivateKey) -> None:
    with TestClient(create_app(Settings(), {"default": MemoryStore()})) as c:
        token = make_token(signing_key)
        r = c.get("/api/server/token", headers=bearer(token))
        assert (r.status_code, r.text) == (200, token)
        for headers in ({}, bearer("[object Object]")):
            r = c.get("/api/server/token", headers=headers)
            assert (r.status_code, r.text) == (200, "")


# --- auth off -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer [object Object]", "Bearer a.b.c", "Basic x"]
)
def test_auth_off_ignores_authorization(
    authorization: str | None, signing_key: rsa.RSAPrivateKey
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    settings = Settings(auth_jwt_key=public_pem(signing_key), admin_token=ADMIN_TOKEN)
    with TestClient(create_app(settings, {"default": MemoryStore()}), headers=headers) as c:
        root = c.post("/api/repos", json={"alias": "x"}).json()["root"]
        r = c.post(f"/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "kv"})
        assert r.status_code == 200, r.text
        assert c.post(f"/api/node/{root}/kv/key/k", content=b"v").status_code == 200
        assert c.get(f"/api/node/{root}/kv/key/k").content == b"v"
        assert c.get("/api/storage").status_code == 200
        assert c.get("/api/storage", params={"admintoken": "wrong"}).status_code == 200
        assert set(c.get("/api/repos/info").json()) == {root}
        assert c.delete(f"/api/repo/{root}/kv?imsure=true").status_code == 200


# --- CORS -----------------------------------------------------------------------------------


@pytest.fixture
def cors_client(signing_key: rsa.RSAPrivateKey) -> Iterator[TestClient]:
    settings = auth_settings(signing_key, cors_origins=[ORIGIN])
    with TestClient(create_app(settings, {"default": MemoryStore()})) as c:
        yield c


def test_cors_allows_configured_origins_only(cors_client: TestClient) -> None:
    r = cors_client.get("/api/heartbeat", headers={"Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    r = cors_client.get("/api/heartbeat", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_headers_reach_auth_failures(cors_client: TestClient) -> None:
    """A browser can only read a 401 (and retry with a token) if it carries CORS headers."""
    r = cors_client.get("/api/repos/info", headers={"Origin": ORIGIN})
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == ORIGIN


def test_cors_preflight_passes_auth_and_allows_authorization(cors_client: TestClient) -> None:
    r = cors_client.options(
        "/api/node/0123456789abcdef0123456789abcdef/kv/key/k",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    assert "POST" in r.headers["access-control-allow-methods"]


def test_plain_options_is_not_an_auth_failure(cors_client: TestClient) -> None:
    r = cors_client.options("/api/repos/info")
    assert r.status_code != 401 and "www-authenticate" not in r.headers


def test_cors_default_is_any_origin() -> None:
    with TestClient(create_app(Settings(), {"default": MemoryStore()})) as c:
        r = c.get("/api/heartbeat", headers={"Origin": "https://anywhere.example"})
        assert r.headers["access-control-allow-origin"] == "*"


# --- settings -------------------------------------------------------------------------------


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVID_CLOUD_ADMIN_TOKEN", "from-env")
    monkeypatch.setenv("DVID_CLOUD_AUTH_REQUIRED", "true")
    monkeypatch.setenv("DVID_CLOUD_CORS_ORIGINS", json.dumps([ORIGIN]))
    monkeypatch.setenv("DVID_CLOUD_AUTH_JWT_ALGORITHMS", '["ES256"]')
    settings = Settings()
    assert settings.admin_token == "from-env" and settings.auth_required
    assert settings.cors_origins == [ORIGIN] and settings.auth_jwt_algorithms == ["ES256"]
    with TestClient(create_app(settings, {"default": MemoryStore()})) as c:
        assert c.get("/api/storage", params={"admintoken": "from-env"}).status_code == 200
        assert c.get("/api/storage").status_code == 401


def test_defaults_are_auth_off() -> None:
    settings = Settings()
    assert not settings.auth_required and settings.cors_origins == ["*"]
    assert settings.admin_token is None


def test_auth_required_without_any_credential_source_is_refused() -> None:
    with pytest.raises(ValueError, match="auth_required"):
        create_app(Settings(auth_required=True), {"default": MemoryStore()})


def test_unsuitable_algorithms_are_refused(signing_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="auth_jwt_algorithms"):
        create_app(
            auth_settings(signing_key, auth_jwt_algorithms=["HS256"]), {"default": MemoryStore()}
        )


# --- classification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "need"),
    [
        ("GET", "/api/node/abc/kv/key/k", Need(Level.READ, "abc")),
        ("HEAD", "/api/repo/abc", Need(Level.READ, "abc")),
        ("POST", "/api/node/abc/kv/key/k", Need(Level.WRITE, "abc")),
        ("PUT", "/api/node/abc/kv/key/k", Need(Level.WRITE, "abc")),
        ("POST", "/api/node/abc/commit", Need(Level.WRITE, "abc")),
        ("POST", "/api/node/abc/seg/labels", Need(Level.WRITE, "abc")),  # type unknown
        ("DELETE", "/api/repo/abc/kv", Need(Level.ADMIN, "abc")),
        ("POST", "/api/repo/abc/merge", Need(Level.WRITE, "abc")),
        ("POST", "/api/repos", Need(Level.ADMIN)),
        ("GET", "/api/repos/info", Need(Level.READ)),
        ("GET", "/api/storage", Need(Level.ADMIN)),
        ("GET", "/api/server/config", Need(Level.ADMIN)),
        ("POST", "/api/server/settings", Need(Level.ADMIN)),
        ("GET", "/api/node", Need(Level.READ)),
    ],
)
def test_need_for(method: str, path: str, need: Need) -> None:
    assert need_for(method, path) == need


@pytest.mark.parametrize(
    ("method", "path", "datatype", "need"),
    [
        ("POST", "/api/node/abc/seg/labels", Labelmap, Need(Level.READ, "abc")),
        ("POST", "/api/node/abc/seg/mapping", Labelmap, Need(Level.READ, "abc")),
        ("POST", "/api/node/abc/seg/maxlabel/5", Labelmap, Need(Level.ADMIN, "abc")),
        ("POST", "/api/node/abc/seg/blocks", Labelmap, Need(Level.WRITE, "abc")),
        ("GET", "/api/node/abc/seg/labels", Labelmap, Need(Level.READ, "abc")),
        ("POST", "/api/node/abc/kv/labels", KeyValue, Need(Level.WRITE, "abc")),
        ("DELETE", "/api/node/abc/kv/key/k", KeyValue, Need(Level.WRITE, "abc")),
    ],
)
def test_need_for_asks_the_datatype(method: str, path: str, datatype: type, need: Need) -> None:
    """Which POSTs only read, and which need an admin, is the instance's datatype's call."""
    assert need_for(method, path, datatype) == need


def test_data_target() -> None:
    assert data_target("POST", "/api/node/abc/seg/labels") == ("abc", "seg")
    assert data_target("GET", "/api/node/abc/seg/labels") is None
    assert data_target("POST", "/api/node/abc/commit") is None
    assert data_target("POST", "/api/repo/abc/merge") is None


# --- JWKS -----------------------------------------------------------------------------------


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 serving one public key as kid ``k1``, counting fetches."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        body = json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]})
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def jwks_server(signing_key: rsa.RSAPrivateKey) -> Iterator[JwksServer]:
    server = JwksServer(signing_key)
    try:
        yield server
    finally:
        server.stop()


def test_jwks(jwks_server: JwksServer, signing_key: rsa.RSAPrivateKey) -> None:
    settings = Settings(auth_required=True, auth_jwks_url=jwks_server.url)
    with TestClient(create_app(settings, {"default": MemoryStore()})) as c:
        admin = make_token(signing_key, dvid={"admin": True}, headers={"kid": "k1"})
        for _ in range(3):
            assert c.post("/api/repos", json={}, headers=bearer(admin)).status_code == 200
        assert jwks_server.fetches == 1  # keys are cached
        unknown_kid = make_token(signing_key, dvid={"admin": True}, headers={"kid": "k2"})
        assert_denied(c.post("/api/repos", json={}, headers=bearer(unknown_kid)), 401)
        forged = make_token(new_rsa_key(), dvid={"admin": True}, headers={"kid": "k1"})
        assert_denied(c.post("/api/repos", json={}, headers=bearer(forged)), 401)
        reader = make_token(signing_key, headers={"kid": "k1"})
        assert c.post("/api/repos", json={}, headers=bearer(reader)).status_code == 403
        assert_denied(c.get("/api/load", headers=bearer("[object Object]")), 401)


def test_jwks_unreachable_is_503(signing_key: rsa.RSAPrivateKey) -> None:
    settings = Settings(auth_required=True, auth_jwks_url="http://127.0.0.1:9/jwks.json")
    with TestClient(create_app(settings, {"default": MemoryStore()})) as c:
        token = make_token(signing_key, headers={"kid": "k1"})
        r = c.get("/api/load", headers=bearer(token))
        assert r.status_code == 503, r.text
