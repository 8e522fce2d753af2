"""``dvid-cloud meshes`` and ``dvid-cloud skeletons``: per-body meshes (zmesh) and
skeletons (kimimaro) of a labelmap at one version, computed by Dask workers that read
the store directly, kept in the keyvalue instances ``<labelmap>_meshes`` and
``<labelmap>_skeletons`` that neuroglancer's ``dvid://`` source reads, and with
``--export DEST`` also as precomputed meshes and skeletons beside a ``dvid-cloud export``
of the labelmap. The work is :mod:`app.bulk.body_tasks` and :mod:`app.bulk.shapes`; this
module is only the commands, so that ``dvid-cloud --help`` imports nothing heavy.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import click

from app.bulk.runner import (
    Summary,
    bulk_options,
    clear_errors,
    dask_client,
    run_tasks,
    target,
)


def _shape_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    decorators = [
        click.option("--labels", help="Only these bodies: L1,L2,... (default: every body)."),
        click.option("--export", "dest", help="Also write precomputed files to DEST."),
        click.option(
            "--dest-endpoint",
            help="Endpoint of an S3-compatible DEST (default: AWS_ENDPOINT_URL, else AWS).",
        ),
        click.option(
            "--no-keyvalue",
            is_flag=True,
            help="Write only --export DEST (the way at a committed version).",
        ),
        click.option(
            "--max-voxels",
            type=click.IntRange(min=1),
            default=1 << 27,
            show_default=True,
            help="A body whose blocks span a larger box is read at a lower scale.",
        ),
    ]
    for decorate in reversed(decorators):
        fn = decorate(fn)
    return fn


def _run(command: str, options: dict[str, Any]) -> None:
    """Plan, run the tasks, print the summary."""
    from app.bulk import body_tasks, destination
    from app.logs import configure_logging

    configure_logging(options["log_level"])
    kind: body_tasks.Shapes = body_tasks.Meshes() if command == "meshes" else body_tasks.Skeletons()
    with clear_errors():
        labels = options["labels"]
        wanted = body_tasks.parse_labels(labels) if labels is not None else None
        dest = options["dest"]
        spec = destination.kvstore(dest, options["dest_endpoint"]) if dest else None
        where = target(options["uuid"], options["instance"], options["data_dir"], options["config"])
        plan = body_tasks.plan(
            where, kind, wanted, spec, not options["no_keyvalue"], options["max_voxels"]
        )
        started = time.perf_counter()
        with dask_client(options["scheduler"], options["workers"]) as client:
            client.run(body_tasks.warm_up, plan.job)
            startup = time.perf_counter() - started
            summary = Summary(command)  # timed from here: the workers are ready
            work = functools.partial(body_tasks.shape_bodies, plan.job)
            label = "meshing" if command == "meshes" else "skeletonizing"
            results = run_tasks(client, work, plan.batches, label)
    done = body_tasks.Done()
    for result in results:
        done.add(result)
    summary.voxels = done.voxels
    summary.chunks = done.blocks
    summary.nbytes = done.blocks * plan.block_bytes
    summary.extra.update(
        uuid=plan.job.target.uuid,
        bodies=done.bodies,
        without_shape=done.empty,
        gone=done.gone,
        bodies_per_scale={str(s): n for s, n in sorted(done.scales.items())},
        keyvalue=plan.job.keyvalue,
        dest=destination.describe(spec) if spec else None,
        tasks=len(results),
        startup_seconds=round(startup, 3),
    )
    click.echo(summary.line())


@click.command()
@bulk_options
@_shape_options
def meshes(**options: Any) -> None:
    """Compute the mesh of every body (or --labels) of labelmap INSTANCE at version UUID
    and store it as <body>.ngmesh in keyvalue <INSTANCE>_meshes (created if absent).
    Prints a JSON summary."""
    _run("meshes", options)


@click.command()
@bulk_options
@_shape_options
def skeletons(**options: Any) -> None:
    """Compute the skeleton of every body (or --labels) of labelmap INSTANCE at version
    UUID and store it as <body>_swc (SWC text) in keyvalue <INSTANCE>_skeletons (created
    if absent). Prints a JSON summary."""
    _run("skeletons", options)
