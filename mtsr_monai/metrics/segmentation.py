"""Brain tissue segmentation without external tools, and the clinical paper's hyperintensity rule.

:func:`segment_tissues` fits a multispectral Gaussian mixture (full covariance) by expectation-
maximisation to the voxels inside the brain mask (one feature per input contrast, each robustly
standardised by its median and interquartile range) and labels every brain voxel with its most
probable class: 1 CSF, 2 GM, 3 WM (FSL FAST / MRIQC convention) and, with ``n_classes=4``, 4 for a
"pial" class (CSF-parenchyma partial volume, pial layers, vessels: the clinical paper's extra class).

Classes are named by their order of mean intensity on the first contrast (``CONTRAST_ORDER``): T1
CSF < GM < WM; T2 / PD WM < GM < CSF; FLAIR CSF < WM < GM. EM starts from the mean feature vectors of
the equal-count intensity bands of the first contrast and is fitted on at most ``max_fit_voxels``
randomly sampled voxels (then every brain voxel is classified), which keeps a 240x240x155 scan well
under 20 s.

With ``priors`` (array ``(*shape, 3)`` of CSF, GM, WM probabilities, e.g. :func:`template_priors` for
a subject registered to MNI space) the mixing weights become voxel-wise: p(k | x, v) is proportional
to prior_k(v) N(x | mu_k, Sigma_k), with priors mixed 90/10 with a uniform map so lesions the template
does not know can still take any class.

:func:`wmh_mask`: hyperintensities on FLAIR by the clinical paper's rule (Section 3.8.2, after Zhan
et al.): z = (FLAIR - mean) / sd over the brain; candidates z > 1.3 inside ``region`` (default the
brain, pass a WM mask for WMH); the candidate mask is smoothed with a Gaussian (sigma 1 voxel); voxels
whose smoothed value is < 0.1 or whose z-score is < 0.95 are removed; then connected components smaller
than ``min_volume_mm3`` are dropped. The paper's lesion-distribution template and manual editing are
not reproduced. ``presmooth`` (default 0: the paper's rule) first smooths the FLAIR inside the brain with a
Gaussian of that sigma in voxels, so that the rule reads regions rather than texture: the rule then scores
a sharp scan and a blurred one on their lesions, not on how much fine texture survives (the sigma and k of
``scripts/bench_clinical.py``'s fitted rule are chosen on training subjects' 1 mm FLAIR).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mtsr_monai.data.datalist import IMAGE_KEYS, modality_from_name
from mtsr_monai.errors import InputError
from mtsr_monai.io import volume_stem
from mtsr_monai.io.template import template_path

LABELS = {"csf": 1, "gm": 2, "wm": 3, "pial": 4}
CONTRAST_ORDER = {
    "t1": ("csf", "gm", "wm"),
    "t1ce": ("csf", "gm", "wm"),
    "t2": ("wm", "gm", "csf"),
    "pd": ("wm", "gm", "csf"),
    "flair": ("csf", "wm", "gm"),
}
# where the 4th ("pial") class sits in that order: dark in T1, bright in T2 and FLAIR
PIAL_POSITION = {"t1": 1, "t1ce": 1, "t2": 2, "pd": 2, "flair": 3}


@dataclass
class GMMFit:
    """Parameters of a fitted Gaussian mixture (features in standardised units)."""

    means: np.ndarray  # (K, C)
    covariances: np.ndarray  # (K, C, C)
    weights: np.ndarray  # (K,)
    log_likelihood: float
    n_iter: int
    converged: bool


def _log_gaussians(x: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """log N(x | mu_k, Sigma_k) for every sample and class: (N, K)."""
    n, c = x.shape
    out = np.empty((n, means.shape[0]))
    for k in range(means.shape[0]):
        chol = np.linalg.cholesky(covs[k])
        sol = np.linalg.solve(chol, (x - means[k]).T)  # (C, N)
        maha = np.sum(sol**2, axis=0)
        logdet = 2.0 * np.sum(np.log(np.diag(chol)))
        out[:, k] = -0.5 * (maha + logdet + c * np.log(2 * np.pi))
    return out


def _posteriors(log_p: np.ndarray, log_w: np.ndarray) -> tuple[np.ndarray, float]:
    joint = log_p + log_w
    top = joint.max(axis=1, keepdims=True)
    norm = top + np.log(np.exp(joint - top).sum(axis=1, keepdims=True))
    return np.exp(joint - norm), float(norm.sum())


def fit_gmm(
    features: np.ndarray,
    init_means: np.ndarray,
    priors: np.ndarray | None = None,
    max_iter: int = 200,
    tol: float = 1e-6,
    reg: float = 1e-4,
) -> GMMFit:
    """EM for a full-covariance Gaussian mixture. ``features`` (N, C); ``init_means`` (K, C);
    ``priors`` (N, K) voxel-wise mixing weights or None (global weights, estimated)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n, c = x.shape
    means = np.asarray(init_means, dtype=np.float64).reshape(-1, c).copy()
    k = means.shape[0]
    # hard assignment to the nearest initial mean gives the first covariances
    nearest = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    resp = np.eye(k)[nearest]
    weights = np.full(k, 1.0 / k)
    covs = np.empty((k, c, c))
    eye = np.eye(c) * reg
    prev, ll, n_iter, converged = -np.inf, -np.inf, 0, False
    for it in range(1, max_iter + 1):
        n_iter = it
        nk = resp.sum(axis=0) + 1e-10
        means = (resp.T @ x) / nk[:, None]
        for j in range(k):
            d = x - means[j]
            covs[j] = (resp[:, j, None] * d).T @ d / nk[j] + eye
        weights = nk / n
        log_w = np.log(priors + 1e-12) if priors is not None else np.log(weights)[None, :]
        resp, ll = _posteriors(_log_gaussians(x, means, covs), log_w)
        if abs(ll - prev) <= tol * abs(ll):
            converged = True
            break
        prev = ll
    return GMMFit(means, covs, weights, ll, n_iter, converged)


