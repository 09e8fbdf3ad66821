"""IQMs of inputs and outputs, and how far an output agrees with its input, for the group report.

- Input: brain mask (:func:`~mtsr_monai.metrics.qc.default_brain_mask`), EM tissues
  (:func:`~mtsr_monai.metrics.segmentation.segment_tissues`) and :func:`~mtsr_monai.metrics.qc.compute_iqms`,
  as ``mtsr qc`` does.
- Output: the same IQMs with the *input's* tissue map carried onto the output grid through the headers
  (nearest input voxel), as the clinical SR paper compares a restored image with its reference: the
  differences then measure the image, not a new segmentation.
- Consistency (outputs in the input's contrast: super-resolve, clinical-sr): the output averaged over each
  input voxel it falls in (the forward model of a thick or coarse acquisition) against the input, over the
  input's brain: Pearson ``consistency_r`` and ``consistency_nrmse`` (RMSE over the input's robust range).
  For clinical-sr a sequence other than the reference was moved by rigid registration, which the headers do
  not record: its consistency includes that displacement.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from mtsr_monai.io import voxel_sizes
from mtsr_monai.metrics import qc
from mtsr_monai.metrics.segmentation import segment_tissues
from mtsr_monai.transforms.intensity import robust_range

IQM_VARIANT = "mriqc"
REPORT_KEYS = ("cjv", "efc", "fwhm_avg", "wm2max", "snr_total", "cnr")


def _voxel_map(
    out_shape: tuple[int, ...], out_affine: np.ndarray, in_shape: tuple[int, ...], in_affine: np.ndarray
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """For each output slice along the last axis: ``(k, flat input index (h*w,), inside (h*w,))`` of the
    input voxel whose extent holds each output voxel's centre (by the headers). Slice by slice: an x4 SR
    volume has 16 times the input's voxels, too many for one coordinate array."""
    to_in = np.linalg.inv(np.asarray(in_affine, float)) @ np.asarray(out_affine, float)
    i, j = np.meshgrid(np.arange(out_shape[0]), np.arange(out_shape[1]), indexing="ij")
    ij = np.stack([i.ravel(), j.ravel()], axis=0).astype(np.float64)
    base = to_in[:3, :2] @ ij + to_in[:3, 3:4]
    for k in range(out_shape[2]):
        idx = np.rint(base + to_in[:3, 2:3] * k).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < np.asarray(in_shape)[:, None]), axis=0)
        flat = np.ravel_multi_index(tuple(np.clip(idx, 0, np.asarray(in_shape)[:, None] - 1)), in_shape)
        yield k, flat, inside


def carry_labels(
    labels: np.ndarray, in_affine: np.ndarray, out_shape: tuple, out_affine: np.ndarray
) -> np.ndarray:
    """The label map of an input on an output grid (nearest input voxel; 0 outside the input)."""
    out = np.zeros(out_shape, labels.dtype)
    flat_labels = labels.ravel()
    for k, flat, inside in _voxel_map(out_shape, out_affine, labels.shape, in_affine):
        out[:, :, k] = np.where(inside, flat_labels[flat], 0).reshape(out_shape[:2])
    return out


def average_onto(
    output: np.ndarray, out_affine: np.ndarray, in_shape: tuple, in_affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(mean of the output voxels falling in each input voxel, their count)`` on the input grid."""
    n = int(np.prod(in_shape))
    sums, counts = np.zeros(n), np.zeros(n)
    for k, flat, inside in _voxel_map(output.shape, out_affine, in_shape, in_affine):
        values = np.asarray(output[:, :, k], np.float64).ravel()
        sums += np.bincount(flat[inside], weights=values[inside], minlength=n)
        counts += np.bincount(flat[inside], minlength=n)
    mean = np.divide(sums, counts, out=np.zeros(n), where=counts > 0)
    return mean.reshape(in_shape), counts.reshape(in_shape)


def consistency(
    source: np.ndarray, src_affine: np.ndarray, brain: np.ndarray, output: np.ndarray, out_affine: np.ndarray
) -> dict[str, float | None]:
    """``consistency_r`` and ``consistency_nrmse`` of ``output`` against ``source`` (module docstring)."""

    mean, counts = average_onto(output, out_affine, source.shape, src_affine)
    sel = np.asarray(brain, bool) & (counts > 0)
    if sel.sum() < 10:
        return {"consistency_r": None, "consistency_nrmse": None, "consistency_voxels": int(sel.sum())}
    a, b = np.asarray(source, np.float64)[sel], mean[sel]
    lo, hi = robust_range(np.asarray(source, np.float32))
    r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None
    nrmse = float(np.sqrt(np.mean((a - b) ** 2)) / (hi - lo))
    return {"consistency_r": r, "consistency_nrmse": nrmse, "consistency_voxels": int(sel.sum())}


def input_quality(data: np.ndarray, affine: np.ndarray, contrast: str) -> tuple[dict[str, Any], np.ndarray]:
    """``(IQMs, tissue map)`` of a raw input; ValueError when its brain or tissues cannot be found."""

    masks = qc.image_masks(data)
    brain = masks["brain"]
    if brain.sum() < 100:
        raise ValueError("brain mask has fewer than 100 voxels")
    contrast = "t1" if contrast not in ("t1", "t1ce", "t2", "pd", "flair") else contrast
    tissues = segment_tissues(data, brain, (contrast,))
    missing = [name for name, label in qc.LABELS.items() if not np.any(tissues == label)]
    if missing:
        raise ValueError(f"no {', '.join(missing)} voxels in the tissue map")
    iqms = qc.compute_iqms(data, tissues, spacing=voxel_sizes(affine), variant=IQM_VARIANT, **masks)
    return {"contrast": contrast, **iqms}, tissues


def input_masks(data: np.ndarray) -> dict[str, np.ndarray]:
    """The input's ``head`` and ``air`` masks (no air on a skull-stripped input), computed once per input
    for all its outputs' IQMs (:func:`output_quality`)."""
    masks = qc.image_masks(data)
    return {"head": masks["head"], "air": masks["air"]}


def output_quality(
    output: np.ndarray,
    out_affine: np.ndarray,
    tissues: np.ndarray,
    src_affine: np.ndarray,
    masks: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """IQMs of an output with the input's tissue map carried onto its grid, and with ``masks`` (the input's
    :func:`input_masks`) its head and air masks too, so that the output's IQMs differ from the input's by
    the image alone (a model's faint background signal would otherwise make its own air region, changing
    FBER and CNR)."""

    carried = carry_labels(tissues, src_affine, output.shape, out_affine)
    brain = carried > 0
    if brain.sum() < 100:
        raise ValueError("the input's brain does not overlap the output")
    on_output = {
        name: carry_labels(mask.astype(np.uint8), src_affine, output.shape, out_affine) > 0
        for name, mask in (masks or {}).items()
    }
    return qc.compute_iqms(output, carried, brain, voxel_sizes(out_affine), IQM_VARIANT, **on_output)
