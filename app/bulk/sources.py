"""Volumes to ingest, opened by name as one kind of lazily read ZYX array.

A :class:`Source` is small and picklable (paths, a tensorstore spec, shape and dtype), so
the planner opens and checks it once and ships it to every worker, which reads only its
own region; the file handles behind it are opened once per process (:func:`_opened`).

Recognised, in this order:

* ``*.npy``: read through ``np.load(mmap_mode="r")``;
* a ``.tif``/``.tiff`` file: a multi-page TIFF, one page per z;
* a glob (``slices/*.tif``), or a folder holding TIFF files and no array metadata: a
  stack of 2-D TIFFs, one per z, in natural name order (``z2`` before ``z10``);
* anything else, a folder or a tensorstore URL (``gs://``, ``s3://``, ``https://``,
  optionally behind neuroglancer's ``zarr://``, ``zarr2://``, ``zarr3://`` or
  ``precomputed://``): a zarr v3, zarr v2 or neuroglancer precomputed volume (scale 0,
  one channel), opened through tensorstore.

Arrays are taken as ZYX (C order), except precomputed volumes (XYZ plus a channel) and
zarr v3 arrays whose ``dimension_names`` are x, y and z in some order, which are
reordered. Leading dimensions of size 1 are dropped and a 2-D array is one z slice.
"""

from __future__ import annotations

import functools
import glob
import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.volumes.geometry import Vec

#: File name endings of TIFF files.
TIFF_SUFFIXES = (".tif", ".tiff")
#: tensorstore drivers tried, in order, on a folder or URL that is not a TIFF stack.
ARRAY_DRIVERS: tuple[str, ...] = ("zarr3", "zarr", "neuroglancer_precomputed")
#: Neuroglancer's data-source prefixes and the drivers they allow.
URL_PREFIXES: dict[str, tuple[str, ...]] = {
    "zarr://": ("zarr3", "zarr"),
    "zarr2://": ("zarr",),
    "zarr3://": ("zarr3",),
    "precomputed://": ("neuroglancer_precomputed",),
}


class SourceError(ValueError):
    """The source cannot be opened or is not a 3-D volume (one line, for the user)."""


@dataclass(frozen=True)
class Source(ABC):
    """A ZYX volume read region by region; ``origin`` (x, y, z) is where its first voxel
    sits in its own coordinates (a precomputed ``voxel_offset``, else 0)."""

    name: str
    shape: Vec
    dtype: str
    origin: Vec

    @property
    def size(self) -> Vec:
        """The extent as x, y, z."""
        z, y, x = self.shape
        return x, y, z

    def read(self, lo: Vec, hi: Vec) -> np.ndarray:
        """Voxels ``lo`` to ``hi`` (z, y, x indices from 0, end exclusive) as a new array."""
        if any(a < 0 or a >= b or b > n for a, b, n in zip(lo, hi, self.shape, strict=True)):
            raise SourceError(f"region {lo}..{hi} is outside {self.name} of shape {self.shape}")
        return np.ascontiguousarray(self._read(lo, hi))

    @abstractmethod
    def _read(self, lo: Vec, hi: Vec) -> np.ndarray: ...


@dataclass(frozen=True)
class NpySource(Source):
    def _read(self, lo: Vec, hi: Vec) -> np.ndarray:
        array = _as_3d(_opened("npy", self.name))
        return array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]


@dataclass(frozen=True)
class TiffPages(Source):
    """A multi-page TIFF: page ``z`` is slice ``z``."""

    def _read(self, lo: Vec, hi: Vec) -> np.ndarray:
        tif = _opened("tiff", self.name)
        pages = tif.asarray(key=range(lo[0], hi[0]), series=0)
        stacked = pages.reshape(hi[0] - lo[0], self.shape[1], self.shape[2])
        return stacked[:, lo[1] : hi[1], lo[2] : hi[2]]


@dataclass(frozen=True)
class TiffStack(Source):
    """2-D TIFF files, one per z."""

    files: tuple[str, ...] = ()

    def _read(self, lo: Vec, hi: Vec) -> np.ndarray:
        import tifffile

        files = self.files[lo[0] : hi[0]]
        return np.stack([tifffile.imread(f)[lo[1] : hi[1], lo[2] : hi[2]] for f in files])


@dataclass(frozen=True)
class TensorstoreSource(Source):
    """A zarr or precomputed array; ``spec`` (JSON) is the ZYX view, origin at 0."""

    spec: str = ""

    def _read(self, lo: Vec, hi: Vec) -> np.ndarray:
        view = _opened("tensorstore", self.spec)
        return view[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].read().result()


@functools.lru_cache(maxsize=8)
def _opened(kind: str, key: str) -> Any:
    """The handle behind a source, opened once per process (workers read many regions)."""
    if kind == "npy":
        return np.load(key, mmap_mode="r", allow_pickle=False)
    if kind == "tiff":
        import tifffile

        return tifffile.TiffFile(key)
    import tensorstore as ts

    return ts.open(json.loads(key), read=True).result()


def _as_3d(array: np.ndarray) -> np.ndarray:
    return array.reshape(_zyx(array.shape, "the array"))


def _zyx(shape: tuple[int, ...], what: str) -> Vec:
    """``shape`` without leading 1s, as z, y, x (a 2-D shape is one slice)."""
    dims = list(shape)
    while len(dims) > 3 and dims[0] == 1:
        dims.pop(0)
    if len(dims) == 2:
        dims.insert(0, 1)
    if len(dims) != 3:
        raise SourceError(f"{what} has shape {tuple(shape)}: a 3-D volume is needed")
    if 0 in dims:
        raise SourceError(f"{what} is empty (shape {tuple(shape)})")
    return dims[0], dims[1], dims[2]


