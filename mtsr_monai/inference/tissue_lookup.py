"""Deterministic translation baselines that any learned translation must beat (``mtsr translate --method``
runs them; the benchmarks score them beside the learned translations).

- ``identity``: the input itself after the training scaling
  (:func:`~mtsr_monai.transforms.intensity.robust_scale`):
  the floor (it has the wrong contrast).
- ``tissue-lookup``: segment the input into CSF, GM and WM with the EM segmentation
  (:func:`~mtsr_monai.metrics.segmentation.segment_tissues`), then paint every brain voxel with the
  posterior-weighted mean of each class's intensity in the target contrast. The class intensities are
  learned from training subjects, after the same scaling: per subject, the median target intensity of the
  voxels the source segmentation labels as that class; across subjects, the median of those. This is the
  physics of a contrast change at the resolution of a three-class model (the demo subject is made in a
  similar way), with no anatomy the segmentation does not already hold: lesions take whatever class the
  source intensity says.

Class intensities live in ``bundles/mtsr_mt/models/tissue_lookup.json`` (``{"t1_to_flair": {"csf": ...,
"gm": ..., "wm": ..., "subjects": [...]}, ...}``), written by ``scripts/fit_tissue_lookup.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mtsr_monai.data.datalist import check_translation_pair
from mtsr_monai.errors import InputError
from mtsr_monai.inference.brain_mask import (
    RUN_ONLY_OUTPUTS,
    brain_mask_for,
    check_brain_mask,
    earlier_outputs,
    stale_auto_mask,
)
from mtsr_monai.inference.bundle import verify_file, weights_path
from mtsr_monai.io import atomic_file_set, load_volume, nifti_space, save_volume
from mtsr_monai.metrics.segmentation import LABELS, segment_tissues
from mtsr_monai.transforms.intensity import robust_scale

__all__ = [
    "BASELINE_METHODS",
    "TISSUES",
    "class_intensities",
    "fit_tissue_lookup",
    "identity_translate",
    "load_tissue_lookup",
    "tissue_lookup_translate",
    "baseline_translate_file",
    "blend_with_tissue_lookup",
    "check_prior_weight",
]

BASELINE_METHODS = ("identity", "tissue-lookup")
TISSUES = ("csf", "gm", "wm")


def _scaled(volume: np.ndarray) -> np.ndarray:
    return robust_scale(volume).numpy()


def identity_translate(volume: np.ndarray) -> np.ndarray:
    """The input in [0, 1] by the training scaling (background stays 0)."""
    return _scaled(volume)


def _segment(scaled_source: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(brain mask, labels, posteriors in CSF, GM, WM order) of a scaled source volume."""
    brain = scaled_source > 0
    labels, post = segment_tissues(scaled_source, brain, contrasts=(source,), return_posteriors=True)
    return brain, labels, post


def class_intensities(source_volume: np.ndarray, target_volume: np.ndarray, source: str) -> dict[str, float]:
    """One training subject: the median scaled target intensity of each source tissue class."""
    src, tgt = _scaled(source_volume), _scaled(target_volume)
    _, labels, _ = _segment(src, source)
    out = {}
    for tissue in TISSUES:
        voxels = tgt[(labels == LABELS[tissue]) & (tgt > 0)]
        out[tissue] = float(np.median(voxels)) if voxels.size else float("nan")
    return out


def fit_tissue_lookup(per_subject: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The median over training subjects of their :func:`class_intensities`."""
    per_subject = list(per_subject)
    if not per_subject:
        raise ValueError("no training subject to fit the tissue lookup on")
    return {tissue: float(np.nanmedian([p[tissue] for p in per_subject])) for tissue in TISSUES}


def tissue_lookup_translate(volume: np.ndarray, source: str, intensities: Mapping[str, float]) -> np.ndarray:
    """Paint each brain voxel of ``volume`` with the posterior-weighted class intensities; 0 outside."""
    src = _scaled(volume)
    brain, _, post = _segment(src, source)
    values = np.array([float(intensities[t]) for t in TISSUES], dtype=np.float32)
    out = np.zeros(src.shape, np.float32)
    out[brain] = post[brain] @ values
    return out


def default_lookup_path() -> Path:
    return weights_path("mtsr_mt", "models/tissue_lookup.json")


def check_prior_weight(weight: float) -> float:
    """``weight`` as a float, the generator's share of a ``tissue_prior``; InputError outside [0, 1]."""
    weight = float(weight)
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"tissue_prior weight must be in [0, 1], got {weight}")
    return weight


