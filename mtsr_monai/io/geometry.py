"""Geometry of volumes from their affine: the array axis normal to an anatomical plane, the affines of
coarser (low-resolution) and finer (super-resolved) grids over the same field of view.

The lowest layer, beside the readers: transforms, data and inference all place voxels with it. Kept free of
MONAI and torch imports so that commands needing only this (e.g. an interpolation baseline of
``mtsr super-resolve``) do not pay for ``import monai``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: anatomical plane name -> world (RAS) axis normal to it
PLANE_WORLD_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}

__all__ = [
    "PLANE_WORLD_AXIS",
    "TRAINING_AXCODES",
    "AxisOrder",
    "block_centre_offset",
    "resampled_affine",
    "resolve_axis",
    "shear_degrees",
    "sr_affine",
]

#: voxel axes further than this from perpendicular are sheared: a NIfTI qform and ITK's direction cosines
#: cannot hold them
SHEAR_TOLERANCE_DEGREES = 0.01


def _as_array(affine: Any) -> np.ndarray:
    """A float64 numpy copy of an affine given as an array or a (possibly CUDA) tensor."""
    if hasattr(affine, "detach"):
        affine = affine.detach().cpu().numpy()
    return np.asarray(affine, dtype=np.float64)


def shear_degrees(affine: Any) -> float:
    """How far (degrees) the voxel axes of ``affine`` are from perpendicular, the largest of the three
    pairs: 0 for any rotation, flip or scaling; a gantry-tilted CT or a resampling done wrong shears."""
    columns = _as_array(affine)[:3, :3]
    unit = columns / np.linalg.norm(columns, axis=0)
    cosines = np.abs(unit.T @ unit)[np.triu_indices(3, 1)]
    return float(90.0 - np.degrees(np.arccos(np.clip(cosines.max(), 0.0, 1.0))))


def resolve_axis(affine: Any, axis: str | int, ndim: int = 3) -> int:
    """Array axis normal to ``axis`` ('axial', 'coronal', 'sagittal', 'auto': :func:`acquisition_axis`, or an
    array axis index).

    The plane is found from the affine (the array axis whose direction is closest to world S, A or R),
    not from the array order, so oblique or permuted volumes degrade along the right axis.
    """
    if isinstance(axis, str) and axis.lstrip("-").isdigit():  # "0" from a command line or a config
        axis = int(axis)
    if isinstance(axis, (int, np.integer)):
        if not -ndim <= int(axis) < ndim:
            raise ValueError(f"axis {axis} out of range for {ndim} spatial dimensions")
        return int(axis) % ndim
    if axis not in PLANE_WORLD_AXIS and axis != "auto":
        choices = sorted([*PLANE_WORLD_AXIS, "auto"])
        raise ValueError(f"unknown axis {axis!r}; choose from {choices} or an array index")
    if affine is None:
        affine = np.eye(ndim + 1)
    a = _as_array(affine)
    if ndim != 3 or a.shape[0] < 4:
        raise ValueError("a named axis needs a 3D volume with a 4x4 affine; give an array index instead")
    if axis == "auto":
        return acquisition_axis(a)
    directions = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0, keepdims=True)
    return int(np.argmax(np.abs(directions[PLANE_WORLD_AXIS[axis], :])))


def acquisition_axis(affine: Any, same: float = 0.3, differs: float = 0.3) -> int:
    """The array axis normal to the plane a scan was acquired in, from its voxel sizes: where two agree
    (within ``same``, relative: rectangular pixels, 1 x 1.25 mm, still agree) and the third differs by more
    than ``differs``, the third (a sagittal 1 x 4 x 4 mm scan: axis 0); otherwise the axis closest to world
    S (axial). ``resolve_axis(a, "auto")``."""
    sizes = np.linalg.norm(_as_array(affine)[:3, :3], axis=0)
    for k in range(3):
        a, b = (sizes[i] for i in range(3) if i != k)
        plane = (a + b) / 2
        if abs(a - b) <= same * max(a, b) and abs(sizes[k] - plane) > differs * max(sizes[k], plane):
            return k
    return resolve_axis(affine, "axial")


def resampled_affine(affine: Any, factors: Mapping[int, float], offsets: Mapping[int, float]) -> np.ndarray:
    """Affine of a grid whose axis ``k`` has spacing ``factors[k]`` x the old one and whose voxel 0 sits at
    old (continuous) index ``offsets[k]``; axes not named are unchanged."""
    a = _as_array(affine)
    rank = a.shape[0] - 1
    origin_index = np.zeros(rank + 1)
    origin_index[rank] = 1.0
    for k, off in offsets.items():
        origin_index[k] = off
    out = a.copy()
    out[:, rank] = a @ origin_index
    for k, f in factors.items():
        out[:rank, k] = a[:rank, k] * f
    return out


def block_centre_offset(start: int, scale: int) -> float:
    """Continuous input index of the centre of the ``scale``-voxel block that begins at index ``start``: where
    a low-resolution voxel summarising that block sits."""
    return start + (scale - 1) / 2.0


def sr_affine(affine: np.ndarray, inplane: Sequence[int], scale: int) -> np.ndarray:
    """Affine of the grid refined ``scale`` times along the ``inplane`` array axes, same field of view.

    Output voxel ``j`` covers input voxel ``j // scale``; its centre sits at input index
    ``(j + 0.5) / scale - 0.5``, so the new origin is at index ``-(scale - 1) / (2 scale)``.
    """
    a = np.asarray(affine, dtype=np.float64).copy()
    origin_index = np.zeros(4)
    origin_index[3] = 1.0
    for k in inplane:
        origin_index[k] = -(scale - 1) / (2.0 * scale)
    origin = a @ origin_index
    for k in inplane:
        a[:3, k] /= scale
    a[:, 3] = origin
    return a


#: the array order of the BraTS volumes the 2D networks trained on; they are not flip- or transpose-invariant,
#: so inference brings a volume to this order (flips and axis swaps only) and undoes it on the outputs
TRAINING_AXCODES = ("L", "P", "S")


class AxisOrder:
    """The flips and axis swaps (no resampling) that bring arrays on ``affine`` to the axis codes ``axcodes``
    (nibabel's orientation transform; an oblique affine goes to the closest such order), and back.

    Inference cuts 2D slices in the networks' training order with it: ``order.apply`` on the way in,
    ``order.axis`` for where a stored axis went, ``order.undo`` on the outputs."""

    def __init__(self, affine: Any, axcodes: Sequence[str] = TRAINING_AXCODES) -> None:
        # lazy: nibabel.orientations loads scipy (seconds), which most users of this module never need
        from nibabel import orientations

        self.stored_affine = _as_array(affine)
        start = orientations.io_orientation(self.stored_affine)
        self.change = orientations.ornt_transform(start, orientations.axcodes2ornt(tuple(axcodes)))
        self.back = np.zeros_like(self.change)
        for axis, (new_axis, flip) in enumerate(self.change):
            self.back[int(new_axis)] = (axis, flip)

    def axis(self, stored_axis: int) -> int:
        """Where the stored array's spatial ``stored_axis`` lies after :meth:`apply`."""
        return int(self.change[stored_axis, 0])

    def apply(self, volume: np.ndarray, copy: bool = True) -> np.ndarray:
        """``volume`` (X, Y, Z), or channel-first (C, X, Y, Z), in the target order: a contiguous copy, or
        with ``copy=False`` a view (writing into it writes ``volume``)."""
        return _reoriented(volume, self.change, copy)

    def undo(self, volume: np.ndarray) -> np.ndarray:
        """An array in the target order (3D or channel-first) back in the stored order."""
        return _reoriented(volume, self.back)

    def affine(self, shape: Sequence[int]) -> np.ndarray:
        """The affine of the reordered array, given the stored array's spatial ``shape``."""
        # lazy: as above
        from nibabel.orientations import inv_ornt_aff

        return self.stored_affine @ inv_ornt_aff(self.change, tuple(shape))


def _reoriented(volume: np.ndarray, change: np.ndarray, copy: bool = True) -> np.ndarray:
    # lazy: nibabel.orientations loads scipy (seconds), which most users of this module never need
    from nibabel.orientations import apply_orientation

    if np.ndim(volume) == 3:
        view = apply_orientation(volume, change)  # flips and a transpose: a view
    else:
        view = np.moveaxis(apply_orientation(np.moveaxis(volume, 0, -1), change), -1, 0)
    return np.ascontiguousarray(view) if copy else view
