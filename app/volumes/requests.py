"""Request helpers shared by the volume datatypes: labels, shapes, bounded boxes, 2-D
planes (coordinates, sizes and block coordinates: :mod:`app.volumes.geometry`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.datatypes.base import Data
from app.errors import BadRequest, TooLarge
from app.volumes.geometry import (
    Box,
    json_int,
    parse_box,
    parse_int,
    parse_point,
    parse_size,
    vec,
)

#: Labels are uint64.
MAX_LABEL = 2**64 - 1

_PLANES = {"xy": (0, 1), "0_1": (0, 1), "xz": (0, 2), "0_2": (0, 2), "yz": (1, 2), "1_2": (1, 2)}
_VOLUME = ("0_1_2", "vol")


def parse_label(value: Any, what: str = "label", zero_ok: bool = False) -> int:
    """A label — path or query text, or a JSON integer — within uint64; label 0 (the
    background) only where ``zero_ok``. 400 otherwise, as DVID's ``ParseUint`` gives."""
    label = parse_int(value, what)
    if not 0 <= label <= MAX_LABEL:
        raise BadRequest(f"{what} {label} is outside the uint64 range 0..2^64-1")
    if label == 0 and not zero_ok:
        raise BadRequest(f"{what} 0 is the background label and cannot be used here")
    return label


def parse_labels(values: Any, what: str = "label") -> list[int]:
    """A JSON list of labels (0 allowed) as ints within uint64; 400 otherwise."""
    if not isinstance(values, list):
        raise BadRequest(f"body must be a JSON list of {what}s")
    return [parse_label(json_int(v, what), what, zero_ok=True) for v in values]


def parse_dims(text: str) -> tuple[int, int] | None:
    """A plane's two axes (``xy``, ``xz``, ``yz``), or None for a 3-D volume; 400 else."""
    key = text.lower().replace(",", "_")
    if key in _VOLUME:
        return None
    if key in _PLANES:
        return _PLANES[key]
    raise BadRequest(f"bad shape {text!r}: use xy, xz, yz or 0_1_2")


def bounded(data: Data, box: Box) -> Box:
    """``box``, if within the configured voxel limit (else 413) and the volume."""
    limit = data.services.settings.max_voxels
    if box.voxels > limit:
        raise TooLarge(f"{box.voxels} voxels requested; at most {limit} per request")
    return box.check_inside()


def volume_box(data: Data, size: str, offset: str) -> Box:
    """A bounded 3-D box from ``nx_ny_nz`` and ``x_y_z`` path segments."""
    return bounded(data, parse_box(size, offset))


def plane_box(axes: tuple[int, int], size: str, offset: str) -> Box:
    """The one-voxel-thick box of a ``w_h`` plane through ``x_y_z``."""
    w, h = parse_size(size, 2)
    dims = [1, 1, 1]
    dims[axes[0]], dims[axes[1]] = w, h
    return Box(parse_point(offset), vec(dims))


def isotropic_read_size(w: int, h: int, res_w: float, res_h: float) -> tuple[int, int]:
    """How many pixels of a ``w`` x ``h`` plane to read so that they are square at the
    finer of the two resolutions (DVID's ``Isotropy2D``); the result is then stretched
    back to ``w`` x ``h``."""
    if res_w < res_h:
        return w, max(1, round(h * res_w / res_h))
    if res_h < res_w:
        return max(1, round(w * res_h / res_w)), h
    return w, h


def plane_of(volume: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
    """The 2-D image (rows = second axis) of a one-voxel-thick ZYX volume."""
    if axes == (0, 1):
        return volume[0]
    if axes == (0, 2):
        return volume[:, 0, :]
    return volume[:, :, 0]


def array_bytes(array: np.ndarray) -> memoryview | bytes:
    """The bytes of an array the caller gives up, to send: without a copy when it is
    contiguous, as a read-only view (the array is frozen), so that a kept answer can
    hold it as it is too (app/immutable.py). A 16 MiB copy into fresh memory costs as
    much as reading the chunks."""
    if not array.flags.c_contiguous or _held_bytes(array) != array.nbytes:
        return array.tobytes()  # a view might keep the whole of a larger buffer alive
    array.flags.writeable = False
    return array.data.cast("B")


def _held_bytes(array: np.ndarray) -> int | None:
    """The bytes of the buffer ``array`` views (a kept answer holding the view holds all
    of them, while the answer cache counts only the view's own), or None when its owner
    does not tell (a tensorstore read's capsule, numpy's stride tricks)."""
    base = array.base
    if base is None:
        return array.nbytes
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, np.ndarray):
        return base.nbytes
    try:
        return memoryview(base).nbytes
    except TypeError:
        return None
