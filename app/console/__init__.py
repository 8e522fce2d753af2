"""The web console: static files under ``/console/``, ``/`` redirecting there, and the
neuroglancer viewer the console links to.

The console is plain JavaScript modules, CSS and HTML in ``static/`` (no build step), so
the server serves it as files. Its "open in neuroglancer" links need a viewer: the one of
the ``neuroglancer_url`` setting, else the built client the PyPI ``neuroglancer`` package
ships, served here under ``/neuroglancer/v/console/``. That client only starts under a
``/v/<token>/`` path and asks ``POST <prefix>/credentials/<token>`` before it loads DVID
layers, so that answer is served too (neuroglancer's own Python server does the same).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from app.api.routing import LazyRoute
from app.settings import Settings

STATIC = Path(__file__).parent / "static"
VIEWER_TOKEN = "console"
VIEWER_PREFIX = "/neuroglancer"
#: Paths that serve no data and so need no credentials (see app/auth.py).
PUBLIC_PATHS = frozenset({"/", "/console", "/console/config.json"})
PUBLIC_PREFIXES = ("/console/", f"{VIEWER_PREFIX}/")


def neuroglancer_client() -> Path | None:
    """The built viewer of the PyPI ``neuroglancer`` package, when it is installed. Found
    without importing the package, whose tornado server took about 50 ms of start-up."""
    spec = importlib.util.find_spec("neuroglancer")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "static" / "client"
    return path if (path / "index.html").is_file() else None


def viewer_base(settings: Settings, client: Path | None) -> str | None:
    """Where the console sends neuroglancer links (the state goes after ``#!``)."""
    if settings.neuroglancer_url:
        return settings.neuroglancer_url
    return f"{VIEWER_PREFIX}/v/{VIEWER_TOKEN}/" if client is not None else None


def install_console(app: FastAPI, settings: Settings) -> None:
    """Serve the console and, if no viewer URL is configured, the packaged viewer."""
    client = None if settings.neuroglancer_url else neuroglancer_client()
    config = {"neuroglancer": viewer_base(settings, client)}
    router = APIRouter(include_in_schema=False, route_class=LazyRoute)

    @router.get("/")
    def root() -> Response:
        return RedirectResponse("/console/")

    @router.get("/console")
    def console_slash() -> Response:
        return RedirectResponse("/console/")

    @router.get("/console/config.json")
    def console_config() -> Response:
        return JSONResponse(config)

    if client is not None:

        @router.post(f"{VIEWER_PREFIX}/credentials/{VIEWER_TOKEN}")
        def viewer_credentials() -> Response:
            return JSONResponse({"generation": 1, "credentials": {}})

        app.mount(
            f"{VIEWER_PREFIX}/v/{VIEWER_TOKEN}",
            StaticFiles(directory=client, html=True),
            name="neuroglancer",
        )
    app.include_router(router)
    app.mount("/console", StaticFiles(directory=STATIC, html=True), name="console")
