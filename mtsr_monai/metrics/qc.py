"""No-reference image-quality metrics (IQMs) of structural MRI, computed the MRIQC way by default.

Every function takes a 3D numpy array (or anything ``np.asarray`` accepts) and boolean masks of the
same shape. Tissue masks come from a label map with 1 = CSF, 2 = GM, 3 = WM (FSL FAST / MRIQC
convention), e.g. from :func:`mtsr_monai.metrics.segmentation.segment_tissues`.

Formulas (``variant="mriqc"`` is the default, ``variant="paper"`` follows the clinical SR paper,
Section 3.8.1). MAD is the *normalised* median absolute deviation, median(|x - median(x)|) / 0.6745, a
consistent estimator of the sd of Gaussian data (statsmodels' ``mad()``, which MRIQC uses):

- CJV  (mriqc) = (MAD_WM + MAD_GM) / |median_WM - median_GM|
  CJV  (paper) = (sd_WM + sd_GM) / |mean_WM - mean_GM|
- EFC  (mriqc) = (1 / E_max) * sum_i (x_i / B) ln((x_i + 1e-16) / B), B = sqrt(sum_i x_i^2),
  E_max = sqrt(N) ln(1 / sqrt(N)), over all N voxels of the image (negatives clipped to 0); in [0, 1]
  EFC  (paper) = sum_i (x_i / B) ln(x_i / B), the same sum without the 1 / E_max normalisation (<= 0)
- FBER = median(x^2 in the head) / median(x^2 in the background), background = outside the head mask
  and non-zero (zero padding is left out, as MRIQC's rotation mask does); None on skull-stripped images
- WM2max (mriqc) = median_WM / P99.95(image);  (paper) = median_WM / P95(image)
- FWHM: our own estimator, not AFNI's 3dFWHMx (which MRIQC runs and which cannot be installed here).
  Per array axis, on the brain mask: FWHM_a = sqrt(-2 ln 2 / ln(1 - var(d_a x) / (2 var(x)))) *
  voxel_size_a [mm], where d_a x are the first differences along axis a between neighbours that are both
  in the mask and var(x) is taken over the mask (Forman et al. 1995, AFNI's "classic" formula, without
  3dFWHMx's detrending); ``fwhm_avg`` is the mean of the three axes. It assumes the image is smoothed
  white noise (Gaussian autocorrelation), so on an anatomical image it measures the width of the
  lag-1 autocorrelation of the whole signal, anatomy included; None when that correlation is <= 0 or >= 1.
  MRIQC reports 3dFWHMx's values in voxels; ours are in mm.
- SNR per tissue t = median_t / (sd_t * sqrt(n_t / (n_t - 1)));  ``snr_total`` = mean over CSF, GM, WM
- SNR Dietrich per tissue t = sqrt((4 - pi) / 2) * median_t / s_air (Rayleigh-distributed air noise),
  s_air = MAD of the air when it exceeds 1 intensity unit, else its sd (MRIQC's rule; the paper variant
  always uses the sd); only when there is an air region with signal, else None
- CNR = |median_WM - median_GM| / sqrt(sd_air^2 + sd_WM^2 + sd_GM^2) (sd_air = 0 when there is no air)
- tissue summaries ``summary_{csf,gm,wm}_{mean,sd,median,mad,p05,p95,n}`` and ratios
  ``ratio_wm_gm_{s}`` = s(WM) / s(GM) and ``ratio_csf_wmgm_{s}`` = s(CSF) / s(WM u GM), s in mean, sd,
  p05, p95 (the paper's "mean WM / mean GM, mean CSF / mean (WM+GM), sd WM / sd GM, ...").

Masks when none is given (:func:`is_skull_stripped`, :func:`default_brain_mask`, :func:`air_mask`):

- head: Otsu threshold (on intensities clipped to their 0.1-99.9th percentiles, so a few outlier voxels
  such as +-32767 in an int16 scan cannot move it), largest connected component, holes filled.
- skull-stripped: the image is taken as skull-stripped when >= 95% of the voxels outside the head are
  exactly 0, or, for a blurred or resampled stripped image whose brain edge leaks a smooth halo into the
  background, when >= 99% of the voxels farther than one FWHM (per axis) from the head are near zero
  (|x| <= 1e-3 of the 99th percentile); the brain is then ``image > 0`` (holes filled); otherwise the head
  mask (a *head* mask on unstripped scans: give ``--mask`` there).
- air: voxels below the Otsu threshold, outside the head dilated by ``margin`` voxels (keeps ghosting
  and the scalp's partial volume out), and non-zero (zero padding is not noise). On skull-stripped
  images there is none: ``air_voxels`` = 0, ``sd_air`` = 0, ``snrd_*`` = ``fber`` = None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mtsr_monai.metrics.segmentation import segment_tissues
from mtsr_monai.transforms.foreground import (  # noqa: F401 (head_mask, is_skull_stripped: public here too)
    fwhm,
    head_mask,
    is_skull_stripped,
    near_zero_level,
    otsu_threshold,
)

LABELS = {"csf": 1, "gm": 2, "wm": 3}
VARIANTS = ("mriqc", "paper")
DIETRICH = math.sqrt((4.0 - math.pi) / 2.0)  # sd of Rayleigh noise / sigma of the underlying Gaussian
#: the standard normal's 0.75 quantile: MAD / MAD_NORMAL estimates the sd of Gaussian data
MAD_NORMAL = 0.6744897501960817
SUMMARY_STATS = ("mean", "sd", "p05", "p95")


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown IQM variant {variant!r}; choose from {VARIANTS}")


def _mad(values: np.ndarray) -> float:
    """Normalised median absolute deviation (statsmodels' ``mad``): an sd estimate robust to outliers."""
    return float(np.median(np.abs(values - np.median(values)))) / MAD_NORMAL


def _safe_div(num: float, den: float) -> float | None:
    if den == 0 or not np.isfinite(den) or not np.isfinite(num):
        return None
    return float(num / den)


def cjv(image: np.ndarray, wm: np.ndarray, gm: np.ndarray, variant: str = "mriqc") -> float | None:
    """Coefficient of joint variation of WM and GM (lower is better); see the module docstring."""
    _check_variant(variant)
    image = np.asarray(image, dtype=np.float64)
    w, g = image[np.asarray(wm, bool)], image[np.asarray(gm, bool)]
    if w.size < 2 or g.size < 2:
        return None
    if variant == "mriqc":
        return _safe_div(_mad(w) + _mad(g), abs(np.median(w) - np.median(g)))
    return _safe_div(w.std() + g.std(), abs(w.mean() - g.mean()))


def efc(image: np.ndarray, variant: str = "mriqc") -> float:
    """Entropy focus criterion over the whole image (MRIQC: normalised to [0, 1]; lower is sharper)."""
    _check_variant(variant)
    x = np.clip(np.asarray(image, dtype=np.float64).ravel(), 0.0, None)
    n = x.size
    b = math.sqrt(float(np.dot(x, x)))
    if b == 0:
        return float("nan")
    total = float(np.sum((x / b) * np.log((x + 1e-16) / b)))
    if variant == "paper":
        return total
    e_max = math.sqrt(n) * math.log(1.0 / math.sqrt(n))
    return total / e_max


def wm2max(image: np.ndarray, wm: np.ndarray, variant: str = "mriqc") -> float | None:
    """Median WM intensity over the 99.95th (mriqc) or 95th (paper) percentile of the whole image."""
    _check_variant(variant)
    image = np.asarray(image, dtype=np.float64)
    w = image[np.asarray(wm, bool)]
    if w.size == 0:
        return None
    top = float(np.percentile(image, 99.95 if variant == "mriqc" else 95.0))
    return _safe_div(float(np.median(w)), top)


def snr(values: np.ndarray) -> float | None:
    """MRIQC's per-tissue SNR: median / (sd * sqrt(n / (n - 1)))."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n < 2:
        return None
    return _safe_div(float(np.median(values)), float(values.std()) * math.sqrt(n / (n - 1.0)))


def cnr(image: np.ndarray, wm: np.ndarray, gm: np.ndarray, sd_air: float = 0.0) -> float | None:
    """|median_WM - median_GM| / sqrt(sd_air^2 + sd_WM^2 + sd_GM^2)."""
    image = np.asarray(image, dtype=np.float64)
    w, g = image[np.asarray(wm, bool)], image[np.asarray(gm, bool)]
    if w.size < 2 or g.size < 2:
        return None
    return _safe_div(abs(float(np.median(w) - np.median(g))), math.sqrt(sd_air**2 + w.var() + g.var()))


def tissue_summaries(image: np.ndarray, tissues: np.ndarray) -> dict:
    """Mean, sd, median, MAD, 5th and 95th percentiles and voxel count of CSF, GM, WM, and their ratios."""
    image = np.asarray(image, dtype=np.float64)
    tissues = np.asarray(tissues)
    out: dict[str, float | int | None] = {}
    stats: dict[str, dict[str, float]] = {}

    def describe(v: np.ndarray) -> dict[str, float]:
        if v.size == 0:
            return {k: float("nan") for k in ("mean", "sd", "median", "mad", "p05", "p95")}
        p05, p95 = np.percentile(v, [5, 95])
        return {
            "mean": float(v.mean()),
            "sd": float(v.std()),
            "median": float(np.median(v)),
            "mad": _mad(v),
            "p05": float(p05),
            "p95": float(p95),
        }

    for name, label in LABELS.items():
        v = image[tissues == label]
        stats[name] = describe(v)
        for k, val in stats[name].items():
            out[f"summary_{name}_{k}"] = val if np.isfinite(val) else None
        out[f"summary_{name}_n"] = int(v.size)
    stats["wmgm"] = describe(image[(tissues == LABELS["wm"]) | (tissues == LABELS["gm"])])
    for s in SUMMARY_STATS:
        out[f"ratio_wm_gm_{s}"] = _safe_div(stats["wm"][s], stats["gm"][s])
        out[f"ratio_csf_wmgm_{s}"] = _safe_div(stats["csf"][s], stats["wmgm"][s])
    return out


def default_brain_mask(image: np.ndarray) -> np.ndarray:
    """The non-background voxels (holes filled) of a skull-stripped image, else the Otsu head mask.

    Background is |x| <= 1e-3 of the 99th percentile, so the tails of a blurred brain's edge stay out.
    """
    return image_masks(image, with_air=False)["brain"]


def image_masks(image: np.ndarray, with_air: bool = True) -> dict[str, Any]:
    """The masks an image's IQMs use, each found once (the skull-stripping test, which may measure the
    FWHM, and the head mask are the costly parts): ``head``, ``skull_stripped``, ``brain``
    (:func:`default_brain_mask`) and, ``with_air``, ``air`` (:func:`air_mask`; none when skull-stripped)."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    head = head_mask(image)
    stripped = is_skull_stripped(image, head)
    # a stripped scan resampled by spline keeps no exact zeros: its ringing tails beyond the brain edge are
    # above the near-zero level, and would be taken for CSF; its Otsu head is its brain
    brain = head
    if stripped and float(np.mean(image[~head] == 0)) >= 0.5:  # |x|: a stripped brain may be z-scored
        brain = ndimage.binary_fill_holes(np.abs(image) > near_zero_level(image))
    masks: dict[str, Any] = {"head": head, "skull_stripped": stripped, "brain": brain}
    if with_air:
        masks["air"] = np.zeros(image.shape, bool) if stripped else air_mask(image, head=head)
    return masks


