"""``dvid-cloud ingest`` and ``dvid-cloud downres``: volumes loaded, and pyramids built, on
a Dask cluster writing straight to the store.

The calling process checks everything and plans the work before anything is written (a
bad source, type or version is one line on stderr and nothing changes), then hands one
task per box (:mod:`app.bulk.tiling`) to the workers (:mod:`app.bulk.volume_tasks`).
After the tasks, instances synced to the target catch up once (as a server delivers
after a write).

Resuming needs no bookkeeping of its own: an ingest task skips its box when the version
node itself wrote every block there and holds exactly the source's voxels, which is
what a finished task leaves (each one is a transaction), so rerunning an interrupted
command redoes only what is missing. A downres is idempotent and simply rerun.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import click
import numpy as np

from app.bulk.runner import (
    Summary,
    Target,
    bulk_options,
    clear_errors,
    dask_client,
    run_tasks,
    services_for,
    target,
)
from app.bulk.sources import Source, open_source
from app.bulk.tiling import cells, pyramid_unit
from app.volumes.geometry import Box, Vec

if TYPE_CHECKING:
    from app.bulk.volume_tasks import Done, DownresTask, IngestTask, VolumeTask
    from app.services import Services
    from app.volumes.base import VolumeData

#: Voxel megabytes (2^20 bytes of the instance's type) per task, by default.
TASK_MB = 64.0

T = TypeVar("T", bound="VolumeTask")


def _ints(count: int) -> Callable[[click.Context, click.Parameter, str | None], list[int] | None]:
    """A click callback parsing ``count`` comma-separated integers."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
        if value is None:
            return None
        try:
            numbers = [int(v) for v in value.split(",")]
        except ValueError:
            numbers = []
        if len(numbers) != count:
            raise click.BadParameter(f"{value!r} is not {count} comma-separated integers")
        return numbers

    return parse


def _task_mb() -> Callable[[click.decorators.FC], click.decorators.FC]:
    return click.option(
        "--task-mb",
        type=click.FloatRange(min=0, min_open=True),
        default=TASK_MB,
        show_default=True,
        help="Megabytes of voxels per task (each task is one transaction).",
    )


@click.command()
@click.argument("source")
@bulk_options
@click.option("--offset", callback=_ints(3), help="X,Y,Z of the source's first voxel.")
@click.option("--type", "typename", help="Create the instance as TYPE if it does not exist.")
@click.option(
    "-s", "--setting", "settings", multiple=True, help="NAME=VALUE for the instance --type creates."
)
@_task_mb()
def ingest(
    source: str,
    uuid: str,
    instance: str,
    data_dir: str | None,
    config: str | None,
    scheduler: str | None,
    workers: int | None,
    log_level: str,
    offset: list[int] | None,
    typename: str | None,
    settings: tuple[str, ...],
    task_mb: float,
) -> None:
    """Load SOURCE into an imageblk or labelmap instance at an open version, in parallel.

    SOURCE is a TIFF stack (a folder or a glob of 2-D TIFFs, one per z, in natural name
    order) or a multi-page TIFF, a zarr v2 or v3 array, a neuroglancer precomputed volume
    (a folder or URL, scale 0) or a .npy file, read as ZYX. Its first voxel goes to
    --offset (default: the source's own origin, a precomputed voxel_offset or 0). The
    voxel type must convert losslessly to the instance's. Writes go through the
    datatype's own code (labelmap: label index, counters and lower scales, as POST raw).
    Rerunning an interrupted ingest skips the boxes already written. Prints a JSON
    summary line.
    """
    from app.logs import configure_logging

    configure_logging(log_level)
    with clear_errors():
        from app.bulk.volume_tasks import ingest_box

        where = target(uuid, instance, data_dir, config)
        services = services_for(where.settings)
        data, tasks = plan_ingest(
            services, where, open_source(source), offset, typename, settings, task_mb
        )
        summary = _execute(data, ingest_box, tasks, "ingest", scheduler, workers)
    click.echo(summary.line())


@click.command()
@bulk_options
@click.option("--box", callback=_ints(6), help="X0,Y0,Z0,X1,Y1,Z1 (end exclusive) at scale 0.")
@_task_mb()
def downres(
    uuid: str,
    instance: str,
    data_dir: str | None,
    config: str | None,
    scheduler: str | None,
    workers: int | None,
    log_level: str,
    box: list[int] | None,
    task_mb: float,
) -> None:
    """Rebuild the lower scales of an instance at an open version from its scale 0, over
    --box or its whole extents: a labelmap's scales 1..MaxDownresLevel (DVID's 2x2x2
    mode), or an imageblk's pyramid instances <name>_1, <name>_2... (2x2x2 mean;
    MaxDownresLevel levels, at least 1, as POST raw?downres=true). Prints a JSON summary
    line.
    """
    from app.logs import configure_logging

    configure_logging(log_level)
    with clear_errors():
        from app.bulk.volume_tasks import downres_box

        where = target(uuid, instance, data_dir, config)
        services = services_for(where.settings)
        region = Box.from_bounds(box[:3], box[3:]) if box else None
        data, tasks = plan_downres(services, where, region, task_mb)
        summary = _execute(data, downres_box, tasks, "downres", scheduler, workers)
    click.echo(summary.line())


# --- planning ------------------------------------------------------------------------


