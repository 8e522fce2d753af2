"""What a remote volume service (BOSS, BrainMaps) offers a proxy: its metadata and
boxes of voxels at a resolution level, as numpy arrays.

A remote backend knows the remote's wire formats, authentication, request limits and
retries; it does not know which datatype serves its voxels, nor what a label is. Boxes
are half-open, in the voxel coordinates of their level, axes given x, y, z; arrays come
back Z, Y, X (C order) in the remote's voxel type.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

Vec = tuple[int, int, int]


class RemoteError(Exception):
    """A remote request failed. Messages name the remote (never a secret)."""


class RemoteUnavailable(RemoteError):
    """The remote kept failing (5xx, throttling, reset connections) after retries."""


class RemoteTimeout(RemoteError):
    """The remote kept timing out after retries."""


class RemoteAuthFailed(RemoteError):
    """The remote refused the configured credentials (or they could not be loaded)."""


class RemoteNotFound(RemoteError):
    """The remote has no such volume, channel or resolution."""


class RemoteRejected(RemoteError):
    """The remote refused a request as malformed (a 4xx other than auth or not found)."""


@dataclass(frozen=True)
class RemoteLevel:
    """One resolution level of a remote volume.

    ``offset`` and ``size`` bound the voxels that exist at this level (x, y, z, in this
    level's voxels); ``chunk`` is the remote's storage block, the cheapest unit to read.
    """

    offset: Vec
    size: Vec
    voxel_size: tuple[float, float, float]
    chunk: Vec

    @property
    def end(self) -> Vec:
        ox, oy, oz = self.offset
        sx, sy, sz = self.size
        return ox + sx, oy + sy, oz + sz


@dataclass(frozen=True)
class RemoteMetadata:
    """What a proxy instance records at creation. ``url`` is the proxy URL as given
    (``boss://c/e/ch``, ``brainmaps://project:dataset:volume``) and holds no secret.
    ``levels[s]`` is DVID scale ``s``: each level halves the previous one's voxels along
    every axis as far as the remote allows."""

    url: str
    dtype: np.dtype
    voxel_unit: str
    levels: tuple[RemoteLevel, ...]


class RemoteVolume(abc.ABC):
    """One remote volume (a BOSS channel, a BrainMaps volume)."""

    #: The proxy URL, for messages and cache keys.
    url: str

    @abc.abstractmethod
    def metadata(self) -> RemoteMetadata:
        """Read the remote's metadata (network calls; callers keep the answer)."""

    @abc.abstractmethod
    def read(self, level: int, offset: Vec, size: Vec) -> np.ndarray:
        """The voxels of the box ``offset``/``size`` at ``level`` as a ZYX array of the
        remote's dtype. Parts of the box outside the level's extent read 0. Boxes larger
        than the remote's request limit are split, and the pieces fetched concurrently;
        failed requests are retried with backoff before a :class:`RemoteError`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""
