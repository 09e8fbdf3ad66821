"""``transforms.foreground.object_mask``: the object voxels the training scaling and the clinical
consistency check both use."""

import numpy as np

from mtsr_monai.transforms.foreground import object_mask


def _brain_in_noise(noise: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    volume = np.zeros((40, 40, 20), np.float32)
    volume[10:30, 10:30, 5:15] = rng.uniform(400, 900, (20, 20, 10))
    return volume + np.abs(rng.normal(0, noise, volume.shape)).astype(np.float32) if noise else volume


def test_a_skull_stripped_scan_is_its_non_zero_voxels():
    volume = _brain_in_noise(0)
    np.testing.assert_array_equal(object_mask(volume), volume != 0)


def test_a_noisy_background_is_left_out_by_otsu():
    mask = object_mask(_brain_in_noise(20))
    assert mask[10:30, 10:30, 5:15].mean() > 0.99 and mask.sum() < 1.05 * 20 * 20 * 10


def test_rare_exact_zeros_count_as_background_only_above_the_share_asked():
    volume = _brain_in_noise(20)
    volume[0, 0, :5] = 0  # a few zeroed voxels, as a resampled corner leaves
    assert object_mask(volume, min_zero_share=0.0).sum() == volume.size - 5
    assert object_mask(volume).sum() < 1.05 * 20 * 20 * 10  # the default asks for a fifth of the voxels


def test_a_flat_image_is_all_object():
    assert object_mask(np.full((4, 4, 4), 7.0)).all()
