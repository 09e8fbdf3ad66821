"""What the package's transforms leave a MONAI pipeline around them: the transform history of the input
(MONAI's ``Invertd`` undoes the transforms before them), the non-zero voxels of an image, a constant image
constant, a named mask used or refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Orientationd

from mtsr_monai.transforms.bias import N4BiasFieldCorrectiond
from mtsr_monai.transforms.crop import CropToMaskBox
from mtsr_monai.transforms.degradation import RandKSpaceTruncation, RandKSpaceTruncationd
from mtsr_monai.transforms.protocol import ProtocolParams, SimulateProtocol, SimulateProtocold
from mtsr_monai.transforms.scale import ScaleIntensityPercentilesInMaskd


@pytest.mark.parametrize(
    "transform",
    [
        ScaleIntensityPercentilesInMaskd(keys="image", mask_key=None),
        SimulateProtocold(keys="image", params=ProtocolParams(axis=2, thickness=3), output_keys="image"),
        N4BiasFieldCorrectiond(keys="image", iterations=(2,), shrink_factor=1),
    ],
    ids=["percentiles", "protocol", "n4"],
)
def test_a_transform_keeps_the_history_so_invertd_undoes_the_transforms_before_it(transform):
    image = np.random.default_rng(0).random((1, 16, 16, 12), dtype=np.float32) * 100 + 1
    data = {"image": MetaTensor(torch.as_tensor(image), affine=torch.diag(torch.tensor([-1.0, 1, 1, 1])))}
    pipeline = Compose([Orientationd(keys="image", axcodes="RAS"), transform])
    out = pipeline(data)
    assert [op["class"] for op in out["image"].applied_operations] == ["Orientation"]
    out["pred"] = out["image"].clone()
    restored = Invertd(keys="pred", transform=pipeline, orig_keys="image")(out)
    assert float(restored["pred"].affine[0, 0]) < 0  # back in the input's LAS orientation


def test_invertd_refuses_to_undo_a_pad_on_the_new_grid_a_degradation_made():
    from monai.transforms import SpatialPadd

    data = {"image": MetaTensor(torch.rand(1, 12, 12, 8) + 1)}
    pipeline = Compose([SpatialPadd(keys="image", spatial_size=(16, 16, 8)),
                        RandKSpaceTruncationd(keys="image", scale=2, output_keys="image")])  # fmt: skip
    out = pipeline(data)
    out["pred"] = out["image"].clone()
    with pytest.raises(RuntimeError):  # rather than a (1, 4, 4, 8) crop of the 8 x 8 image, silently
        Invertd(keys="pred", transform=pipeline, orig_keys="image")(out)


def test_a_boxcar_protocol_keeps_a_constant_image_constant_up_to_its_edge_slices():
    image = torch.ones(1, 13, 8, 8)
    for phase in (0.0, 0.1, 0.5, 0.9):
        acquired = SimulateProtocol(ProtocolParams(axis=0, thickness=5, profile="boxcar", phase=phase))(image)
        torch.testing.assert_close(acquired, image, msg=f"phase {phase}")


def test_cropping_an_image_to_its_own_box_keeps_its_negative_voxels():
    image = np.zeros((1, 30, 30, 30), np.float32)
    image[:, 5:25, 5:25, 5:25] = -1.0  # a z-scored brain's dark rim
    image[:, 10:20, 10:20, 10:20] = 2.0
    cropped = CropToMaskBox(margin=0)(image)
    assert cropped.shape == (1, 20, 20, 20) and int(np.count_nonzero(np.asarray(cropped))) == 8000


def test_n4_refuses_a_mask_key_the_data_lacks_rather_than_fit_another_mask():
    image = MetaTensor(torch.rand(1, 12, 12, 12) + 1)
    correct = N4BiasFieldCorrectiond(keys="image", mask_key="brain_mask", iterations=(2,), shrink_factor=1)
    with pytest.raises(KeyError, match="brain_mask"):
        correct({"image": image, "brainmask": torch.ones(1, 12, 12, 12)})


def test_an_int16_scan_ranging_over_32767_gets_the_noise_of_its_float_copy():
    image = np.full((1, 16, 16, 16), -2000, np.int16)
    image[:, 4:12, 4:12, 4:12] = 31000
    noisy = []
    for dtype in (np.int16, np.float32):
        degrade = RandKSpaceTruncation(scale=2, noise=0.05, prob=1.0)
        degrade.set_random_state(0)
        noisy.append(np.asarray(degrade(torch.as_tensor(image.astype(dtype))), np.float64))
    np.testing.assert_allclose(noisy[0], noisy[1], rtol=1e-4, atol=1.0)
