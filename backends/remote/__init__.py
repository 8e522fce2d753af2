"""Remote volume services behind proxy instances: ``boss://`` and ``brainmaps://``.

:func:`open_remote` turns a proxy URL into a :class:`RemoteVolume` using the server's
``[proxy.*]`` configuration; nothing about the credentials is kept with the instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.remote.base import (
    RemoteAuthFailed,
    RemoteError,
    RemoteLevel,
    RemoteMetadata,
    RemoteNotFound,
    RemoteRejected,
    RemoteTimeout,
    RemoteUnavailable,
    RemoteVolume,
)

BOSS_ENDPOINT = "https://api.bossdb.io"
BRAINMAPS_ENDPOINT = "https://brainmaps.googleapis.com"


@dataclass(frozen=True)
class BossConfig:
    """``[proxy.boss]``: the API root and the token (``Authorization: Token <token>``)."""

    endpoint: str = BOSS_ENDPOINT
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class BrainMapsConfig:
    """``[proxy.brainmaps]``: the API root (requests go to ``{endpoint}/v1/...``) and a
    service-account key file; without one, Google application default credentials."""

    endpoint: str = BRAINMAPS_ENDPOINT
    credentials: str | None = None


@dataclass(frozen=True)
class ProxyConfig:
    """Both remotes, and how long to wait for them: ``timeout`` seconds per request and
    ``attempts`` tries (with backoff) before a request fails."""

    boss: BossConfig = BossConfig()
    brainmaps: BrainMapsConfig = BrainMapsConfig()
    timeout: float = 30.0
    attempts: int = 5


SCHEMES = ("boss://", "brainmaps://")


def open_remote(url: str, config: ProxyConfig) -> RemoteVolume:
    """The remote volume a proxy URL names. A malformed URL is a ValueError whose
    message says what is expected."""
    if url.startswith("boss://"):
        from backends.remote.boss import BossVolume

        return BossVolume.from_url(
            url, config.boss, timeout=config.timeout, attempts=config.attempts
        )
    if url.startswith("brainmaps://"):
        from backends.remote.brainmaps import BrainMapsVolume

        return BrainMapsVolume.from_url(
            url, config.brainmaps, timeout=config.timeout, attempts=config.attempts
        )
    raise ValueError(
        f"unsupported proxy {url!r}: use boss://<collection>/<experiment>/<channel> "
        "or brainmaps://<project>:<dataset>:<volume>"
    )


__all__ = [
    "BOSS_ENDPOINT",
    "BRAINMAPS_ENDPOINT",
    "BossConfig",
    "BrainMapsConfig",
    "ProxyConfig",
    "RemoteAuthFailed",
    "RemoteError",
    "RemoteLevel",
    "RemoteMetadata",
    "RemoteNotFound",
    "RemoteRejected",
    "RemoteTimeout",
    "RemoteUnavailable",
    "RemoteVolume",
    "open_remote",
]
