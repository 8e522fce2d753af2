"""Routes analysed on their first use (app/api/routing.py): a started server has analysed
none of its routes, each is analysed once however many threads want it at once, a
route FastAPI refuses is refused on every use, and the OpenAPI document still lists
every route."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.exceptions import FastAPIError
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.api.routing import LazyRoute
from app.server import create_app
from app.settings import Settings


def lazy_routes(routes: list[Any]) -> list[LazyRoute]:
    """The lazy routes among ``routes``, also those of included routers."""
    found = []
    for route in routes:
        if isinstance(route, LazyRoute):  # (any other attribute read would analyse it)
            found.append(route)
        elif (router := getattr(route, "original_router", None)) is not None:
            found.extend(lazy_routes(router.routes))  # FastAPI's _IncludedRouter
    return found


def analysed(route: LazyRoute) -> bool:
    return "dependant" in vars(route)


def test_a_route_is_analysed_when_it_first_answers() -> None:
    router = APIRouter(prefix="/api", route_class=LazyRoute)

    @router.get("/twice/{n}")
    def twice(n: int, plus: int = 0) -> dict[str, int]:
        return {"twice": 2 * n + plus}

    @router.post("/other")
    def other() -> None:
        raise AssertionError("never called")

    route, untouched = router.routes
    assert isinstance(route, LazyRoute) and isinstance(untouched, LazyRoute)
    assert route.path_format == "/api/twice/{n}" and route.methods == {"GET"}
    assert not analysed(route)
    app = FastAPI()
    app.router.routes.extend(router.routes)  # as the server adds its routers' routes
    with TestClient(app) as client:
        assert client.get("/api/twice/4", params={"plus": 1}).json() == {"twice": 9}
        assert client.get("/api/twice/x").status_code == 422  # validated as analysed
        assert client.get("/api/other").status_code == 405  # routed, not analysed
    assert analysed(route)
    assert not analysed(untouched)
    with pytest.raises(AttributeError):
        route.no_such_attribute  # type: ignore[attr-defined]  # noqa: B018


def test_threads_wanting_a_route_at_once_share_one_analysis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    router = APIRouter(route_class=LazyRoute)

    @router.get("/x")
    def x(a: int = 0) -> None: ...

    (route,) = router.routes
    analyses = []
    analyse = APIRoute.__init__

    def slow(self: APIRoute, *args: Any, **kwargs: Any) -> None:
        analyses.append(self)
        time.sleep(0.2)  # the others arrive while it runs
        analyse(self, *args, **kwargs)

    monkeypatch.setattr(APIRoute, "__init__", slow)
    seen: list[object] = []
    start = threading.Barrier(8)

    def want() -> None:
        start.wait()
        seen.append(route.dependant)  # type: ignore[attr-defined]

    threads = [threading.Thread(target=want) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert analyses == [route]
    assert len(seen) == 8 and all(d is seen[0] for d in seen)


def test_a_route_fastapi_refuses_is_refused_on_every_use() -> None:
    class NotAField:
        pass

    router = APIRouter(route_class=LazyRoute)

    @router.get("/bad", response_model=NotAField)
    def bad() -> None: ...

    (route,) = router.routes
    for attribute in ("dependant", "app", "dependant"):
        with pytest.raises(FastAPIError):
            getattr(route, attribute)


#: Run in a fresh interpreter: the server's routers are module-level, so in a test process
#: that has served them before, their routes are analysed already.
STARTED_SERVER = """
import sys
from fastapi.testclient import TestClient
from app.server import create_app
from app.settings import Settings
from tests.test_lazy_routes import analysed, lazy_routes
app = create_app(Settings(data_dir=sys.argv[1]))
with TestClient(app):
    served = lazy_routes(app.routes)
    print(len(served), sum(analysed(route) for route in served))
"""


def test_a_started_server_has_analysed_no_route(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", STARTED_SERVER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )
    assert run.returncode == 0, run.stderr
    served, analysed_already = map(int, run.stdout.split())
    assert served > 40
    assert analysed_already == 0


def test_the_openapi_document_lists_every_lazy_route(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=str(tmp_path)))
    served = lazy_routes(app.routes)
    assert len(served) > 40
    with TestClient(app) as client:
        assert client.get("/api/heartbeat").status_code == 200
        schema = client.get("/openapi.json").json()
    documented = {
        (path, method.upper()) for path, item in schema["paths"].items() for method in item
    }
    for route in served:
        if route.include_in_schema:
            assert {(route.path_format, m) for m in route.methods} <= documented, route.path
