"""Where the object is in a scan, from its intensities alone: its object voxels (the rule of the training
scaling), the head (Otsu), whether the scan is skull-stripped, the level under which a voxel is background,
and the image's own smoothness (FWHM).

Used by the QC metrics (:mod:`mtsr_monai.metrics.qc`, whose module docstring gives the rules) and, below
them, by the registration (a skull-stripped reference is registered to the brain-only template) and the
inference commands (a translation model fed a head with its skull).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: background level as a fraction of the image's 99th percentile of non-zero magnitudes
NEAR_ZERO = 1e-3


def fwhm(
    image: np.ndarray, mask: np.ndarray | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> dict:
    """Per-axis FWHM (mm), AFNI classic estimator: keys ``fwhm_x``, ``fwhm_y``, ``fwhm_z``, ``fwhm_avg``."""
    image = np.asarray(image, dtype=np.float64)
    mask = np.ones(image.shape, bool) if mask is None else np.asarray(mask, bool)
    var_x = float(image[mask].var())
    out: dict[str, float | None] = {}
    for axis, name in enumerate("xyz"):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        pair = mask[tuple(lo)] & mask[tuple(hi)]  # both neighbours inside the mask
        diffs = (image[tuple(hi)] - image[tuple(lo)])[pair]
        value = None
        if diffs.size > 1 and var_x > 0:
            rho = 1.0 - float(diffs.var()) / (2.0 * var_x)  # lag-1 autocorrelation
            if 0.0 < rho < 1.0:
                value = math.sqrt(-2.0 * math.log(2.0) / math.log(rho)) * float(spacing[axis])
        out[f"fwhm_{name}"] = value
    axes = [v for v in out.values() if v is not None]
    out["fwhm_avg"] = float(np.mean(axes)) if len(axes) == 3 else None
    return out


#: the share of exact zeros above which a scan counts as skull-stripped (its non-zero voxels are the object):
#: a brain cropped to its box is about half zeros; a raw scan's zero padding (a few %) is no background
SKULL_STRIPPED_ZERO_SHARE = 0.2


def object_mask(x: np.ndarray, min_zero_share: float = SKULL_STRIPPED_ZERO_SHARE) -> np.ndarray:
    """The scan's object voxels, the rule of the networks' training scaling: non-zero where the background
    is exactly 0 (a skull-stripped scan: minimum 0, and more than ``min_zero_share`` of the voxels at 0),
    else above Otsu's threshold of about a million of its voxels (the head, not the air; all voxels for a
    flat image)."""
    x = np.asarray(x)
    if float(x.min()) == 0.0:  # then some voxel is 0: is there enough exact background?
        background = x == 0
        if float(background.mean()) > min_zero_share:
            return ~background
    sample = x.ravel()[:: max(1, x.size // 1_000_000)]
    if not np.ptp(sample) > 0:
        return np.ones(x.shape, bool)
    # lazy: skimage costs about 1 s to import, and skull-stripped scans (the common case) never need it
    from skimage.filters import threshold_otsu

    return x > threshold_otsu(sample)


def otsu_threshold(values: np.ndarray, classes: int = 2) -> float:
    """Otsu threshold of intensities clipped to their 0.1-99.9th percentiles (the lowest of ``classes``
    classes' thresholds).

    Otsu works on a 256-bin histogram over [min, max]: a few +-32767 voxels of an int16 scan would put
    the whole head into one or two bins; clipping keeps the histogram on the tissue.
    """
    from skimage.filters import threshold_multiotsu, threshold_otsu

    values = np.asarray(values, dtype=np.float64)
    lo, hi = np.percentile(values, [0.1, 99.9])
    if hi > lo:
        values = np.clip(values, lo, hi)
    if classes == 2:
        return float(threshold_otsu(values))
    return float(threshold_multiotsu(values, classes)[0])


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a boolean mask (the mask itself when it has one or none)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def head_mask(image: np.ndarray, classes: int = 2) -> np.ndarray:
    """Otsu threshold, largest connected component, holes filled. ``classes=3`` thresholds at the lower of
    three Otsu classes instead: a FLAIR's dim scalp and skull then count as head (with two, the head of a
    clinical FLAIR is little more than its brain; T1 and T2 heads grow by 2-8 %)."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    threshold = otsu_threshold(image[::2, ::2, ::2].ravel(), classes)
    fg = image > threshold
    if threshold < 0 and float(np.mean(image == 0)) > SKULL_STRIPPED_ZERO_SHARE:
        fg = image != 0  # a zero background amid the intensities (a z-scored stripped brain): not head
    return ndimage.binary_fill_holes(largest_component(fg))


def is_skull_stripped(image: np.ndarray, head: np.ndarray | None = None) -> bool:
    """True for a skull-stripped image, blurred or not (rules in :mod:`mtsr_monai.metrics.qc`'s docstring).

    The exact-zero rule alone misses a stripped image that was blurred or resampled afterwards: its brain
    edge leaks a smooth halo into the background, which would then be taken for air. The halo reaches
    about one FWHM of the image's own smoothness, so the second rule looks beyond it, where a stripped
    image is empty and an unstripped one still holds air noise (or, with a scanner-masked background,
    a noise band wider than the image's FWHM).
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    head = head_mask(image) if head is None else np.asarray(head, bool)
    outside = ~head
    if not outside.any():
        return False
    # near zero, not exactly: a cubic-spline resampling leaves residues of 1e-20 where the background was
    level = near_zero_level(image)
    zero_fraction = float(np.mean(np.abs(image[outside]) <= level))
    if zero_fraction >= 0.95:
        return True
    if zero_fraction < 0.5:  # air noise nearly everywhere: clearly not stripped, skip the costly rule
        return False
    widths = fwhm(image, head)
    scale = [widths[f"fwhm_{a}"] or 1.0 for a in "xyz"]  # in voxels (unit spacing)
    beyond = ndimage.distance_transform_edt(outside, sampling=[1.0 / max(w, 1.0) for w in scale]) > 1.0
    if beyond.sum() < 100:
        return False
    return bool(np.mean(np.abs(image[beyond]) <= level) >= 0.99)


def near_zero_level(image: np.ndarray) -> float:
    """|x| at or under which a voxel counts as background: :data:`NEAR_ZERO` of the 99th percentile of the
    non-zero magnitudes (the tails of a blurred brain's edge stay out)."""
    nonzero = np.abs(image[image != 0])
    return NEAR_ZERO * float(np.percentile(nonzero, 99)) if nonzero.size else 0.0
