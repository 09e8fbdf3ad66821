"""The training scaling as MONAI transforms: RobustScaleIntensity(d) and its inverse RestoreIntensity(d)."""

import numpy as np
import torch
from monai.data import MetaTensor

from mtsr_monai.transforms.intensity import robust_range
from mtsr_monai.transforms.keys import RANGE_KEY
from mtsr_monai.transforms.scale import RestoreIntensityd, RobustScaleIntensity, RobustScaleIntensityd


def _image() -> MetaTensor:
    volume = np.zeros((1, 12, 10, 6), np.float32)
    volume[0, 2:10, 2:8, 1:5] = np.random.default_rng(0).uniform(100, 900, (8, 6, 4))
    return MetaTensor(torch.from_numpy(volume), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))


def test_scaling_records_its_range_and_keeps_the_affine():
    image = _image()
    scaled = RobustScaleIntensity(clip=False)(image)
    lo, hi = robust_range(image)
    assert scaled.meta[RANGE_KEY] == [lo, hi]
    torch.testing.assert_close(scaled.affine, image.affine)
    np.testing.assert_allclose(scaled.numpy(), (image.numpy() - lo) / (hi - lo), rtol=1e-6)
    assert float(scaled.max()) > 1.0  # unclipped: the brightest voxels pass the 99.5th percentile


def test_restore_maps_an_unclipped_scaling_back_to_the_input_units():
    d = RobustScaleIntensityd(keys="image", clip=False)({"image": _image()})
    d["pred"] = d["image"].clone()
    restored = RestoreIntensityd(keys="pred", ref_key="image")(d)["pred"]
    np.testing.assert_allclose(restored.numpy(), _image().numpy(), rtol=1e-5, atol=1e-3)


def test_clipped_scaling_stays_in_the_unit_interval():
    scaled = RobustScaleIntensity()(_image())
    assert float(scaled.min()) >= 0.0 and float(scaled.max()) <= 1.0


def test_scaling_keeps_the_transform_history_so_an_earlier_flip_still_inverts():
    from monai.transforms import Flipd

    flip = Flipd(keys="image", spatial_axis=0)
    d = RobustScaleIntensityd(keys="image", clip=False)(flip({"image": _image()}))
    assert len(d["image"].applied_operations) == 1
    back = flip.inverse(d)["image"]
    np.testing.assert_allclose(back.numpy(), RobustScaleIntensity(clip=False)(_image()).numpy(), rtol=1e-6)


def test_the_old_configs_names_still_scale_unclipped_and_restore():
    from mtsr_monai.inference.components import IntensityRestored, RobustScaled

    d = RobustScaled(keys="image")({"image": _image()})
    assert float(d["image"].max()) > 1.0
    d["pred"] = d["image"].clone()
    np.testing.assert_allclose(IntensityRestored(keys="pred")(d)["pred"].numpy(), _image().numpy(), atol=1e-3)


def test_a_raw_scans_few_zero_padded_voxels_do_not_make_its_noisy_air_foreground():
    rng = np.random.default_rng(0)
    head = np.zeros((40, 40, 40), np.float32)
    head[8:32, 8:32, 8:32] = rng.uniform(400, 1000, (24, 24, 24))
    noisy = np.abs(head + rng.normal(0, 30, head.shape)).astype(np.float32)  # Rician-like air, no exact 0
    padded = noisy.copy()
    padded[:, :, :2] = 0  # 5 % zero padding, as a scanner's reconstruction may leave
    assert robust_range(padded)[1] == robust_range(noisy)[1] > 900
    stripped = head  # a skull-stripped scan: its non-zero voxels are the object
    assert robust_range(stripped)[1] == np.percentile(head[head > 0], 99.5)
