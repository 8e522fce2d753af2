"""The ``dvid-cloud`` command: start a server, or talk to a running one."""

from __future__ import annotations

import functools
import gc
import importlib
import json
import logging
import os
import sys
from typing import Any

import click

from backends import StoreError

DEFAULT_URL = "http://127.0.0.1:8000"


#: The commands of other modules: name -> "module:attribute".
LAZY_COMMANDS = {
    "ingest": "app.bulk.ingest:ingest",
    "downres": "app.bulk.ingest:downres",
    "export": "app.bulk.export:export",
    "meshes": "app.bulk.bodies:meshes",
    "skeletons": "app.bulk.bodies:skeletons",
    "diff": "app.diff_command:diff",
    "push": "app.transfer.cli:push",
    "pull": "app.transfer.cli:pull",
}


class LazyGroup(click.Group):
    """A group whose other modules' commands are imported only when run or listed, so
    that ``serve`` starts without importing the bulk, diff and transfer tools."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, name = LAZY_COMMANDS[cmd_name].partition(":")
        command: click.Command = getattr(importlib.import_module(module), name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--server",
    envvar="DVID_CLOUD_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="URL of the running server the client commands talk to.",
)
@click.pass_context
def main(ctx: click.Context, server: str) -> None:
    """dvid-cloud: DVID's versioned, image-oriented API on object stores."""
    ctx.obj = server.rstrip("/")


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), help="Local data folder.")
@click.option("--port", type=int, help="Port to listen on (default 8000).")
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--log-level", default="info", show_default=True)
@click.option(
    "--workers", type=click.IntRange(1, 256), help="Server processes (default: one per core)."
)
def serve(
    data_dir: str | None,
    port: int | None,
    host: str | None,
    config: str | None,
    log_level: str,
    workers: int | None,
) -> None:
    """Start the server (flags override env vars, which override the config file).
    Workers are processes sharing the port; each is a stateless replica of the others."""
    # Start-up makes some 10^5 objects that live as long as the server; looking for
    # garbage among them while importing took about a tenth of the start-up (so the
    # settings, which import pydantic and numpy, are imported here, not with the CLI).
    gc.disable()
    # OpenBLAS starts a thread per core when numpy is imported, which spin for a while:
    # some 60 ms of CPU taken from every start, on a small machine from the start itself.
    # The server does no matrix algebra that more threads would speed up.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Pydantic looks for plugins in the entry points of every installed distribution
    # when it builds its first model (18 ms of CPU, 40-130 ms of a loaded machine's
    # time); the server uses none. An operator who installs one sets the variable to "".
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    import uvicorn

    from app.logs import configure_logging
    from app.server import create_app
    from app.settings import load_settings
    from app.workers import serve_workers

    configure_logging(log_level)
    try:
        settings = load_settings(config, data_dir=data_dir, port=port, host=host, workers=workers)
        app = create_app(settings)
        app.state.services.check()
    except (StoreError, ValueError, OSError) as e:
        click.echo(f"dvid-cloud: cannot start: {_one_line(e)}", err=True)
        sys.exit(2)
    # Collections will skip them from now on (and leave the pages that forked workers
    # share with the supervisor unwritten).
    gc.freeze()
    gc.enable()
    processes = settings.workers or os.cpu_count() or 1
    logging.getLogger("dvid_cloud").info(
        "starting",
        extra={
            "host": settings.host,
            "port": settings.port,
            "stores": list(settings.stores()),
            "workers": processes,
        },
    )
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level,
        "log_config": None,
        "access_log": False,  # app.metrics writes one access line per request, with its id
        "ws": "none",  # no endpoint is a websocket: importing uvicorn's websockets is waste
    }
    if processes == 1:
        uvicorn.run(app, **options)
        return
    # Workers are forked and each builds its own app and store clients (app/workers.py).
    app.state.services.close()
    sys.exit(serve_workers(functools.partial(create_app, settings), processes, options))


def _one_line(error: Exception) -> str:
    """A configuration error as one line (pydantic's are multi-line)."""
    return " ".join(str(error).split())


