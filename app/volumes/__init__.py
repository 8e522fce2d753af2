"""What every volume datatype (imageblk family, labelmap) shares: voxel boxes and chunk
grids (:mod:`.geometry`), per-version chunk ownership (:mod:`.ownership`), versioned zarr v3
chunk arrays (:mod:`.arrays`) and their object keys (:mod:`.keys`), the :class:`VolumeData`
base class (:mod:`.base`), request helpers (:mod:`.requests`), image encodings
(:mod:`.images`), the shared endpoints (:mod:`.routes`) and the neuroglancer precomputed view
of any volume (:mod:`.precomputed`)."""
