"""The group report's carrying of an input onto an output grid and back (by the headers), on a known case."""

from __future__ import annotations

import numpy as np
import pytest

from mtsr_monai.bids.quality import average_onto, carry_labels, consistency
from mtsr_monai.inference.super_resolve import sr_affine


@pytest.fixture
def coarse() -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(0).random((6, 5, 4)) + 1
    return image, np.array([[4.0, 0, 0, -10], [0, 4.0, 0, 3], [0, 0, 1.0, 7], [0, 0, 0, 1]])


def test_an_x4_nearest_upsampling_averages_back_to_its_input_exactly(coarse):
    image, affine = coarse
    fine = image.repeat(4, axis=0).repeat(4, axis=1)  # each input voxel: a 4 x 4 block of the output
    mean, counts = average_onto(fine, sr_affine(affine, [0, 1], 4), image.shape, affine)
    np.testing.assert_allclose(mean, image, atol=1e-12)
    assert np.all(counts == 16)
    stats = consistency(image, affine, np.ones(image.shape, bool), fine, sr_affine(affine, [0, 1], 4))
    assert stats["consistency_r"] == pytest.approx(1.0) and stats["consistency_nrmse"] == pytest.approx(0.0)


def test_an_input_label_map_is_carried_onto_each_voxel_of_its_x4_block(coarse):
    image, affine = coarse
    labels = (image * 3).astype(np.uint8)
    carried = carry_labels(labels, affine, (24, 20, 4), sr_affine(affine, [0, 1], 4))
    np.testing.assert_array_equal(carried, labels.repeat(4, axis=0).repeat(4, axis=1))
