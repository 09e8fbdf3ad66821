"""N4 bias-field correction (SimpleITK): the array transform ``N4BiasFieldCorrection`` and its dictionary
wrapper ``N4BiasFieldCorrectiond``.

The field is fitted on an image shrunk by ``shrink_factor`` (the fit is smooth, so a coarse grid loses
nothing but time) and evaluated at full resolution; the image is divided by it.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_numpy

from mtsr_monai.transforms.keys import PARAMS_KEY
from mtsr_monai.transforms.meta import wrap_like
from mtsr_monai.transforms.sitk_utils import array_to_sitk


def n4_correct(
    image: sitk.Image,
    mask: sitk.Image | None = None,
    shrink_factor: int = 4,
    iterations: Sequence[int] = (50, 50, 30, 20),
    convergence_threshold: float = 1e-3,
    fitting_levels: int | None = None,
) -> tuple[sitk.Image, sitk.Image]:
    """Return (corrected image, bias field) for a 3D float image; voxels <= 0 are left out of the fit.

    Without ``mask`` the fit uses an Otsu foreground. ``iterations`` gives one entry per fitting level.
    """
    image = sitk.Cast(image, sitk.sitkFloat32)
    if mask is None:
        mask = sitk.OtsuThreshold(image, 0, 1, 200)
    # N4 works on log intensities: non-positive voxels cannot take part
    mask = sitk.Cast(
        sitk.And(sitk.Cast(mask > 0, sitk.sitkUInt8), sitk.Cast(image > 0, sitk.sitkUInt8)), sitk.sitkUInt8
    )
    if not np.any(sitk.GetArrayViewFromImage(mask)):
        return image, sitk.Image(image.GetSize(), sitk.sitkFloat32) + 1.0
    shrink = max(1, int(shrink_factor))
    small = sitk.Shrink(image, [shrink] * 3) if shrink > 1 else image
    small_mask = sitk.Shrink(mask, [shrink] * 3) if shrink > 1 else mask
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.SetConvergenceThreshold(convergence_threshold)
    n4.Execute(small, small_mask)
    log_field = n4.GetLogBiasFieldAsImage(image)
    field = sitk.Exp(log_field)
    field.CopyInformation(image)
    corrected = sitk.Divide(image, field)
    return corrected, field


class N4BiasFieldCorrection(Transform):
    """Array transform: N4 bias-field correction (:func:`n4_correct`) of each channel of a channel-first image
    (a MetaTensor keeps its meta, the affine included); ``mask``: restricts the fit (else an Otsu foreground
    per image)."""

    def __init__(
        self,
        shrink_factor: int = 4,
        iterations: Sequence[int] = (50, 50, 30, 20),
        convergence_threshold: float = 1e-3,
    ) -> None:
        self.shrink_factor = int(shrink_factor)
        self.iterations = tuple(int(i) for i in iterations)
        self.convergence_threshold = float(convergence_threshold)

    def __call__(self, img: Any, mask: Any = None) -> torch.Tensor:
        affine = img.affine if isinstance(img, MetaTensor) else np.eye(4)
        array = convert_to_numpy(img)
        channels = array[None] if array.ndim == 3 else array
        mask_array = None
        if mask is not None:
            m = convert_to_numpy(mask)
            mask_array = (m[0] if m.ndim == 4 else m) > 0
        out = []
        for channel in channels:
            sitk_image = array_to_sitk(channel.astype(np.float32), affine)
            sitk_mask = None if mask_array is None else array_to_sitk(mask_array.astype(np.uint8), affine)
            corrected, _ = n4_correct(
                sitk_image, sitk_mask, self.shrink_factor, self.iterations, self.convergence_threshold
            )
            out.append(sitk.GetArrayFromImage(corrected).transpose(2, 1, 0))
        result = torch.as_tensor(np.ascontiguousarray(np.stack(out) if array.ndim == 4 else out[0]))
        return wrap_like(result, img) if isinstance(img, MetaTensor) else result  # the meta holds the affine


class N4BiasFieldCorrectiond(MapTransform):
    """Dictionary wrapper of :class:`N4BiasFieldCorrection`: each channel of each key (MetaTensors, channel
    first; affine kept).

    ``mask_key``: a mask in the data to restrict the fit (else an Otsu foreground per image).
    """

    def __init__(
        self,
        keys: KeysCollection,
        shrink_factor: int = 4,
        iterations: Sequence[int] = (50, 50, 30, 20),
        convergence_threshold: float = 1e-3,
        mask_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.corrector = N4BiasFieldCorrection(shrink_factor, iterations, convergence_threshold)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        seconds: dict[str, float] = {}
        for key in self.key_iterator(d):
            start = time.perf_counter()
            if self.mask_key is not None and self.mask_key not in d:  # a typo must not fall back silently
                raise KeyError(f"mask_key {self.mask_key!r} is not in the data (keys: {sorted(map(str, d))})")
            mask = d[self.mask_key] if self.mask_key is not None else None
            result = self.corrector(d[key], mask)
            d[key] = result
            seconds[str(key)] = round(time.perf_counter() - start, 3)
        params = dict(d.get(PARAMS_KEY, {}))
        params["n4"] = {
            "shrink_factor": self.corrector.shrink_factor,
            "iterations": list(self.corrector.iterations),
            "convergence_threshold": self.corrector.convergence_threshold,
            "mask": self.mask_key or "Otsu foreground per image",
            "seconds": seconds,
        }
        d[PARAMS_KEY] = params
        return d
