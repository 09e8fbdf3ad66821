"""Central k-space truncation: what a scanner acquiring a smaller matrix gives (Gibbs ringing kept), with
complex Gaussian noise (a Rician magnitude).

- :func:`kspace_truncate` on the last two dims of a tensor; :func:`degrade_volume_kspace` slice by slice
  over a volume (``mtsr degrade``);
- :class:`RandKSpaceTruncation` (array) and :class:`RandKSpaceTruncationd` (dictionary) on a channel-first
  slice ``(C, H, W)`` or volume ``(C, H, W, D)``; random through their noise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import RandomizableTransform

from mtsr_monai.io.geometry import resolve_axis
from mtsr_monai.transforms.degradation.common import (
    RandDegradation,
    RandDegradationd,
    affine_of,
    centre_crop_to_multiple,
    inplane_axes,
    intensity_range,
    lr_grid,
    map_slices,
    noise_generator,
    through_axis,
    volume_noise_unit,
    volume_tensor,
)

__all__ = ["RandKSpaceTruncation", "RandKSpaceTruncationd", "degrade_volume_kspace", "kspace_truncate"]


def kspace_truncate(
    x: torch.Tensor,
    scale: int,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
    keep_grid: bool = False,
) -> torch.Tensor:
    """Keep the central ``1/scale`` of the 2D k-space of the last two dims, add complex Gaussian noise there,
    and return the magnitude image (Rician noise, Gibbs ringing kept).

    ``keep_grid=False``: the output has ``H // scale`` x ``W // scale`` pixels (inputs must be multiples of
    ``scale``) and a half-block phase shift puts pixel ``i`` at the centre of high-resolution block ``i``.
    ``keep_grid=True``: same size as the input, k-space zero-filled. ``noise_std`` is the per-pixel standard
    deviation of each of the real and imaginary parts in the image, in image units.
    """
    h, w = x.shape[-2:]
    mh, mw = h // scale, w // scale
    if mh < 1 or mw < 1:
        raise ValueError(f"image {h}x{w} is smaller than the scale {scale}")
    spectrum = torch.fft.fftshift(torch.fft.fft2(x.to(torch.float64), norm="ortho"), dim=(-2, -1))
    sh, sw = h // 2 - mh // 2, w // 2 - mw // 2  # keeps DC at the centre index of the smaller matrix
    kept = spectrum[..., sh : sh + mh, sw : sw + mw]
    noise_shape = kept.shape
    if keep_grid:
        full = torch.zeros_like(spectrum)
        full[..., sh : sh + mh, sw : sw + mw] = kept
        noise_scale = math.sqrt(h * w / (mh * mw))  # zero-filling spreads k-space noise over more pixels
        target, (oh, ow) = full, (sh, sw)
    else:
        # ortho FFTs of different sizes: rescale so that the mean intensity is unchanged
        kept = kept * math.sqrt(mh * mw / (h * w))
        ky = torch.arange(mh, dtype=torch.float64) - mh // 2
        kx = torch.arange(mw, dtype=torch.float64) - mw // 2
        shift = (scale - 1) / 2.0  # sample at HR block centres, i.e. HR index i*scale + (scale-1)/2
        phase = torch.exp(2j * math.pi * shift * (ky[:, None] / h + kx[None, :] / w))
        kept = kept * phase
        noise_scale = 1.0
        target, (oh, ow) = kept, (0, 0)
    if noise_std > 0:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        real = torch.randn(noise_shape, generator=gen, dtype=torch.float64)
        imag = torch.randn(noise_shape, generator=gen, dtype=torch.float64)
        target = target.clone()
        target[..., oh : oh + mh, ow : ow + mw] += noise_std * noise_scale * torch.complex(real, imag)
    image = torch.fft.ifft2(torch.fft.ifftshift(target, dim=(-2, -1)), norm="ortho")
    return image.abs().to(x.dtype)


def _apply_kspace(
    x: torch.Tensor,
    affine: np.ndarray,
    scale: int,
    through: int | None,
    noise: float,
    generator: torch.Generator,
    keep_grid: bool,
    noise_unit: float | None = None,
) -> tuple[torch.Tensor, np.ndarray, dict[int, int]]:
    inplane = inplane_axes(x.ndim - 1, through)
    if keep_grid:
        cropped, starts = x, {d + 1: 0 for d in inplane}
    else:
        cropped, starts = centre_crop_to_multiple(x, [d + 1 for d in inplane], scale)
    sigma = noise * (intensity_range(cropped) if noise_unit is None else noise_unit)
    lr = map_slices(lambda s: kspace_truncate(s, scale, sigma, generator, keep_grid), cropped, through)
    if keep_grid:
        return lr, np.asarray(affine, dtype=np.float64), {}
    return (lr, *lr_grid(affine, inplane, starts, scale))


def degrade_volume_kspace(
    volume: np.ndarray | torch.Tensor,
    affine: np.ndarray,
    scale: int = 4,
    axis: str | int = "axial",
    noise: float = 0.01,
    keep_grid: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Central in-plane k-space truncation by ``scale`` with complex Gaussian noise (fraction ``noise`` of the
    volume's robust range, :func:`~mtsr_monai.transforms.intensity.robust_range`); per slice 2D FFTs, which
    equals truncating the 3D k-space in-plane only."""
    through = resolve_axis(affine, axis)
    generator = noise_generator(np.random.RandomState(seed))
    unit = volume_noise_unit(volume) if noise > 0 else 1.0
    lr, affine_lr, _ = _apply_kspace(
        volume_tensor(volume), affine, int(scale), through, noise, generator, keep_grid, noise_unit=unit
    )
    return lr[0].numpy().astype(np.float32), affine_lr


class RandKSpaceTruncation(RandDegradation):
    """Array transform: central k-space truncation by ``scale`` in-plane (normal to ``axis`` for a volume,
    found from the affine) with complex Gaussian noise, with probability ``prob`` (skipped: the input is
    returned unchanged).

    ``noise`` is the noise standard deviation as a fraction of the image's intensity range; ``keep_grid``
    keeps the input matrix (zero-filled k-space) instead of the smaller LR matrix. A MetaTensor output
    carries the low-resolution affine.
    """

    def __init__(
        self,
        scale: int = 4,
        noise: float = 0.01,
        keep_grid: bool = False,
        axis: str | int = "axial",
        prob: float = 1.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.scale, self.noise, self.keep_grid, self.axis = int(scale), float(noise), keep_grid, axis

    def degrade_tensor(
        self, img: Any, x: torch.Tensor, noise: torch.Generator
    ) -> tuple[torch.Tensor, np.ndarray]:
        affine = affine_of(img, x.ndim - 1)
        through = through_axis(img, x, self.axis)
        lr, affine_lr, _ = _apply_kspace(x, affine, self.scale, through, self.noise, noise, self.keep_grid)
        return lr.to(torch.float32), affine_lr


class RandKSpaceTruncationd(RandDegradationd):
    """Dictionary wrapper of :class:`RandKSpaceTruncation`: the truncated copy of each key under
    ``key + lr_suffix`` (or ``output_keys``); one ``prob`` draw per call, noise drawn per key."""

    def __init__(
        self,
        keys: KeysCollection,
        scale: int = 4,
        noise: float = 0.01,
        keep_grid: bool = False,
        output_keys: KeysCollection | None = None,
        lr_suffix: str = "_lr",
        axis: str | int = "axial",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        degrade = RandKSpaceTruncation(scale, noise, keep_grid, axis, prob)
        super().__init__(keys, degrade, output_keys, lr_suffix, allow_missing_keys)
