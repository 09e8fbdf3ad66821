"""Image-fidelity metrics: PSNR, SSIM, MAE, NMSE, over the whole image and inside a brain mask.

Conventions (stated once, used everywhere):

* ``data_range`` defaults to ``ref.max() - ref.min()`` over the whole reference image, also for masked values,
  so whole-image and brain PSNR / SSIM share one scale.
* PSNR = 10 log10(data_range^2 / MSE); identical images give ``inf``.
* SSIM: Gaussian window of 11 taps, sigma 1.5, K1 0.01, K2 0.03, population (not sample) covariance, reflect
  padding; the unmasked SSIM is the mean of the SSIM map without its 5-voxel border (as scikit-image), the
  masked SSIM the mean of the map inside the mask. 3D by default, or 2D slice by slice along ``axis``.
* NMSE = sum((pred - ref)^2) / sum(ref^2) (conventional). ``nmse_clinical_code`` is
  mean((pred - ref)^2) / sum(ref^2), what the clinical paper's code computes: it equals NMSE / N for N voxels,
  hence that paper's values around 1e-10.
* MAE = mean |pred - ref|, in the images' own units.

``batch_psnr`` / ``batch_ssim`` are MONAI's PSNR / SSIM on torch tensors (B, C, H, W), per item.
``foreground_psnr_metric``'s mean over items leaves out the items without foreground (NaN) and, with a
warning, those equal to their reference (``inf``; unless every item is), so that one perfect item, such as a
slice with a few saturated brain voxels, does not make the mean ``inf`` and the best-checkpoint choice void.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from mtsr_monai.transforms.foreground import is_skull_stripped

if TYPE_CHECKING:
    import torch
    from monai.metrics import CumulativeIterationMetric

logger = logging.getLogger(__name__)

WIN_SIZE, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03
_TRUNCATE = 3.5  # scipy/skimage truncation giving an 11-tap window for sigma 1.5: int(3.5 * 1.5 + 0.5) = 5


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    m = _np(mask) > 0
    if m.shape != shape:
        raise ValueError(f"mask shape {m.shape} != image shape {shape}")
    if not m.any():
        raise ValueError("the mask is empty")
    return m


def _pair(pred: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    p, r = _np(pred), _np(ref)
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {p.shape} != reference shape {r.shape}")
    return p, r


def default_data_range(ref: Any) -> float:
    """``ref.max() - ref.min()`` over the whole reference (1.0 if the reference is constant)."""
    r = _np(ref)
    span = float(r.max() - r.min())
    return span if span > 0 else 1.0


def mse(pred: Any, ref: Any, mask: Any = None) -> float:
    """Mean squared error of ``pred`` against ``ref`` (inside ``mask`` when given)."""
    p, r = _pair(pred, ref)
    m = _mask(mask, r.shape)
    d = (p - r) ** 2
    return float(d[m].mean() if m is not None else d.mean())


def mae(pred: Any, ref: Any, mask: Any = None) -> float:
    """Mean absolute error, inside ``mask`` when given."""
    p, r = _pair(pred, ref)
    m = _mask(mask, r.shape)
    d = np.abs(p - r)
    return float(d[m].mean() if m is not None else d.mean())


def psnr(pred: Any, ref: Any, mask: Any = None, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` for identical images)."""
    err = mse(pred, ref, mask)
    rng = default_data_range(ref) if data_range is None else float(data_range)
    return math.inf if err == 0 else float(10.0 * math.log10(rng**2 / err))


def _nmse_sums(pred: Any, ref: Any, mask: Any) -> tuple[float, float, int]:
    """``(sum (pred - ref)^2, sum ref^2, voxels)``, inside ``mask`` when given."""
    p, r = _pair(pred, ref)
    m = _mask(mask, r.shape)
    if m is not None:
        p, r = p[m], r[m]
    return float(((p - r) ** 2).sum()), float((r**2).sum()), int(r.size)


def nmse(pred: Any, ref: Any, mask: Any = None) -> float:
    """Conventional normalised MSE: sum((pred - ref)^2) / sum(ref^2)."""
    err, den, _ = _nmse_sums(pred, ref, mask)
    return err / den if den > 0 else math.inf