def open_source(name: str) -> Source:
    """The source ``name`` names (see the module docstring), checked to be a 3-D volume;
    :class:`SourceError` naming what is wrong otherwise."""
    if name.endswith(".npy"):
        return _npy(name)
    if name.lower().endswith(TIFF_SUFFIXES) and not glob.has_magic(name):
        return _tiff_pages(name)
    if glob.has_magic(name):
        return _tiff_stack(name, sorted(glob.glob(name), key=_natural))
    if "://" not in name:
        folder = Path(name)
        if not folder.exists():
            raise SourceError(f"no such file or folder: {name}")
        if not folder.is_dir():
            raise SourceError(f"{name} is not a .npy or TIFF file, nor a folder")
        if not any((folder / meta).exists() for meta in ("zarr.json", ".zarray", "info")):
            tiffs = [str(p) for p in folder.iterdir() if p.name.lower().endswith(TIFF_SUFFIXES)]
            if tiffs:
                return _tiff_stack(name, sorted(tiffs, key=_natural))
    return _array(name)


def _natural(path: str) -> list[Any]:
    """Sort key putting ``z2`` before ``z10``."""
    parts = re.split(r"(\d+)", Path(path).name)
    return [int(p) if p.isdigit() else p for p in parts]


def _npy(name: str) -> Source:
    if not Path(name).is_file():
        raise SourceError(f"no such file: {name}")
    try:
        array = _opened("npy", str(Path(name).resolve()))
    except ValueError as e:
        raise SourceError(f"{name} is not a readable .npy array: {e}") from None
    shape = _zyx(array.shape, name)
    return NpySource(str(Path(name).resolve()), shape, array.dtype.str, (0, 0, 0))


def _tiff_pages(name: str) -> Source:
    import tifffile

    if not Path(name).is_file():
        raise SourceError(f"no such file: {name}")
    path = str(Path(name).resolve())
    try:
        series = _opened("tiff", path).series[0]
    except (tifffile.TiffFileError, IndexError) as e:
        raise SourceError(f"{name} is not a readable TIFF: {e}") from None
    shape = _zyx(series.shape, name)
    page = tuple(series.pages[0].shape) if series.pages else ()
    if len(series.pages) != shape[0] or page != shape[1:]:
        raise SourceError(
            f"{name} holds {len(series.pages)} pages of shape {page} for a {series.shape} "
            "volume: one 2-D page per z is needed"
        )
    return TiffPages(path, shape, series.dtype.str, (0, 0, 0))


def _tiff_stack(name: str, files: list[str]) -> Source:
    import tifffile

    if not files:
        raise SourceError(f"no files match {name}")
    first: tuple[tuple[int, ...], str] | None = None
    for file in files:
        try:
            with tifffile.TiffFile(file) as tif:
                page = tif.pages.first
                found = (tuple(page.shape), np.dtype(page.dtype).str)
                pages = len(tif.pages)
        except tifffile.TiffFileError as e:
            raise SourceError(f"{file} is not a readable TIFF: {e}") from None
        if pages != 1 or len(found[0]) != 2:
            raise SourceError(f"{file} is not one 2-D image (a stack needs one per z)")
        if first is None:
            first = found
        elif found != first:
            raise SourceError(f"{file} is {found[0]} {found[1]}, the first slice {first}")
    assert first is not None
    (ny, nx), dtype = first
    resolved = tuple(str(Path(f).resolve()) for f in files)
    return TiffStack(name, (len(files), ny, nx), dtype, (0, 0, 0), resolved)


def _array(name: str) -> Source:
    """A zarr v3, zarr v2 or precomputed volume through tensorstore."""
    import tensorstore as ts

    location, drivers = name, ARRAY_DRIVERS
    for prefix, allowed in URL_PREFIXES.items():
        if name.startswith(prefix):
            location, drivers = name[len(prefix) :], allowed
    kvstore: Any = location
    if "://" not in location:  # workers may run elsewhere: the path must be absolute
        kvstore = {"driver": "file", "path": str(Path(location).resolve())}
    errors = []
    for driver in drivers:
        try:
            opened = ts.open({"driver": driver, "kvstore": kvstore}, read=True).result()
        except ValueError as e:
            errors.append(str(e).split(" [tensorstore_spec")[0])
            continue
        return _array_source(name, opened)
    raise SourceError(
        f"{name} is not a TIFF, .npy, zarr array or precomputed volume ({'; '.join(errors)})"
    )


def _array_source(name: str, opened: Any) -> Source:
    """The ZYX view of an opened tensorstore array, its origin moved to 0."""
    import tensorstore as ts

    labels = list(opened.domain.labels)
    if labels[-1:] == ["channel"]:  # precomputed: x, y, z, channel
        channels = opened.domain.shape[-1]
        if channels != 1:
            raise SourceError(f"{name} has {channels} channels: one is needed")
        opened = opened[..., 0]
        labels = labels[:-1]
    if sorted(labels) == ["x", "y", "z"]:
        opened = opened[ts.d["z", "y", "x"].transpose[0, 1, 2]]
    while opened.rank > 3 and opened.domain.shape[0] == 1:
        opened = opened[opened.domain.origin[0]]
    if opened.rank == 2:
        opened = opened[ts.newaxis]
    shape = _zyx(tuple(opened.domain.shape), name)
    oz, oy, ox = (int(v) for v in opened.domain.origin)
    view = opened[ts.d[:].translate_to[0]]
    spec = json.dumps(view.spec(minimal_spec=True).to_json())
    dtype = np.dtype(opened.dtype.numpy_dtype).str
    return TensorstoreSource(name, shape, dtype, (ox, oy, oz), spec)
