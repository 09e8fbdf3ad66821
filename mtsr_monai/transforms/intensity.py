"""Crop to the template's intracranial box and robust intensity scaling to [0, 1] inside the brain mask."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, SpatialCrop

from mtsr_monai.transforms.registration import PARAMS_KEY


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def mask_bounding_box(mask: np.ndarray, margin: int = 0, k_divisible: int = 1) -> tuple[list[int], list[int]]:
    """Start (inclusive) and end (exclusive) voxel indices of a 3D mask's bounding box.

    The box grows by ``margin`` voxels per side, then symmetrically until each size is a multiple of
    ``k_divisible`` (networks with pooling need that), staying inside the array where possible.
    """
    mask = np.asarray(mask) > 0
    if mask.ndim == 4:
        mask = mask.any(0)
    if not mask.any():
        raise ValueError("the mask is empty: no bounding box")
    start, end = [], []
    for axis, size in enumerate(mask.shape):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        lo, hi = int(idx[0]) - margin, int(idx[-1]) + 1 + margin
        extra = (-(hi - lo)) % max(1, k_divisible)
        lo, hi = lo - extra // 2, hi + extra - extra // 2
        # shift back inside the array rather than shrink (the size stays a multiple of k)
        if lo < 0:
            lo, hi = 0, hi - lo
        if hi > size:
            lo, hi = max(0, lo - (hi - size)), size
        start.append(lo)
        end.append(hi)
    return start, end


class CropToTemplateBoxd(MapTransform):
    """Crop ``keys`` and the mask to the bounding box of ``mask_key`` (the template's intracranial mask).

    On the template grid the box is the same for every subject, so all outputs share one shape. The
    affine is updated (MONAI ``SpatialCrop``), so the crop keeps the physical position.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "brain_mask",
        margin: int = 2,
        k_divisible: int = 1,
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.margin = int(margin)
        self.k_divisible = int(k_divisible)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.mask_key not in d:
            raise KeyError(
                f"CropToTemplateBoxd needs the mask {self.mask_key!r} (run BrainMaskFromTemplated)"
            )
        start, end = mask_bounding_box(_numpy(d[self.mask_key]), self.margin, self.k_divisible)
        cropper = SpatialCrop(roi_start=start, roi_end=end)
        before = tuple(d[self.mask_key].shape[-3:])
        for key in dict.fromkeys([*self.key_iterator(d), self.mask_key]):
            d[key] = cropper(d[key])
        params = dict(d.get(PARAMS_KEY, {}))
        params["crop"] = {
            "mask_key": self.mask_key,
            "margin_voxels": self.margin,
            "k_divisible": self.k_divisible,
            "box_start": start,
            "box_end": end,
            "shape_before": list(before),
            "shape_after": [e - s for s, e in zip(start, end, strict=True)],
        }
        d[PARAMS_KEY] = params
        return d


def scale_percentiles_in_mask(
    image: np.ndarray, mask: np.ndarray | None, lower: float = 0.5, upper: float = 99.5, clip: bool = True
) -> tuple[np.ndarray, float, float]:
    """(image - p_lo) / (p_hi - p_lo), percentiles taken inside ``mask``; returns (scaled, p_lo, p_hi)."""
    values = image[mask > 0] if mask is not None else image.ravel()
    if values.size == 0:
        raise ValueError("the mask selects no voxel")
    p_lo, p_hi = (float(v) for v in np.percentile(values, [lower, upper]))
    span = p_hi - p_lo if p_hi > p_lo else 1.0  # a flat region maps to 0 rather than dividing by zero
    scaled = (image - p_lo) / span
    if clip:
        scaled = np.clip(scaled, 0.0, 1.0)
    return scaled.astype(np.float32), p_lo, p_hi


class ScaleIntensityPercentilesInMaskd(MapTransform):
    """Scale each key to [0, 1] by its robust percentiles (``lower``/``upper``, in %) inside ``mask_key``.

    ``mask_key=None`` takes the percentiles over the whole image. ``clip`` clamps to [0, 1].
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str | None = "brain_mask",
        lower: float = 0.5,
        upper: float = 99.5,
        clip: bool = True,
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
        self.mask_key, self.lower, self.upper, self.clip = mask_key, float(lower), float(upper), bool(clip)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        mask = None
        if self.mask_key is not None:
            mask = _numpy(d[self.mask_key])
            mask = mask[0] if mask.ndim == 4 else mask
        values: dict[str, list[float]] = {}
        for key in self.key_iterator(d):
            image = d[key]
            array = _numpy(image).astype(np.float32)
            channels = array if array.ndim == 4 else array[None]
            out, found = [], []
            for channel in channels:
                scaled, p_lo, p_hi = scale_percentiles_in_mask(
                    channel, mask, self.lower, self.upper, self.clip
                )
                out.append(scaled)
                found.append([round(p_lo, 6), round(p_hi, 6)])
            result = torch.as_tensor(np.stack(out) if array.ndim == 4 else out[0])
            if isinstance(image, MetaTensor):
                result = MetaTensor(result, meta=dict(image.meta))  # the meta carries the affine
            d[key] = result
            values[str(key)] = found[0] if len(found) == 1 else found
        params = dict(d.get(PARAMS_KEY, {}))
        params["intensity"] = {
            "method": "(x - p_lower) / (p_upper - p_lower) inside the mask",
            "mask_key": self.mask_key,
            "lower_percentile": self.lower,
            "upper_percentile": self.upper,
            "clip": self.clip,
            "percentile_values": values,
        }
        d[PARAMS_KEY] = params
        return d
