"""pytest fixtures for object-store tests: fake S3/GCS servers and fresh stores.

Import them into a test module or conftest with
``from tests.fixtures_stores import gcs_endpoint, gcs_env, s3_endpoint, s3_env, store_factory``.

* ``s3_endpoint`` / ``gcs_endpoint`` (session): base URL of a moto / fake-gcs-server child
  process, started on first use. If several modules (or a conftest and a module) import
  these fixtures, pytest sees distinct fixture definitions; the servers are shared anyway
  through a reference count, so each runs once per process.
* ``s3_env`` / ``gcs_env`` (function): point *environment-driven* clients (``open_store``,
  tensorstore) at the fakes, via ``monkeypatch`` so nothing leaks past the test.
* ``store_factory`` (function, parametrized over memory, local, s3, gcs): a callable making
  a fresh, empty :class:`~backends.base.ObjectStore` per call. S3 and GCS stores get a new
  bucket and the prefix :data:`STORE_PREFIX`, with decoy objects just outside that prefix,
  so prefix handling is exercised by every test. They are configured explicitly (endpoint,
  credentials) and need no environment variables.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from backends.base import ObjectStore
from tests.servers import fake_gcs_server, moto_s3_server

if TYPE_CHECKING:
    from backends.gcs import GCSStore
    from backends.s3 import S3Store

STORE_KINDS = ("memory", "local", "s3", "gcs")
#: Prefix of cloud stores made by ``store_factory``; DECOY_KEYS sit next to it in the bucket.
STORE_PREFIX = "pre/fix/"
DECOY_KEYS = ("decoy", "pre/fix", "pre/fiw/a", "pre/fiy", "pre/fix0/a")

AWS_TEST_REGION = "us-east-1"
AWS_TEST_KEY = "testing"


class _SharedServer:
    """One server per process, started by the first user and stopped by the last."""

    def __init__(self, start: Callable[[], contextlib.AbstractContextManager[str]]) -> None:
        self._start = start
        self._lock = threading.Lock()
        self._users = 0
        self._stack: contextlib.ExitStack | None = None
        self._url = ""

    @contextlib.contextmanager
    def use(self) -> Iterator[str]:
        with self._lock:
            if self._users == 0:
                stack = contextlib.ExitStack()
                self._url = stack.enter_context(self._start())
                self._stack = stack
            self._users += 1
        try:
            yield self._url
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._stack is not None:
                    self._stack.close()
                    self._stack = None


_S3_SERVER = _SharedServer(moto_s3_server)
_GCS_SERVER = _SharedServer(fake_gcs_server)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL of a moto S3 server shared by the whole session."""
    with _S3_SERVER.use() as url:
        yield url


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """Endpoint URL of a fake-gcs-server shared by the whole session."""
    with _GCS_SERVER.use() as url:
        yield url


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Make boto3 and tensorstore find the moto server through the environment alone.

    Profiles and config files are hidden so a developer's ~/.aws cannot leak in.
    """
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    missing = str(tmp_path / "no-aws-config")
    monkeypatch.setenv("AWS_CONFIG_FILE", missing)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_TEST_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_TEST_KEY)
    monkeypatch.setenv("AWS_REGION", AWS_TEST_REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_TEST_REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return s3_endpoint


@pytest.fixture
def gcs_env(gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make google-cloud-storage and tensorstore use fake-gcs-server via the environment."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", gcs_endpoint)
    monkeypatch.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "test-token")
    return gcs_endpoint


def isolated_server_env(work: Path) -> dict[str, str]:
    """Env for a server subprocess on the fakes: test credentials only, so a developer's
    AWS profile, emulator variables or dvid-cloud settings cannot leak in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "DVID_CLOUD_", "BOTO_")) and k != "STORAGE_EMULATOR_HOST"
    }
    missing = str(work / "no-aws-config")
    env.update(
        AWS_ACCESS_KEY_ID=AWS_TEST_KEY,
        AWS_SECRET_ACCESS_KEY=AWS_TEST_KEY,
        AWS_DEFAULT_REGION=AWS_TEST_REGION,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=missing,
        AWS_SHARED_CREDENTIALS_FILE=missing,
        DVID_CLOUD_WORKERS="1",  # as the suite's other servers (tests/conftest.py)
    )
    return env


def new_bucket_name() -> str:
    """A bucket name valid on S3 and GCS and unique within the session."""
    return f"t-{uuid.uuid4().hex[:24]}"


_boto_sessions = threading.local()


