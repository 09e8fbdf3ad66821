"""``io.geometry.AxisOrder``: the flips and swaps that bring a stored array to a target order, and back."""

import nibabel as nib
import numpy as np
import pytest

from mtsr_monai.io.geometry import AxisOrder

# array axis 0 runs towards I, axis 1 towards R, axis 2 towards A (anisotropic voxels)
STORED_IRA = np.array([[0, 2.0, 0, 0], [0, 0, 1.5, 0], [-1.0, 0, 0, 0], [0, 0, 0, 1]])


def test_apply_then_undo_returns_the_stored_array_for_3d_and_channel_first():
    order = AxisOrder(STORED_IRA)
    volume = np.random.default_rng(0).random((4, 5, 6))
    np.testing.assert_array_equal(order.undo(order.apply(volume)), volume)
    stacked = np.stack([volume, volume * 2])
    np.testing.assert_array_equal(order.undo(order.apply(stacked)), stacked)


def test_the_default_order_is_left_posterior_superior_and_axis_follows_it():
    order = AxisOrder(STORED_IRA)
    assert order.apply(np.zeros((4, 5, 6))).shape == (5, 6, 4)
    assert [order.axis(a) for a in range(3)] == [2, 0, 1]
    assert nib.aff2axcodes(order.affine((4, 5, 6))) == ("L", "P", "S")


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PIL"])
def test_any_target_order_is_reached(codes):
    assert "".join(nib.aff2axcodes(AxisOrder(np.eye(4), codes).affine((3, 4, 5)))) == codes
