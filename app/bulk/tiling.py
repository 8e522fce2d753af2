"""Cutting a region into the boxes bulk tasks work on.

Boxes are cells of whole blocks, so no two tasks write the same block (each task's
transaction replaces its blocks whole, and tasks never wait on each other's data). Cells
grow along x first, then y, then z, up to a voxel budget: the sources read whole rows
and planes fastest (a TIFF slice is decoded whole), and a deep cell would hold more
slices than the budget allows.
"""

from __future__ import annotations

import math

from app.volumes.geometry import BlockGrid, Box, Vec


def cells(region: Box, grid: BlockGrid, budget_voxels: int, unit: Vec = (1, 1, 1)) -> list[Box]:
    """``region`` cut into boxes of at most ``budget_voxels`` (but at least ``unit``
    blocks), z-major. Cell sides are multiples of ``unit`` blocks from a ``unit``-aligned
    block, so every cell boundary inside the region lies on a multiple of ``unit`` blocks
    (a pyramid of L levels needs ``2^L`` voxels: its levels then stay apart too)."""
    lo, hi = grid.block_range(region)
    start = [lo[a] // unit[a] * unit[a] for a in range(3)]
    size = list(unit)
    for axis in range(3):
        across = math.prod(size[a] * grid.block_size[a] for a in range(3) if a != axis)
        fits = budget_voxels // (across * grid.block_size[axis]) // unit[axis] * unit[axis]
        needed = -(-(hi[axis] - start[axis]) // unit[axis]) * unit[axis]
        size[axis] = max(unit[axis], min(fits, needed))
    boxes = []
    for z in range(start[2], hi[2], size[2]):
        for y in range(start[1], hi[1], size[1]):
            for x in range(start[0], hi[0], size[0]):
                cell = grid.block_box((x, y, z))
                corner = grid.block_box((x + size[0] - 1, y + size[1] - 1, z + size[2] - 1))
                part = cell.union(corner).intersect(region)
                if part is not None:
                    boxes.append(part)
    return boxes


def pyramid_unit(grid: BlockGrid, levels: int) -> Vec:
    """Blocks per cell side such that cell boundaries fall on multiples of ``2^levels``
    voxels (then each level's boxes of two cells never share a voxel)."""
    step = 2**levels
    x, y, z = (max(1, step // math.gcd(step, b)) for b in grid.block_size)
    return x, y, z