def _call(ctx: click.Context, method: str, path: str, body: Any = None) -> Any:
    """One request to the server; prints DVID's error text and exits 1 on failure."""
    import httpx  # here, not at the top: ``serve`` does not need it to start

    try:
        response = httpx.request(
            method, ctx.obj + path, content=None if body is None else json.dumps(body), timeout=60
        )
    except httpx.HTTPError as e:
        raise click.ClickException(f"cannot reach {ctx.obj}: {e}") from None
    if response.status_code >= 400:
        raise click.ClickException(f"{response.status_code}: {response.text.strip()}")
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


def _show(value: Any) -> None:
    if isinstance(value, str):
        if value:
            click.echo(value)
        return
    json.dump(value, sys.stdout, indent=2)
    click.echo()


@main.group()
def repos() -> None:
    """Create and list repos."""


@repos.command("new")
@click.option("--alias", default="", help="Short name of the repo.")
@click.option("--description", default="", help="What the repo holds.")
@click.option("--root", default=None, help="Choose the root UUID (32 hex characters).")
@click.pass_context
def repos_new(ctx: click.Context, alias: str, description: str, root: str | None) -> None:
    """Create a repo; prints its root UUID."""
    body = {"alias": alias, "description": description}
    if root:
        body["root"] = root
    click.echo(_call(ctx, "POST", "/api/repos", body)["root"])


@repos.command("info")
@click.pass_context
def repos_info(ctx: click.Context) -> None:
    """Print every repo's JSON."""
    _show(_call(ctx, "GET", "/api/repos/info"))


@main.group()
@click.argument("uuid")
@click.pass_context
def repo(ctx: click.Context, uuid: str) -> None:
    """Commands on the repo holding UUID."""
    ctx.meta["uuid"] = uuid


@repo.command("info")
@click.pass_context
def repo_info(ctx: click.Context) -> None:
    """Print the repo JSON."""
    _show(_call(ctx, "GET", f"/api/repo/{ctx.meta['uuid']}/info"))


@repo.command("instance")
@click.argument("typename")
@click.argument("dataname")
@click.option("-s", "--setting", multiple=True, help="A setting as NAME=VALUE (repeatable).")
@click.pass_context
def repo_instance(
    ctx: click.Context, typename: str, dataname: str, setting: tuple[str, ...]
) -> None:
    """Create a data instance of TYPENAME named DATANAME."""
    body: dict[str, str] = {"typename": typename, "dataname": dataname}
    for item in setting:
        name, eq, value = item.partition("=")
        if not eq:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--setting")
        body[name] = value
    _show(_call(ctx, "POST", f"/api/repo/{ctx.meta['uuid']}/instance", body))


@repo.command("merge")
@click.argument("parents", nargs=-1, required=True)
@click.option("--note", default="")
@click.pass_context
def repo_merge(ctx: click.Context, parents: tuple[str, ...], note: str) -> None:
    """Conflict-free merge of committed PARENTS; prints the new node's UUID."""
    body = {"mergeType": "conflict-free", "parents": list(parents), "note": note}
    click.echo(_call(ctx, "POST", f"/api/repo/{ctx.meta['uuid']}/merge", body)["child"])


@main.group()
@click.argument("uuid")
@click.pass_context
def node(ctx: click.Context, uuid: str) -> None:
    """Commands on one version node."""
    ctx.meta["uuid"] = uuid


@node.command("status")
@click.pass_context
def node_status(ctx: click.Context) -> None:
    """Print whether the node is locked."""
    _show(_call(ctx, "GET", f"/api/node/{ctx.meta['uuid']}/status"))


@node.command("commit")
@click.option("--note", default="", help="Replace the node's note.")
@click.option("--log", "log_lines", multiple=True, help="A log line to append (repeatable).")
@click.pass_context
def node_commit(ctx: click.Context, note: str, log_lines: tuple[str, ...]) -> None:
    """Lock the node forever."""
    body = {"note": note, "log": list(log_lines)}
    click.echo(_call(ctx, "POST", f"/api/node/{ctx.meta['uuid']}/commit", body)["committed"])


