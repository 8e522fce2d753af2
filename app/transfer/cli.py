"""``dvid-cloud push`` and ``dvid-cloud pull``: a version and its ancestry, copied to or
from another server or store (see :mod:`app.transfer`).

Either end is a dvid-cloud server (``http(s)://``, over its transfer endpoints,
authenticated with ``--token``) or a store (an ``s3://`` or ``gs://`` bucket or a
folder, opened here). The local end is the store of the usual options (``--data-dir``,
``--config``, the environment), or, with ``--server``, a server.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from app.transfer.http_side import HttpSide
from app.transfer.sides import Side, StoreSide

log = logging.getLogger("dvid_cloud.transfer")

F = TypeVar("F", bound=Callable[..., Any])


def open_end(spec: str, token: str | None) -> Side:
    """A server URL, a bucket URL or a folder as one end of a transfer."""
    from backends import open_store

    if spec.startswith(("http://", "https://")):
        return HttpSide(spec, token)
    return StoreSide({"default": open_store(spec)}, "default", where=spec)


def local_end(
    server: str | None, data_dir: str | None, config: str | None, token: str | None
) -> Side:
    """The local end: ``--server``'s server, else the store of the usual options."""
    if server:
        return open_end(server, token)
    from app.services import Services
    from app.settings import load_settings

    services = Services.from_settings(load_settings(config, data_dir=data_dir))
    services.check()
    return StoreSide(services.stores, services.default_store)


@contextlib.contextmanager
def clear_errors() -> Iterator[None]:
    """Failures as one line on stderr and exit status 1 (as the bulk commands)."""
    from app.errors import DVIDError
    from backends import StoreError

    try:
        yield
    except DVIDError as e:
        raise click.ClickException(" ".join(e.message.split())) from None
    except (StoreError, ValueError, OSError) as e:
        raise click.ClickException(" ".join(str(e).split()) or type(e).__name__) from None


def transfer(
    command: str, source: Side, dest: Side, ref: str, *, flatten_it: bool, force: bool
) -> str:
    """Plan, copy, merge, publish; returns the summary line."""
    from app.transfer import engine

    summary = engine.Summary(command)
    planned = engine.plan(source, dest, ref, flatten_it=flatten_it, force=force)
    log.info(
        "transfer planned",
        extra={
            "command": command,
            "node": planned.node,
            "source": source.where,
            "destination": dest.where,
            "objects": len(planned.items),
            "bytes": planned.nbytes,
            "skipped": planned.skipped,
            "diverged": planned.diverged,
        },
    )
    if planned.items or planned.request.nodes:
        dest.prepare()
    done = [0]

    def shown(_: object) -> str:
        return f"{done[0]}/{len(planned.items)} objects"

    with click.progressbar(
        length=max(planned.nbytes, 1),
        label=f"{command} {planned.node[:8]}: bytes",
        file=sys.stderr,
        item_show_func=shown,
    ) as bar:

        def progress(nbytes: int) -> None:
            done[0] += 1
            bar.update(nbytes, current_item=done[0])

        engine.copy(source, dest, planned.items, progress)
    published = engine.finish(source, dest, planned)
    line = summary.line(planned, published)
    log.info("transfer done", extra={"command": command, "node": planned.node})
    return line


def _run(
    command: str,
    open_source: Callable[[], Side],
    open_target: Callable[[], Side],
    uuid: str,
    *,
    flatten: bool,
    force: bool,
    log_level: str,
) -> None:
    """What push and pull share: open both ends, transfer, print the summary line, and
    close the ends; errors become one line."""
    from app.logs import configure_logging

    configure_logging(log_level)
    with clear_errors():
        source = open_source()
        target = open_target()
        try:
            click.echo(transfer(command, source, target, uuid, flatten_it=flatten, force=force))
        finally:
            source.close()
            target.close()


_store_options = [
    click.option("--data-dir", type=click.Path(file_okay=False), help="Local data folder."),
    click.option("--config", type=click.Path(dir_okay=False), help="TOML config file."),
    click.option(
        "--token",
        envvar="DVID_CLOUD_TOKEN",
        help="A JWT, or the server's admin token, for servers with auth on.",
    ),
    click.option("--log-level", default="warning", show_default=True),
]


def _with_store_options(fn: F) -> F:
    for decorate in reversed(_store_options):
        fn = decorate(fn)
    return fn


@click.command()
@click.argument("uuid")
@click.argument("dest")
@click.option("--server", "src_url", help="Push from this server instead of the local store.")
@click.option("--flatten", is_flag=True, help="Send the version alone, its ancestry collapsed.")
@click.option("--force", is_flag=True, help="Drop a diverged destination branch from its DAG.")
@_with_store_options
def push(
    uuid: str,
    dest: str,
    src_url: str | None,
    flatten: bool,
    force: bool,
    data_dir: str | None,
    config: str | None,
    token: str | None,
    log_level: str,
) -> None:
    """Copy committed version UUID and its ancestry to DEST: a dvid-cloud server URL, an
    s3:// or gs:// bucket, or a folder. Sends only what DEST lacks; rerun to resume. A
    DEST branch holding versions this side lacks is refused unless --force. Prints a
    JSON summary line."""
    _run(
        "push",
        lambda: local_end(src_url, data_dir, config, token),
        lambda: open_end(dest, token),
        uuid,
        flatten=flatten,
        force=force,
        log_level=log_level,
    )


@click.command()
@click.argument("uuid")
@click.argument("src")
@click.option("--server", "dest_url", help="Pull into this server instead of the local store.")
@click.option("--force", is_flag=True, help="Drop a diverged local branch from the DAG.")
@_with_store_options
def pull(
    uuid: str,
    src: str,
    dest_url: str | None,
    force: bool,
    data_dir: str | None,
    config: str | None,
    token: str | None,
    log_level: str,
) -> None:
    """Copy committed version UUID and its ancestry from SRC (a dvid-cloud server URL, an
    s3:// or gs:// bucket, or a folder) into the local store (or --server). Fetches only
    what is missing; rerun to resume. Prints a JSON summary line."""
    _run(
        "pull",
        lambda: open_end(src, token),
        lambda: local_end(dest_url, data_dir, config, token),
        uuid,
        flatten=False,
        force=force,
        log_level=log_level,
    )
