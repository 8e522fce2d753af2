"""The Dask clusters and the command runner the bulk-command tests share.

Commands run in the test process (click's runner) against a cluster started once per
module and named with ``--scheduler``: two single-threaded worker processes, so tasks
really run in different processes against one store (on S3 too: the test moto server's
conditional writes are atomic, see ``tests/moto_atomic.py``).

A test module imports the fixtures it uses and lists them in ``__all__``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.cli_support import invoke
from tests.fixtures_stores import AWS_TEST_KEY, AWS_TEST_REGION

#: Test credentials for the workers' S3 clients (the test process gets them from s3_env).
WORKER_ENV = {
    "AWS_ACCESS_KEY_ID": AWS_TEST_KEY,
    "AWS_SECRET_ACCESS_KEY": AWS_TEST_KEY,
    "AWS_REGION": AWS_TEST_REGION,
    "AWS_DEFAULT_REGION": AWS_TEST_REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
}

#: Task modules every worker imports up front, so the tests' time is the work's.
TASK_MODULES = ("app.bulk.volume_tasks", "app.bulk.export_tasks", "app.bulk.body_tasks")

Run = Callable[..., dict[str, Any]]


def _warm() -> None:
    for module in TASK_MODULES:
        __import__(module)


@contextmanager
def local_cluster(processes: int, threads: int) -> Iterator[str]:
    """A local cluster of ``processes`` workers with ``threads`` threads each; yields the
    scheduler's address."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=processes,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=None,
            env=WORKER_ENV,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_warm)
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """Two single-threaded worker processes, for the module."""
    with local_cluster(processes=2, threads=1) as address:
        yield address


@pytest.fixture
def run(scheduler: str) -> Run:
    """Runs a command on :func:`scheduler`; returns its summary (the last stdout line)."""

    def command(*args: str) -> dict[str, Any]:
        result = invoke(*args, "--scheduler", scheduler)
        assert result.exit_code == 0, (result.output, result.stderr, result.exception)
        return json.loads(result.stdout.strip().splitlines()[-1])

    return command
