"""``dvid-cloud diff FROM TO``: what differs between two versions, straight from the
store (no server needed), as a summary per instance or as the API's JSON."""

from __future__ import annotations

import json

import click

from app.settings import load_settings


@click.command()
@click.argument("from_ref", metavar="FROM")
@click.argument("to_ref", metavar="TO")
@click.option("--instance", "names", multiple=True, help="Only this instance (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Local data folder.")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--log-level", default="warning", show_default=True)
def diff(
    from_ref: str,
    to_ref: str,
    names: tuple[str, ...],
    as_json: bool,
    data_dir: str | None,
    config: str | None,
    log_level: str,
) -> None:
    """Summarize what differs between versions FROM and TO (any UUID reference:
    a prefix, ``prefix:branch``, ``:master``) of one repo: keys, blocks, labels,
    mutations, elements and spans per instance, from the per-version indexes."""
    from app import repo_diff
    from app.errors import DVIDError
    from app.logs import configure_logging
    from app.services import Services
    from backends import StoreError

    configure_logging(log_level)
    try:
        services = Services.from_settings(load_settings(config, data_dir=data_dir))
        repo, was = services.catalog.resolve(from_ref)
        now = repo_diff.version_in(services, repo, to_ref)
        for name in names:
            repo.instance(name)  # 400 for an unknown name, before any work
        answer = repo_diff.diff(services, repo, was, now, list(names) or None)
    except DVIDError as e:
        raise click.ClickException(e.message) from None
    except (StoreError, ValueError, OSError) as e:
        raise click.ClickException(str(e).splitlines()[0] if str(e) else repr(e)) from None
    if as_json:
        click.echo(json.dumps(answer))
    else:
        click.echo("\n".join(repo_diff.summary(answer)))
