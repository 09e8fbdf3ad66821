"""Checks that refuse volumes no model should see, each raising :class:`InputError` naming the problem."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtsr_monai.errors import InputError

#: voxel sizes outside this range (mm) are header errors, not MRI (0.05 mm .. 20 mm)
MIN_VOXEL_MM, MAX_VOXEL_MM = 0.05, 20.0


def validate_volume(array: np.ndarray, affine: np.ndarray, path: str | Path | None = None) -> None:
    """Refuse non-3D data, NaN/Inf voxels, constant images and absurd voxel sizes."""
    if array.ndim != 3:
        raise InputError(f"expected a 3D volume, got {array.ndim}D data of shape {tuple(array.shape)}", path)
    if min(array.shape) < 2:
        raise InputError(f"expected a 3D volume, got shape {tuple(array.shape)} (a 2D image?)", path)
    finite = np.isfinite(array)
    if not finite.all():
        raise InputError(f"{int(array.size - finite.sum())} voxels are NaN or Inf", path)
    if float(array.max()) == float(array.min()):
        raise InputError(f"the image is constant (every voxel is {float(array.min())})", path)
    spacing = np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))
    if not np.all(np.isfinite(spacing)) or spacing.min() < MIN_VOXEL_MM or spacing.max() > MAX_VOXEL_MM:
        raise InputError(
            f"absurd voxel size {tuple(round(float(s), 4) for s in spacing)} mm "
            f"(accepted {MIN_VOXEL_MM}-{MAX_VOXEL_MM} mm): check the header",
            path,
        )


def check_same_grid(
    shapes: Sequence[Sequence[int]],
    affines: Sequence[np.ndarray],
    paths: Sequence[str | Path],
    atol_mm: float = 1e-3,
) -> None:
    """Refuse volumes of one subject that are not on one grid where a co-registered set is required."""
    ref_shape, ref_affine, ref_path = tuple(shapes[0]), np.asarray(affines[0]), paths[0]
    for shape, affine, path in zip(shapes[1:], affines[1:], paths[1:], strict=True):
        if tuple(shape) != ref_shape:
            raise InputError(
                f"not on the grid of {ref_path}: shape {tuple(shape)} != {ref_shape}; "
                "register / resample the modalities first (mtsr preprocess)",
                path,
            )
        if not np.allclose(np.asarray(affine), ref_affine, atol=atol_mm):
            raise InputError(
                f"not on the grid of {ref_path}: the affines differ; "
                "register / resample the modalities first (mtsr preprocess)",
                path,
            )
