"""What every bulk command shares: its options, the Dask cluster, the services each
worker opens once, the progress bar and the closing summary."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

from app.settings import Settings, load_settings

if TYPE_CHECKING:
    from distributed import Client

    from app.services import Services

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
R = TypeVar("R")


def bulk_options(fn: F) -> F:
    """``--uuid``, ``--instance``, the store options of ``serve`` and the cluster options."""
    decorators = [
        click.option("--uuid", required=True, help="Version: a UUID, prefix or :branch."),
        click.option("--instance", required=True, help="The data instance's name."),
        click.option("--data-dir", type=click.Path(file_okay=False), help="Local data folder."),
        click.option("--config", type=click.Path(dir_okay=False), help="TOML config file."),
        click.option("--scheduler", help="A Dask scheduler address (default: a local cluster)."),
        click.option("--workers", type=int, help="Workers of the local cluster (default: cores)."),
        click.option("--log-level", default="warning", show_default=True),
    ]
    for decorate in reversed(decorators):
        fn = decorate(fn)
    return fn


@dataclass(frozen=True)
class Target:
    """Where a bulk command works: the settings (shipped to every worker) and the
    instance at a version."""

    settings: Settings
    uuid: str
    instance: str


def target(uuid: str, instance: str, data_dir: str | None, config: str | None) -> Target:
    return Target(load_settings(config, data_dir=data_dir), uuid, instance)


_SERVICES: dict[str, Services] = {}
_SERVICES_LOCK = threading.Lock()


def services_for(settings: Settings) -> Services:
    """The services of ``settings`` in this process (a worker opens its stores once)."""
    from app.services import Services

    key = settings.model_dump_json()
    with _SERVICES_LOCK:
        services = _SERVICES.get(key)
        if services is None:
            services = _SERVICES[key] = Services.from_settings(settings)
            services.check()
        return services


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler``, or of a local cluster of ``workers``
    single-threaded worker processes (tensorstore and numpy release the GIL, but the
    label index and record code do not)."""
    from distributed import Client, LocalCluster

    # distributed sets its loggers to INFO: follow the command's --log-level instead.
    logging.getLogger("distributed").setLevel(max(logging.WARNING, logging.getLogger().level))
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    with (
        LocalCluster(
            n_workers=n, threads_per_worker=1, dashboard_address=None, processes=True
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@contextlib.contextmanager
def clear_errors() -> Iterator[None]:
    """Failures the user can act on (bad input, a locked node, an unusable store or file,
    also when a worker raised them) as one line on stderr and exit status 1."""
    from app.errors import DVIDError
    from backends import StoreError

    try:
        yield
    except DVIDError as e:
        raise click.ClickException(e.message) from None
    except (StoreError, ValueError, OSError) as e:
        raise click.ClickException(" ".join(str(e).split())) from None


def run_tasks(client: Client, fn: Callable[[T], R], items: Iterable[T], label: str) -> list[R]:
    """``fn`` over ``items`` on the cluster, with a progress bar on stderr; results in
    completion order. The first failure cancels the rest and is raised."""
    from distributed import as_completed

    futures = client.map(fn, list(items), pure=False)
    results: list[R] = []
    with click.progressbar(length=len(futures), label=label, file=sys.stderr) as bar:
        try:
            for future in as_completed(futures):
                results.append(future.result())
                bar.update(1)
        except BaseException:
            client.cancel(futures)
            raise
    return results


@dataclass
class Summary:
    """The closing line of a bulk command: what it did and how fast."""

    command: str
    voxels: int = 0
    chunks: int = 0
    nbytes: int = 0
    started: float = field(default_factory=time.perf_counter)
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        seconds = time.perf_counter() - self.started
        out = {
            "command": self.command,
            "voxels": self.voxels,
            "chunks": self.chunks,
            "seconds": round(seconds, 3),
            "voxels_per_second": round(self.voxels / seconds) if seconds else None,
            "MB_per_second": round(self.nbytes / seconds / 1e6, 2) if seconds else None,
            **self.extra,
        }
        return json.dumps(out)
