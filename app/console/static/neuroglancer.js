// The neuroglancer state that shows one image or label instance at one version: a
// dvid:// source, its voxel size, and the
// position at the middle of its extents. The state goes after "#!" in the viewer URL.

const IMAGE_TYPES = new Set(["uint8blk", "uint16blk", "uint32blk", "uint64blk", "float32blk",
  "rgba8blk", "googlevoxels"]);
const LABEL_TYPES = new Set(["labelmap", "labelarray", "labelblk"]);

export function layerType(typename) {
  if (IMAGE_TYPES.has(typename)) return "image";
  if (LABEL_TYPES.has(typename)) return "segmentation";
  return null;
}

const UNITS = { nanometers: 1e-9, nanometer: 1e-9, nm: 1e-9, micrometers: 1e-6,
  microns: 1e-6, um: 1e-6, millimeters: 1e-3, mm: 1e-3, meters: 1 };

export function viewerState(origin, uuid, name, typename, info) {
  const ext = info.Extended || {};
  const voxel = ext.VoxelSize || [8, 8, 8];
  const units = ext.VoxelUnits || ["nanometers", "nanometers", "nanometers"];
  const extents = info.Extents || ext;
  const lo = extents.MinPoint || [0, 0, 0];
  const hi = extents.MaxPoint || [0, 0, 0];
  const dimensions = {};
  ["x", "y", "z"].forEach((axis, i) => {
    dimensions[axis] = [voxel[i] * (UNITS[units[i]] ?? 1e-9), "m"];
  });
  const source = `dvid://${origin}/${uuid}/${name}`;
  return {
    dimensions,
    position: [0, 1, 2].map((i) => (lo[i] + hi[i] + 1) / 2),
    crossSectionScale: 1,
    layout: "4panel",
    layers: [{ type: layerType(typename), name, source }],
    selectedLayer: { layer: name, visible: true },
  };
}

export function viewerLink(base, state) {
  return `${base}#!${encodeURIComponent(JSON.stringify(state))}`;
}
