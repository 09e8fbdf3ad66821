"""Crop to a mask's bounding box (in preprocessing, the template's intracranial box): :class:`CropToMaskBox`
(array; the box it cropped to goes into the crop's meta under :data:`CROP_KEY`) and :class:`CropToMaskBoxd`
(dictionary, one box for every key; :class:`CropToTemplateBoxd` is its deprecated old name)."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import BorderPad, MapTransform, SpatialCrop, Transform
from monai.transforms.utils import generate_spatial_bounding_box
from monai.utils import convert_to_numpy

from mtsr_monai.transforms.keys import CROP_KEY, PARAMS_KEY

__all__ = [
    "CropToMaskBox",
    "CropToMaskBoxd",
    "CropToTemplateBoxd",
    "foreground_box",
    "mask_bounding_box",
]


def foreground_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Slices of the bounding box of the non-zero voxels of ``mask`` (any number of dimensions: the 2D
    foreground of a batch of slices in super-resolution, 3D volumes in the clinical data) grown by ``margin``
    voxels per side and clipped to the array (the whole array if the mask is empty). Unlike
    :func:`mask_bounding_box`, a box at the border is clipped, not shifted, and negative values count."""
    mask = np.asarray(mask)
    start, end = generate_spatial_bounding_box(
        mask[None], select_fn=lambda x: x != 0, margin=margin, allow_smaller=True
    )
    if not any(e > s for s, e in zip(start, end, strict=True)):  # MONAI's empty box is all zeros
        return tuple(slice(0, s) for s in mask.shape)
    return tuple(slice(int(s), int(e)) for s, e in zip(start, end, strict=True))


def mask_bounding_box(mask: np.ndarray, margin: int = 0, k_divisible: int = 1) -> tuple[list[int], list[int]]:
    """Start (inclusive) and end (exclusive) voxel indices of the bounding box of a 3D mask's positive voxels
    (a 4D ``(C, X, Y, Z)`` mask: of any channel's); an empty mask raises :class:`ValueError`.

    The box grows by ``margin`` voxels per side, then symmetrically until each size is a multiple of
    ``k_divisible`` (networks with pooling need that), staying inside the array where possible; where the
    array itself is too small, the box reaches past both its ends (``start < 0``, ``end > size``) and
    :meth:`CropToMaskBox.crop` zero-pads there.
    """
    mask = np.asarray(mask) > 0
    if mask.ndim == 4:
        mask = mask.any(0)
    if not mask.any():
        raise ValueError("the mask is empty: no bounding box")
    # not clipped (allow_smaller=False): a box shifted back inside keeps its size, a multiple of k
    box_start, box_end = generate_spatial_bounding_box(mask[None], margin=margin, allow_smaller=False)
    start, end = [], []
    for lo, hi, size in zip(box_start, box_end, mask.shape, strict=True):
        extra = (-(int(hi) - int(lo))) % max(1, k_divisible)
        length = int(hi) - int(lo) + extra
        if length > size:  # more than the array: the least multiple of k over it, centred, padded by crop()
            length = -(-size // max(1, k_divisible)) * max(1, k_divisible)
            lo = -((length - size) // 2)
        else:  # shifted back inside the array rather than shrunk (the size stays a multiple of k)
            lo = min(max(int(lo) - extra // 2, 0), size - length)
        start.append(lo)
        end.append(lo + length)
    return start, end


class CropToMaskBox(Transform):
    """Array transform: crop a channel-first image to the bounding box of ``mask`` (default: the image's own
    non-zero voxels), see :func:`mask_bounding_box`. MONAI's ``SpatialCrop`` updates the affine, so the crop
    keeps its physical position, and the box goes into its meta under :data:`CROP_KEY`. As in MONAI's
    ``CropForeground``, :meth:`compute_bounding_box` and :meth:`crop` let a dictionary wrapper crop several
    images to one box."""

    def __init__(self, margin: int = 2, k_divisible: int = 1) -> None:
        self.margin, self.k_divisible = int(margin), int(k_divisible)

    def compute_bounding_box(self, mask: Any) -> tuple[list[int], list[int]]:
        """Start and end (exclusive) of the box of ``mask`` ((X, Y, Z) or (C, X, Y, Z))."""
        return mask_bounding_box(convert_to_numpy(mask), self.margin, self.k_divisible)

    @staticmethod
    def crop(img: Any, start: Sequence[int], end: Sequence[int]) -> Any:
        """``img`` cropped to the box from ``start`` to ``end`` (exclusive), its affine updated and the box
        recorded in its meta (a MetaTensor: unless MONAI's meta tracking is off)."""
        before = [int(s) for s in img.shape[-3:]]
        inside_start = [max(int(s), 0) for s in start]
        inside_end = [min(int(e), n) for e, n in zip(end, before, strict=True)]
        out = SpatialCrop(roi_start=inside_start, roi_end=inside_end)(img)
        pads = [
            (i - int(s), int(e) - j) for s, e, i, j in zip(start, end, inside_start, inside_end, strict=True)
        ]
        if any(a or b for a, b in pads):  # a box larger than the array (k_divisible): zeros beyond it
            out = BorderPad(spatial_border=[n for pair in pads for n in pair])(out)
        if isinstance(out, MetaTensor):
            box = {
                "box_start": [int(s) for s in start],
                "box_end": [int(e) for e in end],
                "shape_before": before,
                "shape_after": [int(e) - int(s) for s, e in zip(start, end, strict=True)],
            }
            out.meta = {**out.meta, CROP_KEY: box}
        return out

    def __call__(self, img: Any, mask: Any = None) -> Any:
        start, end = self.compute_bounding_box(convert_to_numpy(img) != 0 if mask is None else mask)
        return self.crop(img, start, end)


class CropToMaskBoxd(MapTransform):
    """Dictionary wrapper of :class:`CropToMaskBox`: crop ``keys`` and the mask to the bounding box of
    ``mask_key`` (in preprocessing, the template's intracranial mask); the box the mask's meta records goes
    to the data's preprocessing record.

    On the template grid the box is the same for every subject, so all outputs share one shape. The
    affine is updated (MONAI ``SpatialCrop``), so the crop keeps the physical position.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "brain_mask",
        margin: int = 2,
        k_divisible: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.cropper = CropToMaskBox(margin, k_divisible)

    @property
    def margin(self) -> int:
        return self.cropper.margin

    @property
    def k_divisible(self) -> int:
        return self.cropper.k_divisible

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.mask_key not in d:
            raise KeyError(
                f"{type(self).__name__} needs the mask {self.mask_key!r} (run BrainMaskFromTemplated)"
            )
        start, end = self.cropper.compute_bounding_box(d[self.mask_key])
        for key in dict.fromkeys([*self.key_iterator(d), self.mask_key]):
            d[key] = self.cropper.crop(d[key], start, end)
        box = getattr(d[self.mask_key], "meta", {}).get(CROP_KEY, {})
        record = {"mask_key": self.mask_key, "margin_voxels": self.margin, "k_divisible": self.k_divisible}
        d[PARAMS_KEY] = {**d.get(PARAMS_KEY, {}), "crop": {**record, **box}}
        return d


class CropToTemplateBoxd(CropToMaskBoxd):
    """Deprecated: the old name of :class:`CropToMaskBoxd`, kept for configs and callers that still use it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn(
            "CropToTemplateBoxd is deprecated; use CropToMaskBoxd", DeprecationWarning, stacklevel=2
        )
        super().__init__(*args, **kwargs)
