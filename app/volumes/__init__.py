"""Shared block machinery for volume datatypes (imageblk family, labelmap): voxel boxes
and chunk grids, per-version chunk ownership, and versioned zarr v3 chunk arrays."""