def blend_with_tissue_lookup(samples: np.ndarray, volume: np.ndarray, prior: Mapping[str, Any]) -> np.ndarray:
    """``(N, ...)`` samples of ``volume``'s translation, each averaged with its tissue lookup:
    ``w * sample + (1 - w) * lookup``. ``prior`` is a weights file's meta ``tissue_prior``: ``weight`` (w),
    the ``source`` modality and the class intensities (``csf``, ``gm``, ``wm``).

    Why: on the validation subjects the generator's and the lookup's errors correlate weakly (r 0.18-0.64),
    so their average is closer to the real target than either one (docs/mt.md, "Session 17"). The samples
    still differ by ``w`` times their own spread; background (0 in both) stays 0."""
    weight = check_prior_weight(prior["weight"])
    lookup = tissue_lookup_translate(volume, str(prior["source"]), prior)
    return (weight * np.asarray(samples, np.float32) + (1.0 - weight) * lookup[None]).astype(np.float32)


def load_tissue_lookup(source: str, target: str, path: str | os.PathLike | None = None) -> dict[str, float]:
    """The class intensities of ``source -> target``; InputError when the file or the pair is missing."""
    path = Path(path) if path else default_lookup_path()
    try:
        table = json.loads(verify_file(path).read_text())  # its sha256 too, in a bundle that declares one
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the tissue lookup table: {err}", path) from err
    key = f"{source}_to_{target}"
    if key not in table:
        raise InputError(f"no tissue lookup for {source} -> {target} (have {', '.join(sorted(table))})", path)
    return {t: float(table[key][t]) for t in TISSUES}


def baseline_translate_file(
    input_path: str | os.PathLike,
    source: str,
    target: str,
    output_dir: str | os.PathLike,
    method: str,
    mask_path: str | os.PathLike | None = None,
    lookup_path: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict:
    """``mtsr translate --method identity|tissue-lookup``: writes ``OUT/mean.nii.gz`` (the one, deterministic
    output, on the input's grid) and returns a summary; nothing is written on bad input. ``progress``: the
    bar of a brain mask's estimation."""
    if method not in BASELINE_METHODS:
        raise InputError(f"unknown baseline {method!r}; choose from {', '.join(BASELINE_METHODS)}")
    check_translation_pair(source, target)
    intensities = load_tissue_lookup(source, target, lookup_path) if method == "tissue-lookup" else None
    image = load_volume(input_path)
    volume = image.numpy().astype(np.float32)
    with brain_mask_for(input_path, mask_path, output_dir, source, progress) as choice:
        if choice.path is not None:
            mask = load_volume(choice.path, validate=False)
            names = (str(input_path), str(choice.path))
            inside = check_brain_mask(mask.numpy(), mask.affine, volume.shape, image.affine, names)
            volume = np.where(inside, volume, 0).astype(np.float32)
        out = (
            identity_translate(volume)
            if intensities is None
            else tissue_lookup_translate(volume, source, intensities)
        )
        # mean alone, and no sample, std, codes or other brain's mask of an earlier run left beside it
        stale = ["sample_*.nii.gz", "std.nii.gz", "codes.json", *RUN_ONLY_OUTPUTS]
        stale += stale_auto_mask(output_dir, choice.path)
        with atomic_file_set(output_dir, stale, earlier_outputs(output_dir)) as staging:
            save_volume(out, staging / "mean.nii.gz", np.asarray(image.affine), space=nifti_space(image))
        path = Path(output_dir) / "mean.nii.gz"
    return {"input": str(input_path), "source": source, "target": target, "method": method,
            "intensities": intensities, "outputs": {"mean": str(path)}, "_arrays": {"mean": out},
            "mask": choice.path, "mask_note": choice.note, "mask_failed": choice.failed}  # fmt: skip
