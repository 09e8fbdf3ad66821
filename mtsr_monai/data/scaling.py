"""The training intensity scaling of volumes: robust percentiles of the foreground mapped to [0, 1].

Without MONAI imports, so that inference paths needing only the scaling start fast; re-exported by
:mod:`mtsr_monai.data.slices`.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["robust_range", "robust_scale"]


def robust_range(
    volume: np.ndarray | torch.Tensor, lower: float = 0.5, upper: float = 99.5
) -> tuple[float, float]:
    """``(lo, hi)`` of the training scaling ``(x - lo) / (hi - lo)``: ``hi`` is the ``upper`` percentile of
    the foreground, ``lo`` is 0 for magnitude images (also with zero-mean noise), else the ``lower``
    percentile.

    The foreground is the non-zero voxels when the background is exactly zero (skull-stripped data), else the
    voxels above an Otsu threshold: the head, not the air around it. So a low-resolution input with a noisy
    background (a real acquisition, or the training degradation, which adds Rician noise everywhere) gets
    the scaling its clean, skull-stripped counterpart had in training; percentiles over all voxels would
    depend on how much air the field of view holds. Returned as numbers so outputs can be mapped back.
    """
    x = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    x_min = float(x.min())
    if x_min == 0.0 and bool((x == 0).any()):
        fg = x[x != 0] if (x != 0).any() else x.ravel()
    else:
        from skimage.filters import threshold_otsu

        flat = x.ravel()
        sample = flat[:: max(1, flat.size // 1_000_000)]  # ~1e6 voxels decide the threshold
        fg = flat[flat > threshold_otsu(sample)] if np.ptp(sample) > 0 else flat
        fg = fg if fg.size else flat
    hi = float(np.percentile(fg, upper))
    # magnitude images (air at 0, noise of either sign around it: the median voxel is air) keep lo = 0, as in
    # training; genuinely signed images (e.g. z-scored: the median voxel is well below 0) take a percentile
    magnitude = x_min >= 0.0 or float(np.median(x)) >= -0.05 * abs(hi)
    lo = 0.0 if magnitude else float(np.percentile(x, lower))
    return lo, (hi if hi > lo else lo + 1.0)


def robust_scale(
    volume: torch.Tensor, lower: float = 0.5, upper: float = 99.5, clip: bool = True
) -> torch.Tensor:
    """Scale to [0, 1] by :func:`robust_range`, clipped unless ``clip=False``."""
    lo, hi = robust_range(volume, lower, upper)
    out = (torch.as_tensor(volume, dtype=torch.float32) - lo) / (hi - lo)
    return out.clamp(0.0, 1.0) if clip else out
