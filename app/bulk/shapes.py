"""A body's voxels as a surface mesh (zmesh) and a skeleton (kimimaro), and the bytes
they are kept in.

Coordinates: voxel ``i`` of a scale spans ``[i, i + 1)`` voxels, ``[i * r, (i + 1) * r)``
nanometers with ``r`` the scale's voxel size, as neuroglancer sees voxels. So a mesh of a
box of voxels has exactly the box's bounds in nanometers, and a skeleton node at the
centre of voxel ``i`` is at ``(i + 0.5) * r``.

* Meshes: marching cubes on the mask with one voxel of background around it (zmesh,
  voxel-centred), simplified by zmesh to about 1/:data:`REDUCTION_FACTOR` of the
  triangles with at most one voxel of deviation. Kept as neuroglancer's legacy mesh
  format, which is both DVID's ``.ngmesh`` and a precomputed legacy mesh fragment:
  uint32 vertex count, float32 x, y, z per vertex in nanometers, then uint32 triangle
  vertex indices to the end (no triangle count: readers take the rest), little-endian.
* Skeletons: kimimaro's TEASAR with its default parameters (physical units), keeping
  every component (no dust threshold: the body was asked for). SWC text in scale-0 voxel
  coordinates as DVID and NeuTu keep them (a node at voxel ``i``'s centre is written
  ``i``; radii in voxels of x), one tree per connected component, type 0; or
  neuroglancer's precomputed skeleton (nanometers, with a float32 ``radius`` attribute).

The same mask gives the same bytes wherever it is computed: the mask is cropped to its
voxels first, so how much background surrounds it does not matter.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

import numpy as np

from app.volumes.geometry import Vec

#: zmesh simplification: aim at 1/10 of marching cubes' triangles.
REDUCTION_FACTOR = 10
#: How the precomputed skeletons' ``info`` describes their files.
SKELETON_INFO = {
    "@type": "neuroglancer_skeletons",
    "transform": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
    "vertex_attributes": [{"id": "radius", "data_type": "float32", "num_components": 1}],
}
MESH_INFO = {"@type": "neuroglancer_legacy_mesh"}

Nanometers = tuple[float, float, float]


@dataclass(frozen=True)
class Mask:
    """A body's voxels at one scale: ZYX booleans, the voxel (of that scale) at index
    ``[0, 0, 0]``, x, y, z, and the scale's voxel size in nanometers."""

    voxels: np.ndarray
    origin: Vec
    resolution: Nanometers

    def cropped(self) -> Mask:
        """The smallest box holding every voxel, with one voxel of background around it
        (marching cubes closes the surface there; the skeleton's boundary is the body's)."""
        v = self.voxels
        zs, ys, xs = (np.flatnonzero(v.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
        if not zs.size:
            raise ValueError("an empty mask has no shape")
        inner = v[zs[0] : zs[-1] + 1, ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
        ox, oy, oz = self.origin
        origin = (ox + int(xs[0]) - 1, oy + int(ys[0]) - 1, oz + int(zs[0]) - 1)
        return Mask(np.pad(inner, 1), origin, self.resolution)

    def xyz(self) -> np.ndarray:
        """The voxels as the uint8 x, y, z (Fortran-ordered) array zmesh and kimimaro take."""
        return np.asfortranarray(self.voxels.astype(np.uint8).transpose(2, 1, 0))

    def corner_nm(self) -> np.ndarray:
        """Nanometers of the corner of voxel ``[0, 0, 0]``."""
        return np.array(self.origin, dtype=np.float64) * np.array(self.resolution)


@dataclass(frozen=True)
class Mesh:
    """Triangles: vertices ``(n, 3)`` float32 nanometers, faces ``(m, 3)`` uint32."""

    vertices: np.ndarray
    faces: np.ndarray

    def ngmesh(self) -> bytes:
        """Neuroglancer's legacy mesh format (DVID ``.ngmesh``, precomputed fragment)."""
        return (
            struct.pack("<I", len(self.vertices))
            + self.vertices.astype("<f4").tobytes()
            + self.faces.astype("<u4").tobytes()
        )


@dataclass(frozen=True)
class Skeleton:
    """Nodes ``(n, 3)`` float32 nanometers, edges ``(m, 2)`` uint32, radii ``(n,)``
    float32 nanometers."""

    vertices: np.ndarray
    edges: np.ndarray
    radii: np.ndarray

    def swc(self, voxel_size: Nanometers) -> str:
        """SWC text in scale-0 voxels of ``voxel_size`` nanometers: each connected
        component a tree rooted at its lowest-numbered node, nodes numbered breadth
        first so that a parent precedes its children."""
        n = len(self.vertices)
        neighbours: list[list[int]] = [[] for _ in range(n)]
        for a, b in self.edges.tolist():
            neighbours[a].append(b)
            neighbours[b].append(a)
        seen = [False] * n
        parent = [-1] * n
        number = [0] * n
        order: list[int] = []
        for root in range(n):
            if seen[root]:
                continue
            seen[root] = True
            queue = deque([root])
            while queue:
                node = queue.popleft()
                order.append(node)
                number[node] = len(order)
                for other in neighbours[node]:
                    if not seen[other]:
                        seen[other] = True
                        parent[other] = node
                        queue.append(other)
        size = np.array(voxel_size, dtype=np.float64)
        voxels = self.vertices.astype(np.float64) / size - 0.5
        radii = self.radii.astype(np.float64) / size[0]
        lines = ["# dvid-cloud skeleton (kimimaro): scale-0 voxel coordinates"]
        for node in order:
            x, y, z = (_number(v) for v in voxels[node])
            up = number[parent[node]] if parent[node] >= 0 else -1
            lines.append(f"{number[node]} 0 {x} {y} {z} {_number(radii[node])} {up}")
        return "\n".join(lines) + "\n"

    def precomputed(self) -> bytes:
        """Neuroglancer's precomputed skeleton, with the attributes of SKELETON_INFO."""
        return (
            struct.pack("<II", len(self.vertices), len(self.edges))
            + self.vertices.astype("<f4").tobytes()
            + self.edges.astype("<u4").tobytes()
            + self.radii.astype("<f4").tobytes()
        )


def _number(value: float) -> str:
    """At most three decimals, no trailing zeros (``12``, ``12.5``)."""
    text = np.format_float_positional(round(float(value), 3), precision=3, trim="-")
    return "0" if text == "-0" else text


def mesh(mask: Mask) -> Mesh:
    """The body's surface, simplified (module docstring)."""
    import zmesh

    tight = mask.cropped()
    mesher = zmesh.Mesher(tight.resolution)
    mesher.mesh(tight.xyz(), close=False)
    found = mesher.get(
        1, normals=False, reduction_factor=REDUCTION_FACTOR, max_error=None, voxel_centered=True
    )
    vertices = found.vertices.astype(np.float64) + tight.corner_nm()
    return Mesh(vertices.astype(np.float32), np.asarray(found.faces, dtype=np.uint32))


def skeleton(mask: Mask) -> Skeleton | None:
    """The body's skeleton (module docstring); None if kimimaro finds none."""
    import kimimaro

    tight = mask.cropped()
    found = kimimaro.skeletonize(
        tight.xyz(),
        anisotropy=tight.resolution,
        dust_threshold=0,
        progress=False,
        parallel=1,
    ).get(1)
    if found is None or not len(found.vertices):
        return None
    # kimimaro puts voxel i's centre at i * resolution.
    centre = tight.corner_nm() + 0.5 * np.array(tight.resolution)
    vertices = found.vertices.astype(np.float64) + centre
    return Skeleton(
        vertices.astype(np.float32),
        np.asarray(found.edges, dtype=np.uint32).reshape(-1, 2),
        np.asarray(found.radii, dtype=np.float32),
    )
