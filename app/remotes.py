"""The remote volumes this process reads for proxy instances, and what it keeps of them.

One :class:`RemoteVolume` per proxy URL is opened on first use and shared by every
request (its connection pool and token are reused). Remote voxels are treated as
immutable: blocks read once are kept in a byte-bounded LRU
(``proxy_cache_bytes``), keyed by URL, level and block.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from app.cache import LRUCache
from app.errors import BadGateway, BadRequest, DVIDError, GatewayTimeout
from backends.remote import (
    ProxyConfig,
    RemoteAuthFailed,
    RemoteError,
    RemoteNotFound,
    RemoteRejected,
    RemoteTimeout,
    RemoteVolume,
    open_remote,
)


class Remotes:
    """Open remotes by proxy URL, plus the voxel cache they share."""

    def __init__(self, config: ProxyConfig, cache_bytes: int) -> None:
        self.config = config
        self.cache: LRUCache[np.ndarray] = LRUCache(cache_bytes, weigh=lambda a: a.nbytes)
        #: Runs the reads of scattered blocks concurrently (each may be split further
        #: by its remote's own pool).
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="proxy")
        self._open: dict[str, RemoteVolume] = {}
        self._lock = threading.Lock()

    def open(self, url: str) -> RemoteVolume:
        """The remote ``url`` names (ValueError for a malformed URL)."""
        with self._lock:
            remote = self._open.get(url)
            if remote is None:
                remote = self._open[url] = open_remote(url, self.config)
            return remote

    def close(self) -> None:
        with self._lock:
            remotes, self._open = list(self._open.values()), {}
        for remote in remotes:
            remote.close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def remote_failure(error: RemoteError) -> DVIDError:
    """How a failed remote request is answered: 504 when it kept timing out, else 502
    (refused credentials included: the client can do nothing about the server's). The
    message names the remote and never a secret."""
    if isinstance(error, RemoteTimeout):
        return GatewayTimeout(str(error))
    return BadGateway(str(error))


@contextlib.contextmanager
def creating_from(what: str) -> Iterator[None]:
    """While an instance reads its remote at creation: a remote with no such volume, one
    that refuses the server's credentials or the request, or a malformed remote URL is
    the creator's problem (400, naming ``what``); an unreachable one stays 502/504."""
    try:
        yield
    except ValueError as e:
        raise BadRequest(str(e)) from None
    except (RemoteNotFound, RemoteAuthFailed, RemoteRejected) as e:
        raise BadRequest(f"cannot {what}: {e}") from None
