"""Thick slices: a routine 2D protocol simulated from a fine volume (slices of ``thickness`` mm with a
Gaussian or boxcar profile, ``gap`` mm apart, optional in-plane block averaging and Rician noise), on the
protocol's own coarse grid with a correct affine.

- :func:`thick_slice_centres`, :func:`thick_slice_weights`; :func:`degrade_volume_thick_slice` on a volume
  (``mtsr degrade``, the clinical pairs);
- :class:`RandThickSliceDegradation` (array) and :class:`RandThickSliceDegradationd` (dictionary); random
  through their noise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import RandomizableTransform

from mtsr_monai.io.geometry import block_centre_offset, resampled_affine, resolve_axis
from mtsr_monai.transforms.degradation.common import (
    RandDegradation,
    RandDegradationd,
    add_noise,
    affine_of,
    block_mean,
    centre_crop_to_multiple,
    intensity_range,
    noise_generator,
    through_axis,
    volume_noise_unit,
    volume_tensor,
)
from mtsr_monai.transforms.protocol import PROFILES, profile_weights

__all__ = [
    "RandThickSliceDegradation",
    "RandThickSliceDegradationd",
    "degrade_volume_thick_slice",
    "thick_slice_centres",
    "thick_slice_weights",
]


def thick_slice_centres(n: int, spacing: float, thickness: float, gap: float) -> np.ndarray:
    """Continuous input indices of the centres of the thick slices that fit in ``n`` voxels of ``spacing`` mm.

    Slices are ``thickness`` mm thick, ``thickness + gap`` mm apart; the stack is centred in the field of
    view.
    """
    period = thickness + gap
    if not (math.isfinite(thickness) and math.isfinite(gap)) or thickness <= 0 or period <= 0:
        raise ValueError(f"need finite thickness > 0 and thickness + gap > 0, got {thickness}, {gap}")
    fov = n * spacing
    if thickness > fov:
        raise ValueError(f"slice thickness {thickness} mm exceeds the field of view {fov:.1f} mm")
    # relative tolerance: an oblique float32 affine gives 0.99999998 mm voxels, a 155 mm field 154.999997 mm,
    # which must still hold 31 slices of 5 mm (an absolute 1e-9 lost one)
    count = int(math.floor((fov - thickness) / period * (1 + 1e-6) + 1e-9)) + 1
    extent = (count - 1) * period + thickness
    first_mm = (fov - extent) / 2 + thickness / 2  # from the outer edge of voxel 0
    return -0.5 + (first_mm + period * np.arange(count)) / spacing


def thick_slice_weights(
    n: int, spacing: float, thickness: float, gap: float = 0.0, profile: str = "gaussian"
) -> tuple[np.ndarray, np.ndarray]:
    """Matrix ``(n_slices, n)`` averaging input voxels into thick slices, and the slice centres (indices).

    Each weight is the slice profile integrated over one input voxel: a Gaussian of FWHM ``thickness``
    or a boxcar of width ``thickness`` (:func:`~mtsr_monai.transforms.protocol.profile_weights`); rows
    sum to 1.
    """
    centres = thick_slice_centres(n, spacing, thickness, gap)
    return profile_weights(centres, n, spacing, thickness, profile), centres


def _apply_along(x: torch.Tensor, weights: np.ndarray, dim: int) -> torch.Tensor:
    w = torch.as_tensor(weights, dtype=torch.float64)
    return torch.movedim(torch.tensordot(x.to(torch.float64), w, dims=([dim], [1])), -1, dim)


def _apply_thick_slice(
    x: torch.Tensor,
    affine: np.ndarray,
    through: int,
    thickness: float,
    gap: float,
    profile: str,
    scale: int,
    noise: float,
    generator: torch.Generator | None,
    noise_unit: float | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    spatial = x.ndim - 1
    spacing = float(np.linalg.norm(np.asarray(affine, dtype=np.float64)[:-1, through]))
    if thickness < spacing - 1e-6:
        raise ValueError(f"slice thickness {thickness} mm is below the input spacing {spacing:.3f} mm")
    weights, centres = thick_slice_weights(x.shape[through + 1], spacing, thickness, gap, profile)
    out = _apply_along(x, weights, through + 1)
    factors: dict[int, float] = {through: (thickness + gap) / spacing}
    offsets: dict[int, float] = {through: float(centres[0])}
    if scale > 1:
        inplane = [d for d in range(spatial) if d != through]
        out, starts = centre_crop_to_multiple(out, [d + 1 for d in inplane], scale)
        out = block_mean(out, [d + 1 for d in inplane], scale)
        factors.update({d: float(scale) for d in inplane})
        offsets.update({d: block_centre_offset(starts[d + 1], scale) for d in inplane})
    if noise > 0:
        sigma = noise * (intensity_range(x) if noise_unit is None else noise_unit)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        out = add_noise(out, "rician", sigma, gen)
    return out.to(torch.float32), resampled_affine(affine, factors, offsets)


def degrade_volume_thick_slice(
    volume: np.ndarray | torch.Tensor,
    affine: np.ndarray,
    thickness: float,
    gap: float = 0.0,
    axis: str | int = "axial",
    profile: str = "gaussian",
    scale: int = 1,
    noise: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate a 2D clinical protocol: thick slices (profile of FWHM/width ``thickness`` mm, ``gap`` mm
    apart) along ``axis``, optional in-plane block averaging by ``scale``, optional Rician noise (``noise``: a
    fraction of the volume's robust range, :func:`~mtsr_monai.transforms.intensity.robust_range`)."""
    through = resolve_axis(affine, axis)
    generator = noise_generator(np.random.RandomState(seed))
    unit = volume_noise_unit(volume) if noise > 0 else 1.0
    lr, affine_lr = _apply_thick_slice(
        volume_tensor(volume), affine, through, thickness, gap, profile, int(scale), noise, generator, unit
    )
    return lr[0].numpy().astype(np.float32), affine_lr