def nmse_clinical_code(pred: Any, ref: Any, mask: Any = None) -> float:
    """The clinical paper's code: mean((pred - ref)^2) / sum(ref^2) = NMSE / N (a mean over a sum)."""
    err, den, n = _nmse_sums(pred, ref, mask)
    return err / n / den if den > 0 else math.inf


def ssim_map(pred: Any, ref: Any, data_range: float | None = None) -> np.ndarray:
    """The SSIM map (same shape as the images; 2D or 3D), Gaussian window 11 / sigma 1.5, reflect padding.

    Equal to scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, full=True)`` map where that runs; written out because scikit-image refuses
    an image thinner than its window along any axis (a volume of a few thick slices)."""
    from scipy.ndimage import gaussian_filter

    p, r = _pair(pred, ref)
    rng = default_data_range(r) if data_range is None else float(data_range)
    c1, c2 = (K1 * rng) ** 2, (K2 * rng) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return gaussian_filter(x, sigma=SIGMA, truncate=_TRUNCATE, mode="reflect")

    mu_p, mu_r = blur(p), blur(r)
    var_p = blur(p * p) - mu_p**2
    var_r = blur(r * r) - mu_r**2
    cov = blur(p * r) - mu_p * mu_r
    num = (2 * mu_p * mu_r + c1) * (2 * cov + c2)
    den = (mu_p**2 + mu_r**2 + c1) * (var_p + var_r + c2)
    return num / den


def _interior(shape: tuple[int, ...]) -> tuple[slice, ...]:
    pad = (WIN_SIZE - 1) // 2
    return tuple(slice(pad, n - pad) if n > 2 * pad else slice(None) for n in shape)


def ssim(
    pred: Any, ref: Any, mask: Any = None, data_range: float | None = None, axis: int | None = None
) -> float:
    """Structural similarity; 3D for a volume, or the mean of 2D slice SSIMs along ``axis``.

    Without a mask: mean of the map without the 5-voxel border (scikit-image), with a mask: mean of
    the map inside the mask (slice-wise: over all masked pixels of all slices).
    """
    p, r = _pair(pred, ref)
    m = _mask(mask, r.shape)
    rng = default_data_range(r) if data_range is None else float(data_range)
    if axis is None:
        smap = ssim_map(p, r, rng)
        return float(smap[m].mean() if m is not None else smap[_interior(smap.shape)].mean())
    p, r = np.moveaxis(p, axis, 0), np.moveaxis(r, axis, 0)
    ms = np.moveaxis(m, axis, 0) if m is not None else None
    total, count = 0.0, 0
    for k in range(p.shape[0]):
        if ms is not None and not ms[k].any():
            continue
        smap = ssim_map(p[k], r[k], rng)
        if ms is not None:
            total, count = total + float(smap[ms[k]].sum()), count + int(ms[k].sum())
        else:
            total, count = total + float(smap[_interior(smap.shape)].mean()), count + 1
    return total / count


def has_zero_background(ref: Any, min_fraction: float = 0.01) -> bool:
    """True when the reference has an exactly-zero background: skull-stripped, or a raw scan whose
    scanner masked its air (:func:`brain_of` tells them apart)."""
    r = _np(ref)
    return float(r.min()) == 0.0 and float((r == 0).mean()) >= min_fraction


def brain_of(ref: Any) -> np.ndarray | None:
    """``ref > 0`` where the reference is skull-stripped (exact-zero background and
    :func:`~mtsr_monai.transforms.foreground.is_skull_stripped`), else None: a raw scan's non-zero voxels
    are its head and air, not its brain."""
    r = _np(ref)
    return r > 0 if has_zero_background(r) and is_skull_stripped(r) else None


def image_metrics(
    pred: Any,
    ref: Any,
    mask: Any = None,
    data_range: float | None = None,
    auto_mask: bool = True,
    ssim_axis: int | None = None,
) -> dict:
    """PSNR, SSIM, MAE, NMSE (+ the clinical code's NMSE) over the whole image and over the brain.

    The brain is ``mask`` when given, else ``ref > 0`` when ``auto_mask`` and the reference is
    skull-stripped (:func:`brain_of`), else none (``"brain": None``).
    """
    p, r = _pair(pred, ref)
    rng = default_data_range(r) if data_range is None else float(data_range)
    if mask is not None:
        m, source = _mask(mask, r.shape), "given"
    else:
        m = brain_of(r) if auto_mask else None
        source = None if m is None else "ref > 0"

    def block(mk: np.ndarray | None) -> dict:
        return {
            "psnr": psnr(p, r, mk, rng),
            "ssim": ssim(p, r, mk, rng, axis=ssim_axis),
            "mae": mae(p, r, mk),
            "mse": mse(p, r, mk),
            "nmse": nmse(p, r, mk),
            "nmse_clinical_code": nmse_clinical_code(p, r, mk),
            "voxels": int(r.size if mk is None else mk.sum()),
        }

    return {
        "data_range": rng,
        "ssim_mode": "3d" if ssim_axis is None else f"2d slices along array axis {ssim_axis}",
        "mask": source,
        "whole": block(None),
        "brain": block(m) if m is not None else None,
    }