def _standardise(channels: list[np.ndarray], brain: np.ndarray) -> np.ndarray:
    feats = []
    for ch in channels:
        v = ch[brain].astype(np.float64)
        q25, q50, q75 = np.percentile(v, [25, 50, 75])
        feats.append((v - q50) / max(q75 - q25, 1e-6 * max(abs(q50), 1.0)))
    return np.stack(feats, axis=1)


def _class_names(contrast: str, n_classes: int) -> list[str]:
    if contrast not in CONTRAST_ORDER:
        raise ValueError(f"unknown contrast {contrast!r}; choose from {sorted(CONTRAST_ORDER)}")
    names = list(CONTRAST_ORDER[contrast])
    if n_classes == 4:
        names.insert(PIAL_POSITION[contrast], "pial")
    elif n_classes != 3:
        raise ValueError("n_classes must be 3 (CSF, GM, WM) or 4 (+ pial)")
    return names


def _checked_channels(
    images: np.ndarray | Sequence[np.ndarray], brain: np.ndarray, n_classes: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """``(float32 channels, bool brain)``: one 3D image or several, each on the brain mask's grid, and a
    brain large enough for ``n_classes`` classes (ValueError, InputError for the brain, otherwise)."""
    channels = (
        [np.asarray(images, dtype=np.float32)]
        if np.ndim(images) == 3
        else [np.asarray(im, dtype=np.float32) for im in images]
    )
    brain = np.asarray(brain, bool)
    for ch in channels:
        if ch.shape != brain.shape:
            raise ValueError(f"image shape {ch.shape} differs from the brain mask's {brain.shape}")
    if brain.sum() < 10 * n_classes:
        # bad input, not a failure: the CLI answers exit 2 (a tiny --mask, a few-voxel scan)
        raise InputError(f"brain of {int(brain.sum())} voxels: too small to segment into {n_classes} tissues")
    return channels, brain


def segment_tissues(
    images: np.ndarray | Sequence[np.ndarray],
    brain: np.ndarray,
    contrasts: Sequence[str] = ("t1",),
    n_classes: int = 3,
    priors: np.ndarray | None = None,
    max_fit_voxels: int = 200_000,
    seed: int = 0,
    return_posteriors: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Label map (uint8: 0 outside the brain, 1 CSF, 2 GM, 3 WM, 4 pial) from one or more co-registered
    images; see the module docstring. ``contrasts[0]`` names the first image's contrast, which fixes
    the class names. With ``return_posteriors`` also returns the (X, Y, Z, K) posteriors, K in label order."""
    channels, brain = _checked_channels(images, brain, n_classes)
    names = _class_names(contrasts[0], n_classes)
    if priors is not None and n_classes != 3:
        raise ValueError("template priors cover CSF, GM and WM only: use n_classes=3 with priors")
    feats = _standardise(channels, brain)
    n = feats.shape[0]
    rng = np.random.default_rng(seed)
    fit_idx = rng.choice(n, size=max_fit_voxels, replace=False) if n > max_fit_voxels else np.arange(n)
    order = np.argsort(feats[fit_idx, 0], kind="stable")
    bands = np.array_split(fit_idx[order], n_classes)
    init = np.stack([feats[b].mean(axis=0) for b in bands])
    prior_brain = None
    if priors is not None:
        p = np.asarray(priors, dtype=np.float64)[brain]  # (N, 3) in csf, gm, wm order
        p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
        p = 0.9 * p + 0.1 / 3
        # reorder the prior columns into the intensity order of the classes
        prior_brain = p[:, [LABELS[name] - 1 for name in names]]
    fit = fit_gmm(feats[fit_idx], init, None if prior_brain is None else prior_brain[fit_idx])
    # EM may swap classes: rename them by the order of their means on the first contrast
    # (with priors the columns are tied to names by the priors themselves: no renaming)
    perm = np.arange(n_classes) if prior_brain is not None else np.argsort(fit.means[:, 0], kind="stable")
    means, covs = fit.means[perm], fit.covariances[perm]
    log_w = np.log(prior_brain + 1e-12) if prior_brain is not None else np.log(fit.weights[perm])[None, :]
    post = np.empty((n, n_classes))
    for start in range(0, n, 1_000_000):  # bounded memory on large volumes
        sl = slice(start, start + 1_000_000)
        lw = log_w[sl] if log_w.shape[0] > 1 else log_w
        post[sl], _ = _posteriors(_log_gaussians(feats[sl], means, covs), lw)
    label_values = np.array([LABELS[name] for name in names], dtype=np.uint8)
    labels = np.zeros(brain.shape, np.uint8)
    labels[brain] = label_values[np.argmax(post, axis=1)]
    if not return_posteriors:
        return labels
    full = np.zeros(brain.shape + (n_classes,), np.float32)
    by_label = np.argsort(label_values)
    full[brain] = post[:, by_label]
    return labels, full


def template_priors(shape: Sequence[int], affine: np.ndarray, brain: np.ndarray | None = None) -> np.ndarray:
    """CSF, GM, WM prior maps (X, Y, Z, 3) from the MNI152 2009a maps, resampled (trilinear, world
    coordinates) onto a subject grid that is already registered to MNI space. CSF = 1 - GM - WM, clipped."""
    import nibabel as nib
    from scipy import ndimage

    shape = tuple(int(s) for s in shape)
    brain = np.ones(shape, bool) if brain is None else np.asarray(brain, bool)
    idx = np.argwhere(brain).T.astype(np.float64)  # (3, N) voxel indices of the subject
    world = np.asarray(affine, dtype=np.float64)[:3, :3] @ idx + np.asarray(affine, dtype=np.float64)[:3, 3:4]
    maps = []
    for kind in ("gm", "wm"):
        img = nib.load(str(template_path(kind)))
        inv = np.linalg.inv(img.affine)
        vox = inv[:3, :3] @ world + inv[:3, 3:4]
        maps.append(
            ndimage.map_coordinates(np.asarray(img.dataobj, np.float32) / 255.0, vox, order=1, cval=0.0)
        )
    gm, wm = maps
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    out = np.zeros(shape + (3,), np.float32)
    out[brain] = np.stack([csf, gm, wm], axis=1)
    return out


def wmh_mask(
    flair: np.ndarray,
    brain: np.ndarray,
    region: np.ndarray | None = None,
    k: float = 1.3,
    sigma: float = 1.0,
    smooth_min: float = 0.1,
    z_min: float = 0.95,
    min_volume_mm3: float = 10.0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    presmooth: float = 0.0,
) -> np.ndarray:
    """Hyperintensity mask of a brain-extracted FLAIR by the clinical paper's rule (module docstring)."""
    from scipy import ndimage

    flair = np.asarray(flair, dtype=np.float64)
    brain = np.asarray(brain, bool)
    if presmooth > 0:
        # normalised convolution: the empty background must not darken the brain's edge
        weight = ndimage.gaussian_filter(brain.astype(np.float64), presmooth)
        flair = np.where(
            brain, ndimage.gaussian_filter(flair * brain, presmooth) / np.maximum(weight, 1e-6), 0.0
        )
    region = brain if region is None else (np.asarray(region, bool) & brain)
    v = flair[brain]
    sd = float(v.std())
    if sd == 0:
        return np.zeros(flair.shape, bool)
    z = (flair - float(v.mean())) / sd
    candidates = (z > k) & region
    smooth = ndimage.gaussian_filter(candidates.astype(np.float32), sigma) if sigma > 0 else candidates
    mask = (smooth >= smooth_min) & (z >= z_min) & region
    labels, count = ndimage.label(mask)
    if count:
        voxel_mm3 = float(np.prod(spacing))
        sizes = np.bincount(labels.ravel()) * voxel_mm3
        keep = sizes >= min_volume_mm3
        keep[0] = False
        mask = keep[labels]
    return mask


def guess_contrast(name: str, default: str = "t1") -> str:
    """Contrast of a file, read from its name as ``mtsr datalist`` reads names
    (:func:`~mtsr_monai.data.datalist.modality_from_name`: BIDS suffixes such as ``_PDw``, BraTS 2023's
    ``-t1n / -t1c / -t2w / -t2f``, the usual aliases), a BIDS ``ce-`` entity making a T1 a T1ce: 'flair',
    't2', 'pd', 't1ce' or 't1'; ``default`` when the name names none (or a mask or label)."""
    stem = volume_stem(name)
    key = modality_from_name(stem)
    if key == "t1" and re.search(r"(^|_)ce-", stem.lower()):
        return "t1ce"
    return key if key in IMAGE_KEYS else default
