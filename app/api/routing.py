"""Routes analysed on first use.

FastAPI analyses a route when it is declared: every parameter of the endpoint and of its
dependencies becomes a pydantic field, about half a millisecond each. The server declares
45 routes of its own and each datatype 10 to 40, of which a request uses one: analysing
the server's took some 25 ms of every start, and uint8blk's some 25-45 ms of the first
chunk read. Routers made with ``route_class=LazyRoute`` keep what routing needs (the
path's pattern, the methods, the name) and analyse a route when anything else of it is
first read: when it handles its first request, or when the OpenAPI document is made
(which reads every route, so a route FastAPI would refuse still fails the OpenAPI tests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import compile_path, get_name

#: Held while a route is analysed: a second thread wanting the same route waits for it
#: (re-entrant: the analysis reads attributes it has not set yet, which are missing).
_ANALYSING = threading.RLock()


class LazyRoute(APIRoute):
    """An :class:`APIRoute` whose analysis (``APIRoute.__init__``) waits until one of its
    analysed attributes (``dependant``, ``app``, ``response_field``...) is first read."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        # What starlette's Route.matches, FastAPI's route selection and the metrics'
        # route templates read, as APIRoute.__init__ sets them.
        self.path = path
        self.endpoint = endpoint
        name = options.get("name")
        self.name = get_name(endpoint) if name is None else name
        methods = options.get("methods")
        self.methods = {method.upper() for method in (["GET"] if methods is None else methods)}
        self.path_regex, self.path_format, self.param_convertors = compile_path(path)
        self.include_in_schema = options.get("include_in_schema", True)
        self._pending: tuple[str, Callable[..., Any], dict[str, Any]] | None = (
            path,
            endpoint,
            options,
        )

    def __getattr__(self, name: str) -> Any:
        """Only called for an attribute not set: analyse the route (once), then look
        again; an attribute the analysis does not set is missing as on any route."""
        with _ANALYSING:
            pending = self.__dict__.get("_pending")
            if pending is not None:
                before = dict(self.__dict__)
                self._pending = None  # an attribute read during the analysis is missing
                path, endpoint, options = pending
                try:
                    APIRoute.__init__(self, path, endpoint, **options)
                except BaseException:
                    # As it was, so that the next read fails the same way, not with
                    # what the analysis had set before it failed.
                    self.__dict__.clear()
                    self.__dict__.update(before)
                    raise
        return object.__getattribute__(self, name)
