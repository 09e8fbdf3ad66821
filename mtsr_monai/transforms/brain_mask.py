"""Brain (intracranial) mask from the template tissue maps, carried to the subject; optional skull strip.

The MNI152 2009a maps in nilearn give grey- and white-matter probabilities but no CSF. The intracranial
mask is: GM + WM probability >= ``threshold``, closed morphologically (sulci), holes filled (ventricles),
then dilated by ``csf_margin_mm`` to take in the outer CSF. A user template gives its own mask
(``template_mask``) or, lacking one, the template's non-background voxels (Otsu, holes filled).

:class:`BrainMaskFromTemplate` (array) carries the mask onto an image's grid and records how in the mask's
meta (:data:`MASK_KEY`); :class:`BrainMaskFromTemplated` is its dictionary wrapper.
"""

from __future__ import annotations

import tempfile
from collections.abc import Hashable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from mtsr_monai.io import atomic_output, load_volume
from mtsr_monai.io.template import template_path
from mtsr_monai.transforms.keys import MASK_KEY, PARAMS_KEY, TO_TEMPLATE_KEY
from mtsr_monai.transforms.sitk_utils import load_template, metatensor_to_sitk, resample, stack_channels


@lru_cache(maxsize=4)
def _mni_mask(threshold: float, closing_mm: int, csf_margin_mm: int) -> sitk.Image:
    gm = sitk.Cast(sitk.ReadImage(str(template_path("gm"))), sitk.sitkFloat32)
    wm = sitk.Cast(sitk.ReadImage(str(template_path("wm"))), sitk.sitkFloat32)
    tissue = (gm + wm) / 255.0
    mask = sitk.Cast(tissue >= threshold, sitk.sitkUInt8)
    return _envelope(mask, closing_mm, csf_margin_mm)


def _envelope(mask: sitk.Image, closing_mm: int, margin_mm: int) -> sitk.Image:
    # largest component only: stray tissue-probability specks outside the head must not grow the box
    components = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    mask = sitk.Cast(components == 1, sitk.sitkUInt8)
    spacing = min(mask.GetSpacing())
    if closing_mm > 0:
        mask = sitk.BinaryMorphologicalClosing(mask, [max(1, round(closing_mm / spacing))] * 3)
    mask = sitk.BinaryFillhole(mask)
    if margin_mm > 0:
        mask = sitk.BinaryDilate(mask, [max(1, round(margin_mm / spacing))] * 3)
    return sitk.Cast(mask, sitk.sitkUInt8)


#: relative CSF, GM and WM levels of a brain in each contrast the MNI152 maps can stand in for
CONTRAST_LEVELS = {"t2": (1.0, 0.62, 0.45)}


@lru_cache(maxsize=4)
def contrast_template(contrast: str | None) -> tuple[Path, Path] | None:
    """``(template, its brain mask)`` files of a brain-only MNI152 template in ``contrast`` (``t2``),
    painted from the GM and WM maps (CSF = the brain mask's rest) with :data:`CONTRAST_LEVELS` and smoothed
    1 mm; None for another contrast (the MNI152 T1 serves T1 and FLAIR, whose CSF is dark too). Written
    once into the temporary folder. Registered to the MNI152 T1, 3 of 4 raw clinical T2 heads (open-MS) gave
    a template brain 1.09-1.58 times their head; registered to this, none did."""
    contrast = str(contrast).lower()
    levels = CONTRAST_LEVELS.get(contrast)
    if levels is None:
        return None
    folder = Path(tempfile.gettempdir()) / "mtsr_monai_templates"
    paths = folder / f"mni152_2009a_{contrast}_v1.nii.gz", folder / "mni152_2009a_brain_mask_v1.nii.gz"
    if not all(p.is_file() for p in paths):
        mask = template_brain_mask()
        gm, wm = (sitk.GetArrayFromImage(sitk.ReadImage(str(template_path(k)))) / 255.0 for k in ("gm", "wm"))
        inside = sitk.GetArrayFromImage(mask).astype(np.float32)
        csf = np.clip(inside - gm - wm, 0.0, 1.0)
        painted = sitk.GetImageFromArray(
            (csf * levels[0] + gm * levels[1] + wm * levels[2]).astype(np.float32)
        )
        painted.CopyInformation(mask)
        painted = sitk.SmoothingRecursiveGaussian(painted, 1.0) * sitk.Cast(mask, sitk.sitkFloat32)
        for image, path in ((painted, paths[0]), (mask, paths[1])):
            with atomic_output(path) as tmp:
                sitk.WriteImage(image, str(tmp))
    return paths


@lru_cache(maxsize=4)
def _user_mask(template_mask: str | None, template: str | None) -> sitk.Image:
    if template_mask is not None:
        return sitk.Cast(metatensor_to_sitk(load_volume(template_mask)) > 0.5, sitk.sitkUInt8)
    image = load_template(template)
    mask = sitk.OtsuThreshold(image, 0, 1, 128)
    return _envelope(mask, 3, 0)


