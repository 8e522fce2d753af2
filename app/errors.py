"""Errors a request can end in, with the HTTP status DVID gives for each.

DVID answers almost every failure with 400 and a plain-text message; handlers raise these
and one exception handler in :mod:`app.server` turns them into responses.
"""

from __future__ import annotations


class DVIDError(Exception):
    """A request that cannot be served; ``status`` is the HTTP status to answer with."""

    status: int = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0])


class BadRequest(DVIDError):
    """Malformed or invalid input (400)."""


class NotFound(DVIDError):
    """A datatype-declared miss, such as an absent key (404)."""

    status = 404


class LockedNode(DVIDError):
    """A write to a committed version (400, as DVID answers)."""


class Conflict(DVIDError):
    """A merged node sees different values along different parents (400 at read time)."""


class TooLarge(DVIDError):
    """A request body or requested volume beyond the configured bound (413)."""

    status = 413


class RequestTimeout(DVIDError):
    """A request body that stopped arriving, or arrived too slowly to be a real upload
    (408): a slow client must not hold a server's memory and connections for ever."""

    status = 408


class Unavailable(DVIDError):
    """The store kept failing after retries (503)."""

    status = 503


class Contention(Unavailable):
    """A conditional update kept losing races past its retry budget (503, Retry-After)."""

    retry_after: int = 1


class BadGateway(DVIDError):
    """A remote volume service (the source of a proxy instance) kept failing or refused
    the configured credentials (502)."""

    status = 502


class GatewayTimeout(DVIDError):
    """A remote volume service kept timing out (504)."""

    status = 504
