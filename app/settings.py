"""One settings object: command-line flags over env vars over a TOML file over defaults.

The TOML file follows DVID's layout::

    [server]
    host = "0.0.0.0"
    port = 8000
    note = "production server"

    [store.ssd]
    path = "/ssd/dvid"                 # a folder, or s3://bucket/prefix, gs://bucket/prefix

    [store.bucket]
    path = "s3://my-bucket/dvid"
    endpoint = "http://127.0.0.1:9000" # optional, for S3-compatible stores

    [backend]
    default = "bucket"                 # the store that holds metadata and new instances

    [proxy.boss]                       # proxy instances of boss://collection/experiment/channel
    endpoint = "https://api.bossdb.io"
    token = "..."                      # or DVID_CLOUD_BOSS_TOKEN

    [proxy.brainmaps]                  # googlevoxels, and proxies of brainmaps://volumeid
    endpoint = "https://brainmaps.googleapis.com"
    credentials = "service-account.json"  # or DVID_CLOUD_BRAINMAPS_CREDENTIALS; default:
                                          # Google application default credentials

Env vars are ``DVID_CLOUD_<FIELD>`` (``DVID_CLOUD_PORT``, ``DVID_CLOUD_DATA_DIR``...); the
config file itself is named by ``--config`` or ``DVID_CLOUD_CONFIG``.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping, Sequence, Set
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from backends.remote import (
    BOSS_ENDPOINT,
    BRAINMAPS_ENDPOINT,
    BossConfig,
    BrainMapsConfig,
    ProxyConfig,
)

DEFAULT_STORE = "default"
ENV_PREFIX = "DVID_CLOUD_"


class StoreConfig(BaseModel):
    """One ``[store.NAME]`` section."""

    path: str
    endpoint: str | None = None
    region: str | None = None


class BackendConfig(BaseModel):
    """The ``[backend]`` section: which store is used when nothing else is said."""

    default: str = DEFAULT_STORE


class BossSection(BaseModel):
    """``[proxy.boss]``. The token is a secret: it shows in no repr, log or answer."""

    endpoint: str = BOSS_ENDPOINT
    token: SecretStr | None = None


class BrainMapsSection(BaseModel):
    """``[proxy.brainmaps]``: a service-account key file, else application default
    credentials."""

    endpoint: str = BRAINMAPS_ENDPOINT
    credentials: str | None = None


class ProxySection(BaseModel):
    """The ``[proxy.*]`` sections: how to reach the remotes proxy instances read; under
    ``[proxy]`` itself, the seconds one remote request may take and how many times a
    failing one is tried."""

    timeout: float = Field(default=30.0, gt=0)
    attempts: int = Field(default=5, ge=1, le=20)
    boss: BossSection = Field(default_factory=BossSection)
    brainmaps: BrainMapsSection = Field(default_factory=BrainMapsSection)


class Settings(BaseModel):
    """Everything the server and CLI can be told: keyword arguments (the flags) over
    ``DVID_CLOUD_<FIELD>`` env vars over the TOML file over the defaults.

    A plain pydantic model that reads its env vars and file itself, as pydantic-settings
    did (names in any case; lists, tables and sections as JSON; sources merged table by
    table): importing pydantic-settings and its sources cost some 35 ms of every start."""

    model_config = ConfigDict(extra="ignore", validate_default=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Path("data")
    #: One store by URL (``s3://bucket/prefix``, ``gs://...``), for deployments configured
    #: by env vars alone (``DVID_CLOUD_STORE_URL``); ``[store.*]`` sections take precedence.
    store_url: str | None = None
    store_endpoint: str | None = None
    note: str = ""
    read_only: bool = False
    #: Server processes of ``serve`` (None: one per core).
    workers: int | None = Field(None, ge=1, le=256)
    #: Largest request body accepted, in bytes; larger ones get 413 before being read.
    max_body_bytes: int = Field(1 << 30, gt=0)
    #: A request body must arrive within this many seconds, plus one second for every
    #: ``body_min_rate`` bytes received (Apache's mod_reqtimeout ``body=20,MinRate=500``);
    #: otherwise 408. A trickling ("slowloris") body cannot hold the server for ever, while
    #: a large upload on a slow link still gets the time its size needs.
    body_timeout_seconds: float = Field(20.0, gt=0)
    body_min_rate: int = Field(500, gt=0)
    #: How many immutable per-version key indices (of locked nodes) to keep in memory.
    index_cache_entries: int = Field(4096, gt=0)
    #: Bytes of values of locked nodes (immutable) kept in memory.
    cache_bytes: int = Field(256 << 20, ge=0)
    #: Bytes of decoded voxel chunks of locked versions (immutable) kept in memory, per
    #: store (tensorstore's cache pool; app/volumes/arrays.py).
    chunk_cache_bytes: int = Field(256 << 20, ge=0)
    #: Largest volume one request may read or write, in voxels; larger ones get 413.
    max_voxels: int = Field(1 << 30, gt=0)
    #: How long a write may take; a commit waits at most this long for writes in flight,
    #: and a transaction lock held longer by a holder on another host may be taken over.
    max_request_seconds: float = Field(120.0, gt=0)
    #: Whether labelmap's ``POST split/{label}`` is served (DVID's ``AllowLabelmapSplit``,
    #: off by default there; on here, since proofreading clients call it).
    allow_labelmap_split: bool = True
    #: Extra datatype modules to import (comma-separated), e.g. a site's own datatypes.
    plugins: str = ""
    #: Authentication and per-repo authorization (see app/auth.py); off by default.
    auth_required: bool = False
    #: Verifies bearer JWTs: a PEM public key or certificate (RS*/ES*) or a secret (HS*).
    auth_jwt_key: str | None = None
    #: Accepted JWT algorithms (env: a JSON list).
    auth_jwt_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "HS256"])
    #: A JWKS URL whose keys (by the token's ``kid``) verify bearer JWTs.
    auth_jwks_url: str | None = None
    #: Required ``aud`` and ``iss`` claims of bearer JWTs, when set.
    auth_audience: str | None = None
    auth_issuer: str | None = None
    #: Compared with ``?admintoken=``; unlocks admin endpoints (``DVID_CLOUD_ADMIN_TOKEN``).
    admin_token: str | None = None
    #: Origins browsers may call from (``Access-Control-Allow-Origin``; env: a JSON list).
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])
    #: The neuroglancer viewer the console's links open (its state goes after ``#!``), e.g.
    #: ``https://neuroglancer-demo.appspot.com/``; unset: the PyPI ``neuroglancer`` package's
    #: client, served under ``/neuroglancer/v/console/`` when installed.
    neuroglancer_url: str | None = None
    #: Bytes of encoded answers of locked versions kept in memory (app/immutable.py).
    response_cache_bytes: int = Field(256 << 20, ge=0)
    #: Bytes of scratch buffers that large request bodies are received into, kept for
    #: the next request (app/buffers.py): fresh memory is slow to touch.
    body_buffer_bytes: int = Field(256 << 20, ge=0)
    #: Whether numpy advises transparent huge pages for its large arrays (app/buffers.py:
    #: off, since on a VM that hands freed memory back to its host a fresh huge page
    #: faults several times slower than the same memory in 4 KiB pages).
    huge_pages: bool = False
    #: Bytes of remote voxels (proxy instances) kept in memory; remotes are immutable.
    proxy_cache_bytes: int = Field(256 << 20, ge=0)
    #: ``DVID_CLOUD_BOSS_TOKEN`` and ``DVID_CLOUD_BRAINMAPS_CREDENTIALS``: the env forms
    #: of ``[proxy.boss] token`` and ``[proxy.brainmaps] credentials`` (the file wins).
    boss_token: SecretStr | None = None
    brainmaps_credentials: str | None = None
    config_file: Path | None = None
    store: dict[str, StoreConfig] = Field(default_factory=dict)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    proxy: ProxySection = Field(default_factory=ProxySection)

    def __init__(self, **values: Any) -> None:
        path = values.get("config_file") or _config_path_from_env()
        file = _toml_values(Path(path)) if path else {}
        super().__init__(**_merged(_merged(file, _env_values(type(self))), values))

    def stores(self) -> dict[str, StoreConfig]:
        """Configured stores; without any, one local folder at ``data_dir``."""
        if self.store:
            return dict(self.store)
        if self.store_url:
            return {DEFAULT_STORE: StoreConfig(path=self.store_url, endpoint=self.store_endpoint)}
        return {DEFAULT_STORE: StoreConfig(path=str(self.data_dir))}

    def proxy_config(self) -> ProxyConfig:
        """The remotes' configuration, secrets revealed only to the backends."""
        boss, brainmaps = self.proxy.boss, self.proxy.brainmaps
        token = boss.token or self.boss_token
        return ProxyConfig(
            boss=BossConfig(boss.endpoint, token.get_secret_value() if token else None),
            brainmaps=BrainMapsConfig(
                brainmaps.endpoint, brainmaps.credentials or self.brainmaps_credentials
            ),
            timeout=self.proxy.timeout,
            attempts=self.proxy.attempts,
        )

    def default_store_name(self) -> str:
        stores = self.stores()
        if self.backend.default in stores:
            return self.backend.default
        if len(stores) == 1:
            return next(iter(stores))
        raise ValueError(f"[backend] default = {self.backend.default!r} names no [store.*]")


