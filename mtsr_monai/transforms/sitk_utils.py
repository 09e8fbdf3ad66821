"""SimpleITK <-> MONAI: exact geometry conversion, resampling in physical space, the registration template.

Conventions. MONAI MetaTensors hold arrays indexed (i, j, k) with a RAS affine; SimpleITK images hold
LPS geometry (origin, spacing, direction) and numpy views indexed (k, j, i). :func:`metatensor_to_sitk` and
:func:`sitk_to_metatensor` convert exactly between the two (oblique grids included), on the io layer's
``array_to_sitk`` and ``sitk_affine`` (:mod:`mtsr_monai.io.sitk_geometry`). Shared by registration, the brain
mask, N4, the clinical pairs and the clinical forward model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from mtsr_monai.io import load_volume
from mtsr_monai.io.sitk_geometry import array_to_sitk, sitk_affine
from mtsr_monai.io.template import template_path

__all__ = [
    "INTERPOLATIONS",
    "array_to_sitk",
    "channels_to_sitk",
    "load_template",
    "metatensor_to_sitk",
    "resample",
    "same_grid",
    "sitk_affine",
    "sitk_interpolator",
    "sitk_to_metatensor",
    "stack_channels",
]

#: interpolation methods (SimpleITK), as the clinical paper's baselines name them
INTERPOLATIONS = ("trilinear", "bspline", "sinc", "nearest")


def metatensor_to_sitk(image: torch.Tensor | np.ndarray, affine: np.ndarray | None = None) -> sitk.Image:
    """A 3D or single-channel (1, X, Y, Z) MetaTensor as a float32 SimpleITK image (LPS geometry)."""
    if affine is None:
        if not isinstance(image, MetaTensor):
            raise ValueError("metatensor_to_sitk needs an affine for a plain array or tensor")
        affine = image.affine
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(f"expected one channel, got shape {array.shape}; convert channels one at a time")
        array = array[0]
    return array_to_sitk(array.astype(np.float32, copy=False), affine)


def sitk_to_metatensor(
    image: sitk.Image, channel_first: bool = True, meta: Mapping | None = None
) -> MetaTensor:
    """A SimpleITK image as a MetaTensor (1, X, Y, Z) (or (X, Y, Z)) with its RAS affine."""
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    if channel_first:
        array = array[None]
    affine = torch.as_tensor(sitk_affine(image), dtype=torch.float64)
    out = MetaTensor(torch.as_tensor(np.ascontiguousarray(array)), affine=affine, meta=dict(meta or {}))
    out.affine = affine  # meta["affine"] from a copied dict must not win over the new geometry
    return out


def channels_to_sitk(image: torch.Tensor) -> list[sitk.Image]:
    """Each channel of a (C, X, Y, Z) (or (X, Y, Z)) MetaTensor as a float32 SimpleITK image."""
    affine = image.affine if isinstance(image, MetaTensor) else None
    if affine is None:
        raise ValueError("registration needs MetaTensors with an affine (use LoadImaged)")
    array = image.detach().cpu().numpy().astype(np.float32)
    if array.ndim == 3:
        array = array[None]
    return [array_to_sitk(channel, affine) for channel in array]


def stack_channels(images: Sequence[sitk.Image], meta: Mapping | None, dtype: torch.dtype) -> MetaTensor:
    """SimpleITK images on one grid as the channels of a MetaTensor (C, X, Y, Z) with their affine; ``meta``
    is carried over without its geometry."""
    arrays = [sitk.GetArrayFromImage(im).transpose(2, 1, 0) for im in images]
    affine = torch.as_tensor(sitk_affine(images[0]), dtype=torch.float64)
    meta = {k: v for k, v in dict(meta or {}).items() if k not in ("affine", "spatial_shape")}
    out = MetaTensor(
        torch.as_tensor(np.ascontiguousarray(np.stack(arrays))).to(dtype), affine=affine, meta=meta
    )
    out.affine = affine
    out.meta["spatial_shape"] = np.asarray(arrays[0].shape)
    return out


def sitk_interpolator(method: str) -> int:
    """SimpleITK interpolator for ``trilinear`` (or ``linear``) / ``bspline`` / ``sinc`` (Welch-windowed) /
    ``nearest``."""
    table = {
        "trilinear": sitk.sitkLinear,
        "linear": sitk.sitkLinear,
        "bspline": sitk.sitkBSpline,
        "sinc": sitk.sitkWelchWindowedSinc,
        "nearest": sitk.sitkNearestNeighbor,
    }
    if method not in table:
        raise ValueError(f"unknown interpolation {method!r}; choose from {INTERPOLATIONS}")
    return table[method]


def resample(
    moving: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform | None = None,
    interpolation: str = "linear",
    float32: bool = False,
) -> sitk.Image:
    """``moving`` on ``reference``'s grid in physical space, 0 outside.

    ``transform`` maps reference points to moving points (as registration returns it; None: identity).
    ``interpolation``: see :func:`sitk_interpolator` (``nearest`` for masks and labels). The output keeps
    ``moving``'s pixel type, or is float32 with ``float32=True``. B-spline and sinc overshoot near edges:
    their values are clipped to the moving image's range (and 0, the fill outside it).
    """
    transform = sitk.Transform(3, sitk.sitkIdentity) if transform is None else transform
    if float32:
        moving = sitk.Cast(moving, sitk.sitkFloat32)
    pixel = moving.GetPixelID()
    out = sitk.Resample(moving, reference, transform, sitk_interpolator(interpolation), 0.0, pixel)
    if interpolation in ("bspline", "sinc"):
        arr = sitk.GetArrayViewFromImage(moving)  # with 0 in the range: the fill outside stays 0
        out = sitk.Clamp(out, pixel, min(0.0, float(arr.min())), max(0.0, float(arr.max())))
    return out


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> bool:
    """True when two images share size, spacing, origin and direction."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    )


def load_template(path: str | Path | None = None) -> sitk.Image:
    """The registration target as float32: the MNI152 2009a 1 mm T1 from nilearn unless ``path`` is given."""
    volume = load_volume(template_path("t1") if path is None else path)
    return metatensor_to_sitk(volume)


@contextmanager
def sitk_threads(threads: int | None) -> Iterator[None]:
    """SimpleITK's default thread count set to ``threads`` for the filters made inside the block (None:
    unchanged), then restored."""
    if threads is None:
        yield
        return
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