def _test_boto_session() -> Any:
    """A boto3 session with the test credentials, one per thread (boto3 sessions are not
    thread-safe). Every new session parses botocore's S3 service model again (about 0.1 s
    of CPU, 0.3 s or more on a busy machine); clients of one session share it (10 ms).
    Each store still gets its own client, so stores share no connections or settings."""
    session = getattr(_boto_sessions, "session", None)
    if session is None:
        import boto3

        session = boto3.session.Session(
            aws_access_key_id=AWS_TEST_KEY,
            aws_secret_access_key=AWS_TEST_KEY,
            region_name=AWS_TEST_REGION,
        )
        _boto_sessions.session = session
    return session


def make_s3_store(
    endpoint: str, bucket: str | None = None, prefix: str = "", **kwargs: Any
) -> S3Store:
    """An S3Store on the moto server with explicit test credentials; creates the bucket."""
    from backends.s3 import S3Store

    store = S3Store(
        bucket or new_bucket_name(),
        prefix,
        endpoint_url=endpoint,
        session=_test_boto_session(),
        **kwargs,
    )
    if bucket is None:
        store.client.create_bucket(Bucket=store.bucket)
    return store


def make_gcs_store(
    endpoint: str, bucket: str | None = None, prefix: str = "", **kwargs: Any
) -> GCSStore:
    """A GCSStore on fake-gcs-server (anonymous, project "test"); creates the bucket."""
    from backends.gcs import GCSStore

    store = GCSStore(bucket or new_bucket_name(), prefix, endpoint=endpoint, **kwargs)
    if bucket is None:
        store.client.create_bucket(store.bucket_name)
    return store


class StoreFactory:
    """Makes fresh empty stores of one kind; ``kind`` lets tests allow for known quirks."""

    def __init__(self, kind: str, make: Callable[[], ObjectStore]) -> None:
        self.kind = kind
        self._make = make
        self.made: list[ObjectStore] = []

    def __call__(self) -> ObjectStore:
        store = self._make()
        self.made.append(store)
        return store

    def close_all(self) -> None:
        for store in self.made:
            store.close()


@pytest.fixture(params=STORE_KINDS)
def store_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoreFactory]:
    """A callable returning a fresh empty store of the parametrized kind on each call.

    Servers are only started for the kinds that need them, so ``-k memory`` stays fast.
    """
    kind: str = request.param
    if kind == "memory":
        from backends.memory import MemoryStore

        factory = StoreFactory(kind, MemoryStore)
    elif kind == "local":
        from backends.local import LocalStore

        factory = StoreFactory(kind, lambda: LocalStore(tmp_path_factory.mktemp("store")))
    elif kind == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")

        def make_s3() -> ObjectStore:
            store = make_s3_store(endpoint, prefix=STORE_PREFIX)
            for key in DECOY_KEYS:
                store.client.put_object(Bucket=store.bucket, Key=key, Body=b"decoy")
            return store

        factory = StoreFactory(kind, make_s3)
    elif kind == "gcs":
        endpoint = request.getfixturevalue("gcs_endpoint")

        def make_gcs() -> ObjectStore:
            store = make_gcs_store(endpoint, prefix=STORE_PREFIX)
            bucket = store.client.bucket(store.bucket_name)
            for key in DECOY_KEYS:
                bucket.blob(key).upload_from_string(b"decoy")
            return store

        factory = StoreFactory(kind, make_gcs)
    else:  # pragma: no cover
        raise ValueError(kind)
    try:
        yield factory
    finally:
        factory.close_all()


def proxied_s3_server(
    tmp: Path, bucket: str, endpoint: str, retries: str, stall: str
) -> tuple[Path, dict[str, str]]:
    """The config file and env of a server whose one store is ``bucket`` reached through
    ``endpoint`` (a fault proxy in front of moto): test credentials, and tensorstore
    retrying a chunk request ``retries`` times, 20-100 ms apart, and aborting a transfer
    stalled for ``stall``, so that injected faults reach the server in test time."""
    from backends.tensorstore_errors import INITIAL_DELAY_ENV, MAX_DELAY_ENV, RETRIES_ENV, STALL_ENV

    config = tmp / "dvid.toml"
    config.write_text(
        f'[store.main]\npath = "s3://{bucket}/dvid"\n'
        f'endpoint = "{endpoint}"\nregion = "{AWS_TEST_REGION}"\n\n'
        '[backend]\ndefault = "main"\n'
    )
    env = isolated_server_env(tmp)
    env.update(
        {STALL_ENV: stall, RETRIES_ENV: retries, INITIAL_DELAY_ENV: "20ms", MAX_DELAY_ENV: "100ms"}
    )
    return config, env
