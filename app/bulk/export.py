"""``dvid-cloud export DEST``: a volume instance at one version as a static neuroglancer
precomputed volume (TensorStore, CloudVolume and neuroglancer read it), written by Dask
workers that read the store directly. The work is :mod:`app.bulk.export_tasks`; this
module is only the command, so that ``dvid-cloud --help`` imports nothing heavy.

Meshes and skeletons go into the same destination with ``dvid-cloud meshes --export
DEST`` and ``dvid-cloud skeletons --export DEST`` (:mod:`app.bulk.bodies`), which name
their folders in this volume's ``info``.
"""

from __future__ import annotations

import functools
import time

import click

from app.bulk.runner import (
    Summary,
    bulk_options,
    clear_errors,
    dask_client,
    run_tasks,
    target,
)


@click.command()
@click.argument("dest")
@bulk_options
@click.option("--sharded", is_flag=True, help="Pack chunks into sharded files.")
@click.option(
    "--scales", type=click.IntRange(min=1), help="Export only the first N scales (s0...)."
)
@click.option(
    "--task-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=32.0,
    show_default=True,
    help="Megabytes of voxels per task; with --sharded, also per shard.",
)
@click.option(
    "--dest-endpoint",
    help="Endpoint of an S3-compatible DEST (default: AWS_ENDPOINT_URL, else AWS).",
)
def export(
    dest: str,
    uuid: str,
    instance: str,
    data_dir: str | None,
    config: str | None,
    scheduler: str | None,
    workers: int | None,
    log_level: str,
    sharded: bool,
    scales: int | None,
    task_mb: float,
    dest_endpoint: str | None,
) -> None:
    """Write INSTANCE (imageblk types, labelmap) at version UUID to DEST, a folder or an
    s3:// or gs:// URL, as a neuroglancer precomputed volume: the scales, voxels and
    encodings the server's precomputed view serves at that version (a labelmap's body
    ids). Prints a JSON summary."""
    from app.bulk import destination, export_tasks
    from app.logs import configure_logging

    configure_logging(log_level)
    with clear_errors():
        spec = destination.kvstore(dest, dest_endpoint)
        where = target(uuid, instance, data_dir, config)
        plan = export_tasks.plan(where, spec, sharded, scales, task_mb)
        started = time.perf_counter()
        with dask_client(scheduler, workers) as client:
            client.run(export_tasks.warm_up, plan.job)
            startup = time.perf_counter() - started
            summary = Summary("export")  # timed from here: the workers are ready
            work = functools.partial(export_tasks.export_region, plan.job)
            done = run_tasks(client, work, plan.regions, "exporting")
    summary.voxels = sum(d.voxels for d in done)
    summary.chunks = sum(d.chunks for d in done)
    summary.nbytes = summary.voxels * plan.voxel_bytes
    summary.extra.update(
        dest=destination.describe(spec),
        uuid=plan.job.target.uuid,
        scales=plan.scales,
        sharded=sharded,
        tasks=len(done),
        startup_seconds=round(startup, 3),
    )
    click.echo(summary.line())
