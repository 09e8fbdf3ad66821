"""The MT bundle's two masking steps are MONAI's MaskIntensityd: MaskOutsided (inference.yaml, after its grid
check) and ZeroOutsideInputd (evaluate.yaml, the input given a leading axis) write what the former
hand-written products wrote, on a real volume and on synthetic ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import MaskIntensityd

from mtsr_monai.errors import InputError
from mtsr_monai.inference.components import MaskOutsided
from mtsr_monai.inference.translation_eval import ZeroOutsideInputd
from mtsr_monai.io.geometry import resolve_axis
from mtsr_monai.transforms.io import LoadVolumed
from tests.conftest import write_nifti


def _former_mask_outside(img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The product MaskOutsided computed before it was a MaskIntensityd (its first mask channel)."""
    return img * torch.from_numpy(np.asarray(mask)[0] > 0).to(img.dtype)


def _assert_same_volume(new: MetaTensor, old: MetaTensor) -> None:
    assert type(new) is type(old) and new.dtype == old.dtype
    # bit for bit, the sign of the zeros included (a negative value times 0 is -0.0 in both)
    assert torch.equal(new.as_tensor().view(torch.int32), old.as_tensor().view(torch.int32))
    assert torch.equal(new.affine, old.affine) and new.meta.keys() == old.meta.keys()
    for key, value in old.meta.items():
        np.testing.assert_array_equal(np.asarray(new.meta[key]), np.asarray(value), err_msg=key)


def _masked_item(image: np.ndarray, mask: np.ndarray, folder: Path, affine=None) -> dict:
    folder.mkdir(exist_ok=True)
    paths = {
        "image": write_nifti(folder / "image.nii.gz", image.astype(np.float32), affine),
        "mask": write_nifti(folder / "mask.nii.gz", mask.astype(np.float32), affine),
    }
    return LoadVolumed(keys=["image", "mask"], validate=False)({k: str(v) for k, v in paths.items()})


def test_mask_outside_is_the_former_product_on_a_real_volume(brats_case):
    # a real T1 shifted to have negative values too (the sign of the zeros is compared), and a non-trivial
    # mask on its grid: the brighter half of the brain
    image = LoadVolumed(keys="image")({"image": str(brats_case["t1"])})["image"]
    brain = image[image > 0]
    image = image - torch.quantile(brain[:: max(1, brain.numel() // 100000)], 0.05)
    inside = (image > image[image > 0].median()).as_tensor()
    mask = MetaTensor(inside.float(), affine=image.affine, meta={"filename_or_obj": "mask"})
    d = {"image": image, "mask": mask}
    out = MaskOutsided(keys="image")(d)
    _assert_same_volume(out["image"], _former_mask_outside(image, mask))
    assert out["mask"] is mask  # the mask itself untouched (the writer may keep it)


def test_mask_outside_is_the_former_product_for_a_uint8_mask(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((12, 10, 6)).astype(np.float32)
    d = _masked_item(image, np.ones_like(image), tmp_path / "a", np.diag([0.9, 0.9, 3.0, 1.0]))
    # an estimated mask (AutoBrainMaskd) is uint8: MaskIntensity compares it in the image's dtype
    d["mask"] = d["mask"].to(torch.uint8) * torch.from_numpy(rng.random(image.shape) > 0.5)
    out = MaskOutsided(keys="image")(d)
    _assert_same_volume(out["image"], _former_mask_outside(d["image"], d["mask"]))


def test_mask_outside_refuses_a_mask_off_the_grid_or_empty_and_skips_a_missing_one(tmp_path):
    image = np.random.default_rng(1).random((8, 8, 4)).astype(np.float32)
    d = _masked_item(image, np.ones_like(image), tmp_path / "a")
    assert MaskOutsided(keys="image")({"image": d["image"]})["image"] is d["image"]  # no mask: as it was
    shifted = _masked_item(image, np.ones_like(image), tmp_path / "b", np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(InputError):  # same shape, another grid: MaskIntensityd alone would apply it
        MaskOutsided(keys="image")({"image": d["image"], "mask": shifted["mask"]})
    with pytest.raises(InputError):
        MaskOutsided(keys="image")({"image": d["image"], "mask": d["mask"] * 0})


def _real_eval_slices(brats_case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, H, W) input slices as EvaluationSlicesd makes them: the source zero outside the target's brain."""
    from mtsr_monai.data.slices import load_subject, spaced_brain_slices

    vol = load_subject(
        {"t1": str(brats_case["t1"]), "flair": str(brats_case["flair"])}, ["t1", "flair"], None
    )
    axis = resolve_axis(vol["affine"], "axial")
    source, target = vol["t1"][0].movedim(axis, 0), vol["flair"][0].movedim(axis, 0)
    picks = spaced_brain_slices(target, 4)
    return torch.where(target[picks] > 0, source[picks], torch.zeros(())), target[picks]


@pytest.mark.parametrize("samples", [3, 4])  # 4 = S: the count the input's own leading axis would pass as
def test_zero_outside_input_is_the_former_product_on_real_slices(brats_case, samples):
    image, _ = _real_eval_slices(brats_case)
    pred = torch.randn((samples, *image.shape), generator=torch.Generator().manual_seed(0))
    out = ZeroOutsideInputd(keys="pred")({"image": image, "pred": pred})
    former = pred * (image > 0)[None]
    assert torch.equal(out["pred"].as_tensor().view(torch.int32), former.view(torch.int32))
    assert out["image"] is image


def test_zero_outside_input_needs_its_leading_axis_with_monai_alone():
    image = torch.rand(5, 8, 8) * (torch.rand(5, 8, 8) > 0.3)
    pred = torch.randn(3, 5, 8, 8)
    with pytest.raises(ValueError):  # MONAI reads the S slices as 5 channels against 3 samples
        MaskIntensityd(keys="pred", mask_key="image")({"image": image, "pred": pred})
    out = ZeroOutsideInputd(keys="pred")({"image": image, "pred": pred})
    assert torch.equal(out["pred"].as_tensor(), pred * (image > 0)[None])