def plan_ingest(
    services: Services,
    where: Target,
    source: Source,
    offset: Sequence[int] | None,
    typename: str | None,
    settings: Sequence[str],
    task_mb: float,
) -> tuple[VolumeData, list[IngestTask]]:
    """Check the target and the source (400 on any mismatch, nothing written), create
    the instance if ``typename`` says so, and cut the source's box into tasks."""
    from app.bulk.volume_tasks import IngestTask, writable
    from app.datatypes.labelmap import Labelmap
    from app.datatypes.labelmap.ingest import Stamp
    from app.errors import BadRequest

    repo, node = services.catalog.resolve(where.uuid)
    if where.instance not in repo.instances:
        if not typename:
            raise BadRequest(
                f"no data instance {where.instance!r} in repo {repo.root}: give --type to create it"
            )
        _create(services, node.uuid, where.instance, typename, settings, source)
    data = writable(services, node.uuid, where.instance)
    if typename and data.typename != typename:
        raise BadRequest(f"instance {where.instance!r} is a {data.typename}, not a {typename}")
    _check_dtype(source, data.dtype, data.typename)
    x, y, z = offset if offset else source.origin
    box = Box((x, y, z), source.size).check_inside()
    data.prepare_read()  # complete a transaction an interrupted run left behind
    grid = data.volume().grid
    boxes = cells(box, grid, _budget(task_mb, data.dtype))
    stamp = None
    if isinstance(data, Labelmap) and data.indexed:
        stamp = Stamp(data.new_mutation_id())  # the whole ingest is one mutation
    tasks = [
        IngestTask(where.settings, node.uuid, data.name, b, source, box.offset, stamp)
        for b in boxes
    ]
    return data, tasks


def _create(
    services: Services,
    node: str,
    name: str,
    typename: str,
    settings: Sequence[str],
    source: Source,
) -> None:
    """Create ``name`` as ``typename`` through the API's own creation code, after the
    checks that need no instance (so a refused ingest creates nothing)."""
    from app.api.repos import create_instance
    from app.datatypes import get
    from app.datatypes.imageblk import ImageBlock
    from app.datatypes.labelmap import Labelmap
    from app.errors import BadRequest

    datatype = get(typename)
    if not issubclass(datatype, ImageBlock | Labelmap):
        raise BadRequest(f"cannot ingest into a {typename}: use an imageblk type or labelmap")
    _check_dtype(source, datatype.dtype, typename)
    body = {"typename": typename, "dataname": name}
    for item in settings:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise BadRequest(f"setting {item!r} is not NAME=VALUE")
        body[key] = value
    create_instance(node, body, services)


def _check_dtype(source: Source, dtype: np.dtype, typename: str) -> None:
    from app.errors import BadRequest

    if not np.can_cast(np.dtype(source.dtype), dtype, "safe"):
        raise BadRequest(
            f"{source.name} holds {np.dtype(source.dtype).name} voxels, which a {typename} "
            f"({dtype.name}) cannot hold unchanged"
        )


def _budget(task_mb: float, dtype: np.dtype) -> int:
    return max(1, int(task_mb * (1 << 20)) // dtype.itemsize)


def plan_downres(
    services: Services, where: Target, region: Box | None, task_mb: float
) -> tuple[VolumeData, list[DownresTask]]:
    """Check the target and cut the region (default: the extents) into tasks."""
    from app.bulk.volume_tasks import DownresTask, writable
    from app.datatypes.labelmap import Labelmap
    from app.errors import BadRequest

    _, node = services.catalog.resolve(where.uuid)
    data = writable(services, node.uuid, where.instance)
    data.prepare_read()
    grid = data.volume().grid
    unit: Vec = (1, 1, 1)
    if isinstance(data, Labelmap):
        levels = data.max_level
        if not levels:
            raise BadRequest(f"labelmap {data.name!r} has MaxDownresLevel 0: no lower scales")
    else:
        levels = int(data.settings.get("MaxDownresLevel") or 1)
        unit = pyramid_unit(grid, levels)
    region = region or data.extents()
    if region is None:
        raise BadRequest(f"{data.name!r} holds no voxels at version {node.uuid}")
    region.check_inside()
    boxes = cells(region, grid, _budget(task_mb, data.dtype), unit)
    return data, [DownresTask(where.settings, node.uuid, data.name, b, levels) for b in boxes]


# --- running -------------------------------------------------------------------------


def _execute(
    data: VolumeData,
    fn: Callable[[T], Done],
    tasks: Sequence[T],
    command: str,
    scheduler: str | None,
    workers: int | None,
) -> Summary:
    """Run ``fn`` over ``tasks`` on the cluster, let synced instances catch up, and add
    up what the tasks did. The summary's seconds run from the first task submitted; its
    ``startup_seconds`` are those of starting the cluster and the workers' imports."""
    from app.bulk.volume_tasks import warm_up
    from app.syncs import deliver

    started = time.perf_counter()
    with dask_client(scheduler, workers) as client:
        client.run(warm_up, data.services.settings)
        extra = {"uuid": data.node.uuid, "instance": data.name, "workers": len(client.nthreads())}
        extra["startup_seconds"] = round(time.perf_counter() - started, 3)
        summary = Summary(command, extra=extra)
        done = run_tasks(client, fn, tasks, f"{command} {data.name}")
    deliver(data)
    written = [d for d in done if not d.skipped]
    summary.voxels = sum(d.voxels for d in written)
    summary.chunks = sum(d.chunks for d in written)
    summary.nbytes = sum(d.nbytes for d in written)
    summary.extra["tasks"] = len(done)
    summary.extra["tasks_skipped"] = len(done) - len(written)
    summary.extra["voxels_skipped"] = sum(d.voxels for d in done if d.skipped)
    return summary
