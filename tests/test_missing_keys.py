"""Dictionary wrappers with allow_missing_keys pass a dict that holds none of their keys through, without
reading their reference / mask key; figures read a 0/1 mask of any dtype as a mask."""

from __future__ import annotations

import numpy as np
import pytest

from mtsr_monai.transforms.intensity import display_range
from mtsr_monai.transforms.scale import RestoreIntensityd, ScaleIntensityPercentilesInMaskd


@pytest.mark.parametrize(
    "transform",
    [
        RestoreIntensityd(keys="pred", allow_missing_keys=True),
        ScaleIntensityPercentilesInMaskd(keys="t2", allow_missing_keys=True),
    ],
)
def test_a_dict_without_the_keys_passes_through_unread(transform):
    data = {"t1": np.ones((1, 4, 4, 4), np.float32)}
    assert transform(data).keys() == data.keys()


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, bool])
def test_display_range_reads_a_mask_of_any_dtype_as_voxels(dtype):
    image = np.zeros((6, 6))
    image[2:4, 2:4] = 100.0
    mask = np.zeros((6, 6), dtype)
    mask[2:4, 2:4] = 1
    assert display_range(image, mask, include_zero=False)[0] == pytest.approx(100.0)
