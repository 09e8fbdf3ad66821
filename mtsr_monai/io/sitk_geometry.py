"""RAS arrays <-> SimpleITK images, exactly (oblique and axis-permuted grids included).

MONAI MetaTensors hold arrays indexed (i, j, k) with a RAS affine; SimpleITK images hold LPS geometry
(origin, spacing, direction) and numpy views indexed (k, j, i). The two functions here are the one place
where that conversion is written: the io layer reads and writes .nrrd / .mha through them, and
:mod:`mtsr_monai.transforms.sitk_utils` builds registration, resampling and N4 on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import SimpleITK as sitk

_LPS = np.diag([-1.0, -1.0, 1.0])


def _as_affine(affine: Any) -> np.ndarray:
    if hasattr(affine, "detach"):  # a torch tensor, without importing torch here
        affine = affine.detach().cpu().numpy()
    return np.asarray(affine, dtype=np.float64)


def array_to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A 3D (i, j, k) array with a RAS affine as a SimpleITK image with the same physical geometry."""
    import SimpleITK as sitk  # lazy: keeps `import mtsr_monai.io` light

    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {array.shape}")
    affine = _as_affine(affine)
    lps = _LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in (lps / spacing).ravel()])
    image.SetOrigin([float(o) for o in _LPS @ affine[:3, 3]])
    return image


def sitk_affine(image: sitk.Image) -> np.ndarray:
    """The RAS 4x4 affine of a 3D SimpleITK image (index (i, j, k) -> RAS mm)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _LPS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = _LPS @ np.asarray(image.GetOrigin(), dtype=np.float64)
    return affine