def _toml_values(path: Path) -> dict[str, Any]:
    """The config file's values; keys of a ``[server]`` table are lifted to the top
    level, as DVID's files have them."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    server = data.pop("server", {})
    return {**server, **data}


def _env_values(model: type[BaseModel]) -> dict[str, Any]:
    """The fields set by ``DVID_CLOUD_<FIELD>`` env vars (names in any case)."""
    env = {name.lower(): value for name, value in os.environ.items()}
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        value = env.get((ENV_PREFIX + name).lower())
        if value is None:
            continue
        if _takes_json(field.annotation):
            try:
                value = json.loads(value)
            except ValueError as e:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} is not JSON: {e}") from None
        values[name] = value
    return values


def _takes_json(annotation: Any) -> bool:
    """Whether a field's env value is JSON: a list, a table or a section (``str`` is a
    sequence too, but its value is the text itself)."""
    origin = get_origin(annotation)
    if origin is Union or origin is UnionType:
        return any(_takes_json(arg) for arg in get_args(annotation))
    kind = origin or annotation
    return (
        isinstance(kind, type)
        and not issubclass(kind, (str, bytes))
        and issubclass(kind, (BaseModel, Mapping, Sequence, Set))
    )


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``, table by table: a section given in two sources keeps the
    keys only one of them sets."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            value = _merged(below, value)
        merged[key] = value
    return merged


def _config_path_from_env() -> Path | None:
    value = os.environ.get("DVID_CLOUD_CONFIG")
    return Path(value) if value else None


def load_settings(config_file: str | os.PathLike[str] | None = None, **flags: Any) -> Settings:
    """Settings from flags (None values are ignored), env vars and the TOML file."""
    given = {k: v for k, v in flags.items() if v is not None}
    path = Path(config_file) if config_file else _config_path_from_env()
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        given["config_file"] = path

    return Settings(**given)