# ---------------------------------------------------------------------------------------------------------
# torch, (B, C, H, W) batches: validation inside training engines


def batch_psnr(pred: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR per batch item (B,), over all channels and pixels (MONAI's ``PSNRMetric``); ``inf`` where an
    item is identical."""
    from monai.metrics import PSNRMetric

    return PSNRMetric(max_val=float(data_range))(pred.float(), ref.float())[:, 0]


def batch_ssim(pred: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM per item (B,) of (B, C, H, W) images, channels averaged, over valid (border-free) positions,
    which equals scikit-image's cropped mean: MONAI's ``compute_ssim_and_cs`` (what ``SSIMMetric`` runs, here
    without its detach, so the score also serves as a loss). Images must be at least 11x11."""
    import torch
    from monai.metrics.regression import compute_ssim_and_cs

    h, w = pred.shape[-2:]
    if h < WIN_SIZE or w < WIN_SIZE:
        raise ValueError(f"batch_ssim needs images of at least {WIN_SIZE}x{WIN_SIZE}, got {h}x{w}")
    # fp32 even inside a bf16 / fp16 autocast region (a training loss): E[x^2] - E[x]^2 cancels
    # catastrophically in bf16, the variances turn negative and SSIM becomes inf
    with torch.autocast(device_type=pred.device.type, enabled=False):
        smap, _ = compute_ssim_and_cs(
            pred.float(), ref.float(), 2, [WIN_SIZE] * 2, [SIGMA] * 2, float(data_range), "gaussian", K1, K2
        )
    return smap.flatten(1).mean(1)


def foreground_psnr(pred: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR per batch item (B, 1) over the reference's foreground (``ref > 0``: the brain of a skull-stripped
    slice), the region the SR benchmarks score; items without foreground give NaN, items equal to their
    reference over it ``inf`` (as :func:`psnr` and :func:`batch_psnr`)."""
    import torch

    fg = (ref > 0).flatten(1).float()
    err = (((pred.float() - ref.float()) ** 2).flatten(1) * fg).sum(1) / fg.sum(1)
    return (10.0 * torch.log10(torch.as_tensor(float(data_range) ** 2, device=err.device) / err))[:, None]


def _finite_psnr_values(values: torch.Tensor) -> torch.Tensor:
    """Per-item PSNRs ready for a NaN-skipping mean: the ``inf`` items (equal to their reference) set to NaN,
    with a warning, unless every item with a value is ``inf`` (then the mean is ``inf``: all are perfect)."""
    import torch

    perfect = torch.isposinf(values)
    scored = ~torch.isnan(values)
    if not perfect.any() or bool(perfect[scored].all()):
        return values
    logger.warning(
        "PSNR: %d of %d items equal their reference (infinite PSNR); the mean is over the other items",
        int(perfect.sum()),
        int(scored.sum()),
    )
    return values.masked_fill(perfect, float("nan"))


def foreground_psnr_metric(data_range: float = 1.0) -> CumulativeIterationMetric:
    """A MONAI ``CumulativeIterationMetric`` of :func:`foreground_psnr` (for ``IgniteMetricHandler``): the
    mean over the items with foreground, less those equal to their reference (:func:`_finite_psnr_values`)."""
    from monai.metrics import CumulativeIterationMetric
    from monai.metrics.utils import do_metric_reduction

    class ForegroundPSNRMetric(CumulativeIterationMetric):
        def _compute_tensor(self, y_pred, y=None):
            return foreground_psnr(y_pred, y, data_range)

        def aggregate(self):
            value, _ = do_metric_reduction(_finite_psnr_values(self.get_buffer()), "mean")
            return value

    return ForegroundPSNRMetric()