class RandThickSliceDegradation(RandDegradation):
    """Array transform: thick slices of ``thickness`` mm, ``gap`` mm apart, along ``axis`` (found from the
    affine of a volume ``(C, H, W, D)``; an integer for a slice ``(C, H, W)``), with probability ``prob``
    (skipped: the input is returned unchanged).

    The input spacing along the axis comes from the MetaTensor affine (1 mm for plain tensors). ``scale``
    block-averages in-plane; ``noise`` (fraction of the intensity range) adds Rician noise. A MetaTensor
    output carries the coarse grid's affine.
    """

    def __init__(
        self,
        thickness: float,
        gap: float = 0.0,
        axis: str | int = "axial",
        profile: str = "gaussian",
        scale: int = 1,
        noise: float = 0.0,
        prob: float = 1.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if profile not in PROFILES:
            raise ValueError(f"unknown slice profile {profile!r}")
        self.thickness, self.gap, self.profile = float(thickness), float(gap), profile
        self.axis, self.scale, self.noise = axis, int(scale), float(noise)

    def _through(self, img: Any, x: torch.Tensor) -> int:
        if x.ndim - 1 != 2:
            return through_axis(img, x, self.axis)
        if not isinstance(self.axis, (int, np.integer)) or not -2 <= int(self.axis) < 2:
            raise ValueError(f"a 2D slice needs an array axis in -2..1 for thick slices, got {self.axis!r}")
        return int(self.axis) % 2

    def degrade_tensor(
        self, img: Any, x: torch.Tensor, noise: torch.Generator
    ) -> tuple[torch.Tensor, np.ndarray]:
        return _apply_thick_slice(
            x,
            affine_of(img, x.ndim - 1),
            self._through(img, x),
            self.thickness,
            self.gap,
            self.profile,
            self.scale,
            self.noise,
            noise,
        )


class RandThickSliceDegradationd(RandDegradationd):
    """Dictionary wrapper of :class:`RandThickSliceDegradation`: the thick-slice copy of each key under
    ``key + lr_suffix`` (or ``output_keys``); one ``prob`` draw per call, noise drawn per key."""

    def __init__(
        self,
        keys: KeysCollection,
        thickness: float,
        gap: float = 0.0,
        axis: str | int = "axial",
        profile: str = "gaussian",
        scale: int = 1,
        noise: float = 0.0,
        output_keys: KeysCollection | None = None,
        lr_suffix: str = "_lr",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        degrade = RandThickSliceDegradation(thickness, gap, axis, profile, scale, noise, prob)
        super().__init__(keys, degrade, output_keys, lr_suffix, allow_missing_keys)