@node.command("newversion")
@click.option("--note", default="")
@click.option("--uuid", "child_uuid", default=None, help="Choose the child's UUID.")
@click.pass_context
def node_newversion(ctx: click.Context, note: str, child_uuid: str | None) -> None:
    """Create a child on the same branch; prints its UUID."""
    body = {"note": note} | ({"uuid": child_uuid} if child_uuid else {})
    click.echo(_call(ctx, "POST", f"/api/node/{ctx.meta['uuid']}/newversion", body)["child"])


@node.command("branch")
@click.argument("name")
@click.option("--note", default="")
@click.option("--uuid", "child_uuid", default=None, help="Choose the child's UUID.")
@click.pass_context
def node_branch(ctx: click.Context, name: str, note: str, child_uuid: str | None) -> None:
    """Create a child on a new branch NAME; prints its UUID."""
    body = {"branch": name, "note": note} | ({"uuid": child_uuid} if child_uuid else {})
    click.echo(_call(ctx, "POST", f"/api/node/{ctx.meta['uuid']}/branch", body)["child"])


@node.command("tag")
@click.argument("tag")
@click.option("--note", default="")
@click.pass_context
def node_tag(ctx: click.Context, tag: str, note: str) -> None:
    """Create a committed child named TAG."""
    body = {"tag": tag, "note": note}
    click.echo(_call(ctx, "POST", f"/api/node/{ctx.meta['uuid']}/tag", body)["child"])


@node.command("note")
@click.argument("text", required=False)
@click.pass_context
def node_note(ctx: click.Context, text: str | None) -> None:
    """Print the note, or set it to TEXT."""
    path = f"/api/node/{ctx.meta['uuid']}/note"
    if text is None:
        click.echo(_call(ctx, "GET", path)["note"])
    else:
        _call(ctx, "POST", path, {"note": text})


@node.command("log")
@click.argument("lines", nargs=-1)
@click.pass_context
def node_log(ctx: click.Context, lines: tuple[str, ...]) -> None:
    """Print the log, or append LINES to it."""
    path = f"/api/node/{ctx.meta['uuid']}/log"
    if lines:
        _call(ctx, "POST", path, {"log": list(lines)})
    else:
        for line in _call(ctx, "GET", path)["log"]:
            click.echo(line)


@main.group()
def tiles() -> None:
    """Build imagetile pyramids, on the store itself (no server needed)."""


@tiles.command("generate")
@click.argument("uuid")
@click.argument("dataname")
@click.option("--source", help="The uint8blk to tile (default: the imagetile's Source setting).")
@click.option("--planes", default="xy", show_default=True, help="Planes to tile: xy, xz, yz.")
@click.option("--tile-size", type=int, default=512, show_default=True, help="For new metadata.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Local data folder.")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--log-level", default="info", show_default=True)
def tiles_generate(
    uuid: str,
    dataname: str,
    source: str | None,
    planes: str,
    tile_size: int,
    data_dir: str | None,
    config: str | None,
    log_level: str,
) -> None:
    """Write every tile of imagetile DATANAME at version UUID from a uint8 volume, and
    its metadata if it has none; prints a JSON summary. Safe to rerun after a kill."""
    from app.datatypes.imagetile.generate import prepare
    from app.errors import DVIDError
    from app.logs import configure_logging
    from app.services import Services
    from app.settings import load_settings

    configure_logging(log_level)
    try:
        services = Services.from_settings(load_settings(config, data_dir=data_dir))
        services.check()
        job = prepare(services, uuid, dataname, source, planes, tile_size)
        with click.progressbar(length=job.total, label="tiling slices", file=sys.stderr) as bar:
            written = job.run(bar.update)
    except DVIDError as e:
        raise click.ClickException(e.message) from None
    except (StoreError, ValueError, OSError) as e:
        raise click.ClickException(_one_line(e)) from None
    summary = {"tiles": written, "levels": len(job.metadata.levels), "planes": planes}
    click.echo(json.dumps(summary))


if __name__ == "__main__":
    main()
