"""Spatial and volumetric agreement between binary masks (tissue classes, hyperintensities, tumour).

Overlap of a test mask P against a reference mask R (TP = |P n R|, FP = |P \\ R|, FN = |R \\ P|,
TN = voxels in neither, counted inside ``within`` when given, else the whole grid):

- Dice = 2 TP / (2 TP + FP + FN);  Jaccard = TP / (TP + FP + FN)
- TPF (true-positive fraction, sensitivity) = TP / (TP + FN)
- PPV (positive predictive value, precision) = TP / (TP + FP)
- TNF (true-negative fraction, specificity) = TN / (TN + FP)

Undefined ratios (0 / 0) are None; Dice and Jaccard of two empty masks are 1.

Volumes are voxel counts times the voxel volume from the affine, in ml (1 ml = 1000 mm^3).

Bland-Altman (as the clinical paper's Figure 10): for paired volumes a (method) and b (reference),
x = (a + b) / 2 and d = a - b, or with ``percent=True`` d = 100 (a - b) / x; bias = mean(d), limits
of agreement = bias -+ 1.96 sd(d) (sd with n - 1). Its figure is drawn in reporting
(:func:`mtsr_monai.reporting.agreement.bland_altman_plot`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num / den)


def overlap_metrics(
    pred: np.ndarray, ref: np.ndarray, within: np.ndarray | None = None
) -> dict[str, float | None]:
    """Dice, Jaccard, TPF, PPV and TNF of ``pred`` against ``ref`` (see the module docstring)."""
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    if p.shape != r.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {r.shape}")
    if within is not None:
        w = np.asarray(within, bool)
        p, r = p[w], r[w]
    tp = float(np.count_nonzero(p & r))
    fp = float(np.count_nonzero(p & ~r))
    fn = float(np.count_nonzero(~p & r))
    tn = float(p.size) - tp - fp - fn
    both_empty = tp + fp + fn == 0
    return {
        "dice": 1.0 if both_empty else _ratio(2 * tp, 2 * tp + fp + fn),
        "jaccard": 1.0 if both_empty else _ratio(tp, tp + fp + fn),
        "tpf": _ratio(tp, tp + fn),
        "ppv": _ratio(tp, tp + fp),
        "tnf": _ratio(tn, tn + fp),
    }


def voxel_volume_ml(affine: np.ndarray | None = None, spacing: Sequence[float] | None = None) -> float:
    """Volume of one voxel in ml, from a 4x4 affine (|det| of its 3x3 part) or from voxel sizes in mm."""
    if affine is not None:
        return abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0
    if spacing is not None:
        return float(np.prod(spacing)) / 1000.0
    raise ValueError("give an affine or voxel sizes")


def volume_ml(
    mask: np.ndarray, affine: np.ndarray | None = None, spacing: Sequence[float] | None = None
) -> float:
    """Volume of a binary mask in ml."""
    return float(np.count_nonzero(mask)) * voxel_volume_ml(affine, spacing)


def bland_altman(method: Sequence[float], reference: Sequence[float], percent: bool = True) -> dict:
    """Bland-Altman statistics of paired measurements: mean, difference, bias, limits of agreement."""
    a, b = np.asarray(method, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("bland_altman needs two 1D sequences of the same length")
    mean = (a + b) / 2.0
    diff = a - b
    if percent:
        with np.errstate(divide="ignore", invalid="ignore"):
            diff = np.where(mean != 0, 100.0 * diff / mean, np.nan)
    ok = np.isfinite(diff)
    n = int(ok.sum())
    bias = float(diff[ok].mean()) if n else None
    sd = float(diff[ok].std(ddof=1)) if n > 1 else None
    return {
        "mean": mean.tolist(),
        "difference": [None if not np.isfinite(v) else float(v) for v in diff],
        "bias": bias,
        "sd": sd,
        "loa_low": None if sd is None else bias - 1.96 * sd,
        "loa_high": None if sd is None else bias + 1.96 * sd,
        "n": n,
        "percent": percent,
    }
