"""Geometric self-ensemble: the network averaged over turns and flips of its input, outputs turned back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtsr_monai.networks.ensemble import DIHEDRAL, SelfEnsemble, symmetries, transform, untransform
from mtsr_monai.networks.rrdb import RRDBNet


def test_each_symmetry_is_undone_by_its_inverse_and_the_eight_are_distinct():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    seen = {tuple(transform(x, t, f).flatten().tolist()) for t, f in DIHEDRAL}
    assert len(seen) == 8
    assert all(torch.equal(untransform(transform(x, t, f), t, f), x) for t, f in DIHEDRAL)


def test_an_equivariant_network_is_left_unchanged():
    upsample = torch.nn.Upsample(scale_factor=4, mode="nearest")
    x = torch.rand(2, 1, 5, 7)
    assert torch.allclose(SelfEnsemble(upsample, 8)(x), upsample(x))


def test_the_ensemble_is_the_mean_of_the_turned_back_outputs_on_non_square_inputs():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1).eval()  # a random kernel: not equivariant
    x = torch.rand(1, 1, 6, 9)
    expected = torch.stack([untransform(net(transform(x, t, f)), t, f) for t, f in DIHEDRAL]).mean(0)
    with torch.no_grad():
        assert torch.allclose(SelfEnsemble(net, 8)(x), expected, atol=1e-6)
        assert torch.allclose(SelfEnsemble(net, 1)(x), net(x))
        assert not torch.allclose(SelfEnsemble(net, 8)(x), net(x), atol=1e-3)


@pytest.mark.parametrize("size", [0, 3, 16, True, "eight", 2.0])
def test_a_size_other_than_1_2_4_8_is_refused(size):
    with pytest.raises(ValueError, match="self-ensemble"):
        symmetries(size)


def test_volume_super_resolution_with_the_ensemble_keeps_geometry_and_channels_last():
    from mtsr_monai.inference.super_resolve import super_resolve_volume

    torch.manual_seed(0)
    net = RRDBNet(features=8, growth=4, num_blocks=1)
    vol = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32) + 0.5
    one, grid = super_resolve_volume(vol, np.eye(4), network=net, precision="fp32", progress=False)
    eight, grid8 = super_resolve_volume(
        vol, np.eye(4), network=net, precision="fp32", progress=False, self_ensemble=8
    )
    assert eight.shape == one.shape == (48, 40, 3) and np.array_equal(grid, grid8)
    assert 0 < np.abs(eight - one).mean() < 0.2 * np.abs(one).mean()
