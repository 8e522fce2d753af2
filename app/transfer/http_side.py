"""The remote end of a transfer: a dvid-cloud server's transfer endpoints over HTTP, for
the ``push`` and ``pull`` commands (a module apart from :mod:`app.transfer.sides` so that
servers, which never use it, start without importing httpx)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from app.errors import BadGateway, BadRequest, DVIDError, GatewayTimeout, NotFound, Unavailable
from app.transfer.publish import PublishRequest
from app.transfer.sides import Located, Side


class HttpSide(Side):
    """A dvid-cloud server's transfer endpoints (:mod:`app.api.transfer`). ``token`` is a
    JWT (sent as ``Authorization: Bearer``) or the server's admin token (sent as
    ``admintoken``), as the server's auth reads them (app/auth.py)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 120) -> None:
        self.where = url.rstrip("/")
        headers: dict[str, str] = {}
        params: dict[str, str] = {}
        if token and token.count(".") == 2:
            headers["Authorization"] = f"Bearer {token}"
        elif token:
            params["admintoken"] = token
        self.client = httpx.Client(
            base_url=self.where, headers=headers, params=params, timeout=timeout
        )
        #: The version located here: a source's objects are read under its repo (read
        #: access to that repo suffices); a destination's are listed by an admin call.
        self.ref: str | None = None

    def _call(
        self, method: str, path: str, *, params: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        try:
            response = self.client.request(method, path, params=params, **kw)
        except httpx.TimeoutException as e:
            raise GatewayTimeout(f"{self.where} did not answer in time: {e}") from None
        except httpx.HTTPError as e:
            raise BadGateway(f"cannot reach {self.where}: {e}") from None
        if response.status_code >= 400:
            text = " ".join(response.text.split())[:300]
            error: type[DVIDError] = BadRequest
            if response.status_code == 404:
                error = NotFound
            elif response.status_code >= 500:
                error = Unavailable if response.status_code == 503 else BadGateway
            raise error(f"{self.where}: {response.status_code}: {text}", response.status_code)
        return response

    def locate(self, ref: str) -> Located:
        body = self._call("GET", f"/api/repo/{ref}/transfer/repo").json()
        self.ref = str(body["node"])
        return Located(body["repo"], body["node"], int(body["mutation_ids"]))

    def repo(self, root: str) -> dict[str, Any] | None:
        body = self._call("POST", "/api/transfer/repo", params={"root": root}).json()
        return body.get("repo")

    def owners(self, nodes: list[str]) -> dict[str, str]:
        answer = self._call("POST", "/api/transfer/owners", content=orjson.dumps(nodes))
        return dict(answer.json())

    def list(self, store: str, prefix: str) -> Iterator[tuple[str, int]]:
        params = {"store": store, "prefix": prefix}
        if self.ref is None:
            answer = self._call("POST", "/api/transfer/list", params=params)
        else:
            answer = self._call("GET", f"/api/repo/{self.ref}/transfer/objects", params=params)
        for line in answer.text.splitlines():
            key, _, size = line.rpartition(" ")
            yield key, int(size)

    def get(self, store: str, key: str) -> bytes:
        if self.ref is None:
            raise BadRequest(f"{self.where} is not the source of this transfer")
        params = {"store": store, "key": key}
        return self._call("GET", f"/api/repo/{self.ref}/transfer/object", params=params).content

    def put(self, store: str, key: str, data: bytes) -> None:
        self._call("PUT", "/api/transfer/object", params={"store": store, "key": key}, content=data)

    def merge(self, store: str, key: str, typename: str, data: bytes) -> None:
        params = {"store": store, "key": key, "typename": typename}
        self._call("POST", "/api/transfer/merge", params=params, content=data)

    def publish(self, request: PublishRequest) -> dict[str, Any]:
        body = orjson.dumps(request.to_json())
        return dict(self._call("POST", "/api/transfer/publish", content=body).json())

    def close(self) -> None:
        self.client.close()