def template_brain_mask(
    template_mask: str | Path | None = None,
    template: str | Path | None = None,
    reference: sitk.Image | None = None,
    threshold: float = 0.5,
    closing_mm: int = 4,
    csf_margin_mm: int = 2,
) -> sitk.Image:
    """The intracranial mask (uint8 0/1) on the template grid (or on ``reference``'s grid if given)."""
    if template_mask is None and template is None:
        mask = _mni_mask(float(threshold), int(closing_mm), int(csf_margin_mm))
    else:
        mask = _user_mask(
            None if template_mask is None else str(template_mask), None if template is None else str(template)
        )
    if reference is not None:
        mask = resample(mask, reference, None, "nearest")
    return mask


class BrainMaskFromTemplate(Transform):
    """Array transform: the template's intracranial mask (uint8 MetaTensor, 1 channel) on the grid of a
    channel-first MetaTensor.

    The mask moves through ``to_template`` (output-grid points -> template points, as
    :class:`~mtsr_monai.transforms.registration.RegisterToTemplated` leaves it: identity when the image is on
    the template grid, the inverse affine when it stayed native); None: the image is taken to be in template
    space already (physical coordinates). The mask's meta holds, under :data:`MASK_KEY`, where it came from
    and how it was carried (:meth:`describe`) and its ``mask_voxels``. :meth:`strip` multiplies an image by
    the mask (skull strip).
    """

    def __init__(
        self,
        template: str | Path | None = None,
        template_mask: str | Path | None = None,
        threshold: float = 0.5,
        closing_mm: int = 4,
        csf_margin_mm: int = 2,
    ) -> None:
        self.template = template
        self.template_mask = template_mask
        self.threshold, self.closing_mm, self.csf_margin_mm = threshold, closing_mm, csf_margin_mm

    def __call__(self, img: Any, to_template: sitk.Transform | None = None) -> MetaTensor:
        grid = metatensor_to_sitk(img[:1] if img.ndim == 4 else img)
        mask = template_brain_mask(
            self.template_mask, self.template, None, self.threshold, self.closing_mm, self.csf_margin_mm
        )
        carried = resample(mask, grid, to_template, "nearest")
        out = stack_channels([carried], getattr(img, "meta", None), torch.uint8)
        found = {**self.describe(to_template), "mask_voxels": int(torch.count_nonzero(out))}
        out.meta = {**out.meta, MASK_KEY: found}
        return out

    @staticmethod
    def strip(img: Any, mask: torch.Tensor) -> Any:
        """``img`` with every voxel outside ``mask`` set to 0."""
        return img * mask.to(img.dtype)

    def describe(self, to_template: sitk.Transform | None = None) -> dict[str, Any]:
        """Where the mask comes from and how it was carried (for the preprocessing sidecar)."""
        return {
            "source": str(
                self.template_mask or self.template or "MNI152 2009a GM+WM probabilities (nilearn)"
            ),
            "tissue_threshold": self.threshold,
            "closing_mm": self.closing_mm,
            "csf_margin_mm": self.csf_margin_mm,
            "carried_by": "identity (template grid)"
            if to_template is None or _is_identity(to_template)
            else "inverse of the reference-to-template affine",
        }


class BrainMaskFromTemplated(MapTransform):
    """Dictionary wrapper of :class:`BrainMaskFromTemplate`: add ``mask_key`` (uint8, 1 channel), the
    template's intracranial mask on the grid of the first present key, carried through
    ``data[TO_TEMPLATE_KEY]`` (set by :class:`RegisterToTemplated`; absent: the subject is taken to be in
    template space already). ``skull_strip=True`` multiplies every image of ``keys`` by the mask. What the
    mask's meta records goes to the data's preprocessing record.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "brain_mask",
        template: str | Path | None = None,
        template_mask: str | Path | None = None,
        skull_strip: bool = False,
        threshold: float = 0.5,
        closing_mm: int = 4,
        csf_margin_mm: int = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.skull_strip = skull_strip
        self.masker = BrainMaskFromTemplate(template, template_mask, threshold, closing_mm, csf_margin_mm)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = list(self.key_iterator(d))
        if not present:
            raise ValueError("BrainMaskFromTemplated: none of the keys is in the data")
        to_template = d.get(TO_TEMPLATE_KEY)
        out = self.masker(d[present[0]], to_template)
        d[self.mask_key] = out
        if self.skull_strip:
            for key in present:
                d[key] = self.masker.strip(d[key], out)
        record = dict(out.meta[MASK_KEY])
        voxels = record.pop("mask_voxels")  # last in the sidecar's record, after this wrapper's skull_strip
        record.update(skull_strip=self.skull_strip, mask_voxels=voxels)
        d[PARAMS_KEY] = {**d.get(PARAMS_KEY, {}), "brain_mask": record}
        return d


def _is_identity(transform: sitk.Transform) -> bool:
    return transform.GetTransformEnum() == sitk.sitkIdentity