def air_mask(image: np.ndarray, margin: int = 5, head: np.ndarray | None = None) -> np.ndarray:
    """Background noise region: below Otsu, outside the head (``head`` or :func:`head_mask`) dilated by
    ``margin`` voxels, and non-zero."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    head = head_mask(image) if head is None else np.asarray(head, bool)
    if margin > 0:
        head = ndimage.binary_dilation(head, iterations=margin)
    return ~head & (image < otsu_threshold(image[::2, ::2, ::2].ravel())) & (image != 0)


def fber(image: np.ndarray, head: np.ndarray, background: np.ndarray | None = None) -> float | None:
    """Foreground-background energy ratio: median(x^2) in the head over median(x^2) in the background.

    ``background`` defaults to the non-zero voxels outside ``head``; None when it is empty or holds no
    energy (a skull-stripped image). Higher is better.
    """
    image = np.asarray(image, dtype=np.float64)
    head = np.asarray(head, bool)
    background = (~head & (image != 0)) if background is None else np.asarray(background, bool)
    if not head.any() or not background.any():
        return None
    return _safe_div(float(np.median(image[head] ** 2)), float(np.median(image[background] ** 2)))


def air_noise(values: np.ndarray, variant: str = "mriqc") -> float:
    """Scale of the air noise for Dietrich's SNR: MRIQC uses the MAD when it exceeds 1 intensity unit,
    else the sd (so the choice depends on the intensity scale, as in MRIQC); the paper variant the sd."""
    values = np.asarray(values, dtype=np.float64)
    if variant == "mriqc":
        mad = _mad(values)
        if mad > 1.0:
            return mad
    return float(values.std())


#: the smallest air region (ml) whose intensities count as noise (100 voxels of 1 mm)
MIN_AIR_ML = 0.1


def compute_iqms(
    image: np.ndarray,
    tissues: np.ndarray,
    brain: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    variant: str = "mriqc",
    air: np.ndarray | None = None,
    head: np.ndarray | None = None,
    skull_stripped: bool | None = None,
) -> dict[str, Any]:
    """All IQMs of one image as a flat dict (lower-case keys; None where undefined).

    ``tissues``: label map 1 CSF, 2 GM, 3 WM (other labels ignored); ``brain`` defaults to
    :func:`default_brain_mask` (used by FWHM); ``air`` defaults to :func:`air_mask` (none on a
    skull-stripped image); ``head`` (for FBER) to :func:`head_mask`; ``skull_stripped`` (no FBER) to
    :func:`is_skull_stripped` of this image (:func:`image_masks` gives all four, each found once).
    """
    _check_variant(variant)
    image = np.asarray(image, dtype=np.float64)
    tissues = np.asarray(tissues)
    if tissues.shape != image.shape:
        raise ValueError(f"tissue map shape {tissues.shape} differs from image shape {image.shape}")
    head = head_mask(image) if head is None else np.asarray(head, bool)
    stripped = is_skull_stripped(image, head) if skull_stripped is None else bool(skull_stripped)
    brain = default_brain_mask(image) if brain is None else np.asarray(brain, bool)
    if air is None:  # stray non-zero voxels around a skull-stripped brain are not an air region
        air = np.zeros(image.shape, bool) if stripped else air_mask(image, head=head)
    air = np.asarray(air, bool)
    wm, gm = tissues == LABELS["wm"], tissues == LABELS["gm"]
    out: dict[str, Any] = {"variant": variant}
    out["cjv"] = cjv(image, wm, gm, variant)
    out["efc"] = efc(image, variant)
    out["fber"] = None if stripped else fber(image, head)
    out.update(fwhm(image, brain, spacing))
    out["wm2max"] = wm2max(image, wm, variant)
    air_values = image[air]
    # an air region "with signal": at least MIN_AIR_ML of it (a volume, so that the same region counts on an
    # image and on its x4 resampling alike) and some spread (skull-stripped images have none)
    air_ml = air_values.size * float(np.prod(spacing)) / 1000.0
    has_air = air_ml >= MIN_AIR_ML and air_values.size > 1 and float(air_values.std()) > 0
    sd_air = float(air_values.std()) if has_air else 0.0
    noise_air = air_noise(air_values, variant) if has_air else 0.0
    out["air_voxels"] = int(air_values.size) if has_air else 0
    out["sd_air"] = sd_air
    snrs, snrds = [], []
    for name, label in LABELS.items():
        v = image[tissues == label]
        out[f"snr_{name}"] = snr(v)
        snrs.append(out[f"snr_{name}"])
        out[f"snrd_{name}"] = (
            _safe_div(DIETRICH * float(np.median(v)), noise_air) if has_air and v.size else None
        )
        snrds.append(out[f"snrd_{name}"])
    out["snr_total"] = float(np.mean(snrs)) if all(s is not None for s in snrs) else None
    out["snrd_total"] = float(np.mean(snrds)) if all(s is not None for s in snrds) else None
    out["cnr"] = cnr(image, wm, gm, sd_air)
    out.update(tissue_summaries(image, tissues))
    return out


NUMERIC_KEYS = (
    "cjv",
    "efc",
    "fber",
    "fwhm_x",
    "fwhm_y",
    "fwhm_z",
    "fwhm_avg",
    "wm2max",
    "snr_csf",
    "snr_gm",
    "snr_wm",
    "snr_total",
    "cnr",
)


def iqm_differences(pred: Mapping[str, Any], ref: Mapping[str, Any]) -> dict[str, float | None]:
    """Signed differences ``pred - ref`` of every numeric IQM present in both (the clinical paper's Table 1
    reports their absolute values averaged over subjects)."""
    out: dict[str, float | None] = {}
    for key, value in ref.items():
        other = pred.get(key)
        if isinstance(value, (int, float)) and isinstance(other, (int, float)) and key not in ("air_voxels",):
            out[key] = float(other) - float(value)
        elif key in pred and key != "variant":
            out[key] = None
    return out


_IQM_METRIC_CLASS = None


def __getattr__(name: str):  # PEP 562: build the MONAI subclass on first use, so importing qc stays light
    if name == "IQMMetric":
        return _iqm_metric_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _iqm_metric_class():
    """The ``IQMMetric`` class, defined on first use. Over 60 lines: it holds the class body, which
    subclasses MONAI's metric and so cannot be defined at import time without importing MONAI."""
    global _IQM_METRIC_CLASS
    if _IQM_METRIC_CLASS is not None:
        return _IQM_METRIC_CLASS
    from monai.metrics import CumulativeIterationMetric

    class IQMMetric(CumulativeIterationMetric):
        """MONAI cumulative metric of IQMs for engines (wrap with ``monai.handlers.IgniteMetricHandler``).

        ``y_pred`` and ``y`` are (B, 1, X, Y, Z) tensors. The reference ``y`` is segmented (EM, see
        :func:`~mtsr_monai.metrics.segmentation.segment_tissues`, ordering from ``contrast``) and its tissue
        masks are used for both images, as the clinical paper does; with ``difference=True`` (default) each
        row holds |IQM(y_pred) - IQM(y)| for ``keys``, else IQM(y_pred). ``aggregate()`` returns a dict
        key -> mean over everything seen (NaN-aware).
        """

        def __init__(
            self,
            keys: Sequence[str] = ("cjv", "efc", "fwhm_avg", "wm2max", "cnr", "snr_total"),
            variant: str = "mriqc",
            contrast: str = "t1",
            difference: bool = True,
            spacing: Sequence[float] = (1.0, 1.0, 1.0),
        ) -> None:
            super().__init__()
            _check_variant(variant)
            self.keys, self.variant, self.contrast = tuple(keys), variant, contrast
            self.difference, self.spacing = difference, tuple(spacing)

        def _compute_tensor(self, y_pred, y=None):
            import torch

            if y is None:
                raise ValueError("IQMMetric needs the reference y to segment tissues")
            rows = [
                self._row(y_pred[b, 0].detach().float().cpu().numpy(), y[b, 0].detach().float().cpu().numpy())
                for b in range(y_pred.shape[0])
            ]
            return torch.tensor(rows, dtype=torch.float64)

        def _row(self, pred, ref) -> list[float]:
            """The ``keys`` of one item: IQMs of ``pred`` (or their differences to ``ref``'s) in the
            tissues of ``ref``; NaN where a value is missing."""
            brain = default_brain_mask(ref)
            tissues = segment_tissues(ref, brain, contrasts=(self.contrast,))
            p = compute_iqms(pred, tissues, brain, self.spacing, self.variant)
            if not self.difference:
                return [p[k] if p.get(k) is not None else math.nan for k in self.keys]
            r = compute_iqms(ref, tissues, brain, self.spacing, self.variant)
            return [
                abs(p[k] - r[k]) if p.get(k) is not None and r.get(k) is not None else math.nan
                for k in self.keys
            ]

        def aggregate(self) -> dict[str, float]:  # type: ignore[override]
            import torch

            data = self.get_buffer()
            if not isinstance(data, torch.Tensor) or data.numel() == 0:
                raise ValueError("IQMMetric.aggregate called before any update")
            return {k: float(torch.nanmean(data[:, i])) for i, k in enumerate(self.keys)}

    IQMMetric.__module__ = __name__
    _IQM_METRIC_CLASS = IQMMetric
    return IQMMetric
