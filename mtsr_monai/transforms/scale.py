"""MONAI transforms of the intensity scaling in :mod:`mtsr_monai.transforms.intensity`: array transforms plus
their dictionary wrappers.

- :class:`RobustScaleIntensity` / :class:`RobustScaleIntensityd`: the networks' training scaling, per volume,
  and its inverse :class:`RestoreIntensity` / :class:`RestoreIntensityd` (a prediction back to input units);
- :class:`ScaleIntensityPercentilesInMask` / :class:`ScaleIntensityPercentilesInMaskd`: the preprocessing
  scaling, percentiles inside the brain mask (recorded in the image's meta under :data:`PERCENTILES_KEY`,
  whence the dictionary wrapper copies them into the JSON sidecar's record).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, get_track_meta
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type, convert_to_numpy

from mtsr_monai.transforms.intensity import robust_range, scale_percentiles_in_mask, scale_to_range
from mtsr_monai.transforms.keys import PARAMS_KEY, PERCENTILES_KEY, RANGE_KEY
from mtsr_monai.transforms.meta import wrap_like

__all__ = [
    "RestoreIntensity",
    "RestoreIntensityd",
    "RobustScaleIntensity",
    "RobustScaleIntensityd",
    "ScaleIntensityPercentilesInMask",
    "ScaleIntensityPercentilesInMaskd",
]


class RobustScaleIntensity(Transform):
    """Array transform: the networks' training scaling of the whole image (per volume):
    :func:`~mtsr_monai.transforms.intensity.robust_range` (percentiles ``lower`` / ``upper``) mapped to
    [0, 1], clipped unless ``clip=False``. A MetaTensor keeps its meta, with ``(lo, hi)`` under
    :data:`~mtsr_monai.transforms.keys.RANGE_KEY`, so that :class:`RestoreIntensity` maps a prediction back
    (inference scales unclipped, so that the map back is exact)."""

    def __init__(self, lower: float = 0.5, upper: float = 99.5, clip: bool = True) -> None:
        self.lower, self.upper, self.clip = lower, upper, clip

    def __call__(self, img: Any) -> Any:
        array = convert_to_numpy(img).astype(np.float32, copy=False)
        lo, hi = robust_range(array, self.lower, self.upper)
        # the input's type, device, meta and transform history, float32
        scaled, *_ = convert_to_dst_type(scale_to_range(array, lo, hi, self.clip), img, dtype=torch.float32)
        if isinstance(scaled, MetaTensor):
            scaled.meta = {**scaled.meta, RANGE_KEY: [lo, hi]}
        return scaled


class RobustScaleIntensityd(MapTransform):
    """Dictionary wrapper of :class:`RobustScaleIntensity`: each key scaled on its own."""

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 0.5,
        upper: float = 99.5,
        clip: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scaler = RobustScaleIntensity(lower, upper, clip)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key])
        return d


class RestoreIntensity(Transform):
    """Array transform: the inverse of :class:`RobustScaleIntensity`, ``img * (hi - lo) + lo`` for the
    ``value_range`` ``(lo, hi)`` it recorded."""

    def __call__(self, img: Any, value_range: Sequence[float]) -> Any:
        lo, hi = (float(v) for v in value_range)
        out = img * (hi - lo)  # then in place: one temporary of an SR output's size, not two
        out += lo
        return out


class RestoreIntensityd(MapTransform):
    """Dictionary wrapper of :class:`RestoreIntensity`: each key (a prediction) back to the intensities of
    the ``ref_key`` image, whose meta holds the range :class:`RobustScaleIntensity` recorded."""

    def __init__(
        self, keys: KeysCollection, ref_key: str = "image", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key
        self.restore = RestoreIntensity()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if self.first_key(d) == ():  # every key missing (allowed): the reference is not needed
            return d
        value_range = d[self.ref_key].meta[RANGE_KEY]
        for key in self.key_iterator(d):
            d[key] = self.restore(d[key], value_range)
        return d


class ScaleIntensityPercentilesInMask(Transform):
    """Array transform: each channel of ``(C, X, Y, Z)`` (or a 3D image) scaled to [0, 1] by its robust
    percentiles (``lower`` / ``upper``, in %) inside ``mask`` (all voxels if None); ``clip`` clamps to [0, 1].
    The result is a MetaTensor (the input's meta, or new when meta is tracked, as MONAI's transforms do) with
    the percentiles found under :data:`PERCENTILES_KEY` (one ``[lo, hi]`` per channel); a plain tensor with
    no record when meta tracking is off."""

    def __init__(self, lower: float = 0.5, upper: float = 99.5, clip: bool = True) -> None:
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
        self.lower, self.upper, self.clip = float(lower), float(upper), bool(clip)

    def __call__(self, img: Any, mask: Any = None) -> torch.Tensor:
        if mask is not None:
            mask = convert_to_numpy(mask)
            mask = mask[0] if mask.ndim == 4 else mask
        array = convert_to_numpy(img).astype(np.float32)
        channels = array if array.ndim == 4 else array[None]
        out, found = [], []
        for channel in channels:
            scaled, p_lo, p_hi = scale_percentiles_in_mask(channel, mask, self.lower, self.upper, self.clip)
            out.append(scaled)
            found.append([round(p_lo, 6), round(p_hi, 6)])
        result = torch.as_tensor(np.stack(out) if array.ndim == 4 else out[0])
        if isinstance(img, MetaTensor):  # the meta carries the affine
            return wrap_like(result, img, **{PERCENTILES_KEY: found})
        if get_track_meta():
            result = MetaTensor(result, meta={PERCENTILES_KEY: found})
        return result


class ScaleIntensityPercentilesInMaskd(MapTransform):
    """Dictionary wrapper of :class:`ScaleIntensityPercentilesInMask`, the mask read from ``mask_key``
    (``None``: percentiles over the whole image); the percentiles each image's meta records go to the data's
    preprocessing record."""

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str | None = "brain_mask",
        lower: float = 0.5,
        upper: float = 99.5,
        clip: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.scaler = ScaleIntensityPercentilesInMask(lower, upper, clip)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.first_key(d) == ():  # every key missing (allowed): nothing to scale, no mask needed
            return d
        mask = None if self.mask_key is None else d[self.mask_key]
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key], mask)
        values = {
            str(key): _one_or_all(getattr(d[key], "meta", {}).get(PERCENTILES_KEY))
            for key in self.key_iterator(d)
        }
        record = {
            "method": "(x - p_lower) / (p_upper - p_lower) inside the mask",
            "mask_key": self.mask_key,
            "lower_percentile": self.scaler.lower,
            "upper_percentile": self.scaler.upper,
            "clip": self.scaler.clip,
            "percentile_values": values,
        }
        d[PARAMS_KEY] = {**d.get(PARAMS_KEY, {}), "intensity": record}
        return d


def _one_or_all(found: list | None) -> list | None:
    # the sidecar's form: one image channel gives its [lo, hi], several give the list of them
    return found[0] if found is not None and len(found) == 1 else found
