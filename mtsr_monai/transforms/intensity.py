"""Intensity scaling: the one linear map to [0, 1] and the ranges it is given.

- :func:`robust_range` / :func:`robust_scale`: the training scaling of the networks (robust percentiles of
  the foreground, 0 kept at 0 for magnitude images);
- :func:`percentile_range` / :func:`scale_percentiles_in_mask`: the preprocessing scaling (percentiles
  inside a brain mask);
- :func:`display_range`: grey levels of a figure (robust to single hot voxels).

All of them map with :func:`scale_to_range`. Only numpy is imported at load time (torch when a tensor is
made), so that inference paths needing only the scaling (an interpolation baseline of ``mtsr
super-resolve``) and the report figures start fast; the MONAI transforms that apply them are in
:mod:`mtsr_monai.transforms.scale`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mtsr_monai.transforms.foreground import SKULL_STRIPPED_ZERO_SHARE, object_mask

if TYPE_CHECKING:
    import torch

__all__ = [
    "display_range",
    "is_signed",
    "median_scale",
    "percentile_range",
    "robust_range",
    "robust_scale",
    "scale_percentiles_in_mask",
    "scale_to_range",
]


def scale_to_range(image: Any, lo: float, hi: float, clip: bool = True) -> Any:
    """``(image - lo) / (hi - lo)``, clipped to [0, 1] unless ``clip=False``; a flat range (``hi <= lo``)
    divides by 1 rather than by zero. Keeps the type (numpy array or tensor) of ``image``."""
    span = hi - lo if hi > lo else 1.0
    out = (image - lo) / span
    if not clip:
        return out
    return out.clamp(0.0, 1.0) if hasattr(out, "clamp") else np.clip(out, 0.0, 1.0)  # a tensor, or numpy


def robust_range(
    volume: np.ndarray | torch.Tensor, lower: float = 0.5, upper: float = 99.5
) -> tuple[float, float]:
    """``(lo, hi)`` of the training scaling ``(x - lo) / (hi - lo)``: ``hi`` is the ``upper`` percentile of
    the foreground, ``lo`` is 0 for magnitude images (also with zero-mean noise), else the ``lower``
    percentile.

    The foreground is the non-zero voxels when the background is exactly zero (skull-stripped data: more than
    a fifth of the voxels exactly 0, :func:`~mtsr_monai.transforms.foreground.object_mask`), else the
    voxels above an Otsu threshold: the head, not the air around it. So a low-resolution input with a noisy
    background (a real acquisition, or the training degradation, which adds Rician noise everywhere) gets
    the scaling its clean, skull-stripped counterpart had in training; percentiles over all voxels would
    depend on how much air the field of view holds. Returned as numbers so outputs can be mapped back.
    """
    x = volume.detach().cpu().numpy() if hasattr(volume, "detach") else np.asarray(volume)
    x_min = float(x.min())
    inside = object_mask(x)
    fg = x[inside] if inside.any() else x.ravel()
    hi = float(np.percentile(fg, upper))
    # magnitude images (air at 0, noise of either sign around it) keep lo = 0, as in training; the sign test
    # (a median and percentiles) runs only where a voxel is negative
    magnitude = x_min >= 0.0 or not _signed_image(x, hi)
    lo = 0.0 if magnitude else float(np.percentile(x, lower))
    return lo, (hi if hi > lo else lo + 1.0)


def _signed_image(x: np.ndarray, hi: float) -> bool:
    """Genuinely signed, so scaled from a percentile: a z-scored image, whose median voxel is well below 0,
    or a z-scored brain on an exactly-zero background (the median is air; over a third of its object is
    negative, where a skull-stripped scan downsampled without antialiasing undershoots in 2-3 % of it)."""
    if float(np.median(x)) < -0.05 * abs(hi):
        return True
    return float(np.mean(x == 0)) > SKULL_STRIPPED_ZERO_SHARE and is_signed(x, share=0.2)


def is_signed(volume: np.ndarray | torch.Tensor, share: float = 0.01, depth: float = 0.05) -> bool:
    """True for an image whose negative values carry signal (z-scored, phase-like, negated): more than
    ``share`` of its non-zero voxels lie below ``-depth`` x its robust magnitude (99.5th percentile of
    ``|x|``). A magnitude image's interpolation undershoot (a few small negatives at edges) is not."""
    x = volume.detach().cpu().numpy() if hasattr(volume, "detach") else np.asarray(volume)
    nonzero = x[x != 0]
    if nonzero.size == 0:
        return False
    level = float(np.percentile(np.abs(nonzero), 99.5))
    return float(np.mean(nonzero < -depth * level)) > share


