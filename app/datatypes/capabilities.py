"""What one datatype may ask of another, without naming it.

A type that reads another instance (annotation reading a segmentation's labels, labelsz
and annotation restricting to a region, labelsz recounting an annotation) binds that
instance with :func:`app.datatypes.bind` and checks it against one of these protocols, so
that any type offering the capability serves, and none is imported by another.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from app.errors import BadRequest
from app.repo import Instance

if TYPE_CHECKING:
    from app.datatypes.base import Data

Vec3 = tuple[int, int, int]


@runtime_checkable
class LabelSource(Protocol):
    """A segmentation whose body labels other instances follow (labelmap)."""

    def label_block_size(self) -> Vec3:
        """Block size of the segmentation (x, y, z): the unit its block events name."""
        ...

    def supervoxels_at(self, points: np.ndarray) -> np.ndarray:
        """uint64 supervoxels at voxel points ``(n, 3)`` x,y,z at the bound version (0
        where nothing is written). A point's supervoxel changes only by a voxel write."""
        ...

    def bodies_of(self, supervoxels: np.ndarray) -> np.ndarray:
        """The body each supervoxel belongs to at the bound version (0 stays 0)."""
        ...


@runtime_checkable
class Region(Protocol):
    """A block-granular region of interest at one version (roi)."""

    def region_block_size(self) -> Vec3:
        """The region's block size (x, y, z)."""
        ...

    def region_blocks(self) -> np.ndarray:
        """Every block coordinate in the region, ``(n, 3)`` int64 x,y,z, sorted by z, y, x."""
        ...

    def region_contains(self, points: np.ndarray) -> np.ndarray:
        """Whether each voxel point ``(n, 3)`` x,y,z lies in a block of the region."""
        ...


@runtime_checkable
class ElementLabels(Protocol):
    """Point annotations grouped by the body they lie in (annotation synced to a label
    source), for counters that recount from scratch (labelsz ``reload``)."""

    def labeled_elements(self) -> Iterator[tuple[int, np.ndarray, list[str]]]:
        """Per label at the bound version: the label, its elements' positions ``(n, 3)``
        and their kinds."""
        ...


def require(instance: Instance, capability: type, what: str) -> None:
    """400 unless ``instance``'s type offers ``capability``."""
    from app.datatypes import get

    if not issubclass(get(instance.typename), capability):
        raise BadRequest(f"instance {instance.name!r} ({instance.typename}) is not {what}")


def region_at(data: Data, spec: str) -> Region:
    """The region named by ``spec`` (``"<name>"`` or ``"<name>,<uuid>"``, DVID's way of
    naming an ROI in the same repo), at that UUID or else at ``data``'s node; 400 if there
    is no such instance or it is not a region."""
    from app.datatypes import bind

    name, _, ref = (part.strip() for part in spec.partition(","))
    instance = data.repo.instances.get(name)
    if not name or instance is None:
        raise BadRequest(f"no ROI instance {name!r} in repo {data.repo.root}")
    require(instance, Region, "an ROI")
    if ref:
        repo, node = data.services.catalog.resolve(ref)
        if repo.root != data.repo.root:
            raise BadRequest(f"UUID {ref!r} is not a version of repo {data.repo.root}")
    else:
        node = data.node
    region = bind(data.services, data.repo, node.uuid, instance)
    assert isinstance(region, Region)
    return region


@runtime_checkable
class BodySupervoxels(Protocol):
    """A segmentation that lists the supervoxels of a body (labelmap, from its label
    index), for data kept per supervoxel and served per body (tarsupervoxels)."""

    def supervoxels_of(self, body: int) -> np.ndarray:
        """The supervoxels of ``body`` at the bound version, sorted uint64; empty if no
        such body exists there. A merge or cleave at that version shows at once."""
        ...


@runtime_checkable
class ImageSource(Protocol):
    """A grayscale image volume that other types render from (imagetile builds its tile
    pyramid from one); which volume types hold uint8 voxels is theirs to say."""

    def image_extents(self) -> tuple[Vec3, Vec3] | None:
        """(offset, size) x,y,z of the voxels written at the bound version, or None."""
        ...

    def image_voxel_size(self) -> tuple[float, float, float]:
        """The voxel size (x, y, z), for resolutions of what is rendered."""
        ...

    def read_uint8(self, offset: Vec3, size: Vec3) -> np.ndarray:
        """The ZYX uint8 voxels of the box at the bound version (background where nothing
        is written); 400 if the volume does not hold uint8 voxels."""
        ...