def robust_scale(
    volume: torch.Tensor | np.ndarray, lower: float = 0.5, upper: float = 99.5, clip: bool = True
) -> torch.Tensor:
    """A float32 tensor scaled to [0, 1] by :func:`robust_range`, clipped unless ``clip=False``."""
    lo, hi = robust_range(volume, lower, upper)
    return scale_to_range(_float_tensor(volume), lo, hi, clip)


def _float_tensor(volume: Any) -> Any:
    """A float32 tensor of a tensor or array (a flipped numpy view too: torch refuses negative strides)."""
    import torch

    if not isinstance(volume, torch.Tensor):
        volume = np.ascontiguousarray(volume, dtype=np.float32)
    return torch.as_tensor(volume, dtype=torch.float32)


MEDIAN_LEVEL = 0.35  # where median_scale puts the brain median of a translation target


def median_scale(
    volume: torch.Tensor | np.ndarray, level: float = MEDIAN_LEVEL, clip: bool = True
) -> torch.Tensor:
    """A float32 tensor scaled so that its foreground median lands at ``level`` (0 kept at 0), clipped to
    [0, 1] unless ``clip=False``.

    The training scaling of translation targets: :func:`robust_scale` maps a FLAIR's 99.5 % level to 1, and
    that level sits in the lesion when there is one, so normal tissue lands anywhere from 0.34 to 0.70 and a
    network seeing a patch cannot know where. The median of the brain is tissue in every subject."""
    x = _float_tensor(volume)
    foreground = x[x > 0]
    median = float(foreground.median()) if foreground.numel() else 0.0
    return scale_to_range(x, 0.0, median / level if median > 0 else 1.0, clip)


def percentile_range(
    image: np.ndarray, mask: np.ndarray | None = None, lower: float = 0.5, upper: float = 99.5
) -> tuple[float, float]:
    """The ``lower`` and ``upper`` percentiles of ``image`` inside ``mask`` (all voxels if None)."""
    values = image[mask > 0] if mask is not None else image.ravel()
    if values.size == 0:
        raise ValueError("the mask selects no voxel")
    p_lo, p_hi = (float(v) for v in np.percentile(values, [lower, upper]))
    return p_lo, p_hi


def scale_percentiles_in_mask(
    image: np.ndarray, mask: np.ndarray | None, lower: float = 0.5, upper: float = 99.5, clip: bool = True
) -> tuple[np.ndarray, float, float]:
    """(image - p_lo) / (p_hi - p_lo), percentiles taken inside ``mask``; returns (scaled, p_lo, p_hi)."""
    p_lo, p_hi = percentile_range(image, mask, lower, upper)
    return scale_to_range(image, p_lo, p_hi, clip).astype(np.float32), p_lo, p_hi


def display_range(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    lower: float = 0.5,
    upper: float = 99.5,
    include_zero: bool = True,
) -> tuple[float, float]:
    """Grey levels ``(vmin, vmax)`` of a figure: the ``lower`` / ``upper`` percentiles inside ``mask`` (the
    whole image when the mask is None or empty), robust to single hot voxels; ``vmin`` is at most 0 with
    ``include_zero`` (a background at 0 stays black), and ``vmax > vmin``."""
    image = np.asarray(image)
    inside = None if mask is None else np.asarray(mask) > 0  # a 0/1 mask of any dtype selects voxels
    values = image[inside] if inside is not None and inside.any() else image.ravel()
    lo, hi = (float(v) for v in np.percentile(values, [lower, upper]))
    lo = min(lo, 0.0) if include_zero else lo
    return lo, (hi if hi > lo else lo + 1.0)
