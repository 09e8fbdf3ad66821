import math

import pytest
import torch

from mtsr_monai.losses import ForegroundWeightedLoss


def test_background_errors_count_with_their_weight():
    target = torch.tensor([[0.0, 0.0, 0.5, 1.0]])
    pred = torch.tensor([[1.0, 0.0, 0.5, 0.0]])  # error 1 in background pixel 0 and tissue pixel 3
    loss = ForegroundWeightedLoss(background_weight=0.25)(pred, target)
    # weights 0.25, 0.25, 1, 1: (0.25 * 1 + 1 * 1) / 2.5
    assert loss.item() == pytest.approx(0.5)


def test_weight_one_is_the_plain_mean():
    pred, target = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8) * (torch.rand(2, 1, 8, 8) > 0.5)
    loss = ForegroundWeightedLoss(torch.nn.L1Loss(reduction="none"), background_weight=1.0)(pred, target)
    assert loss.item() == pytest.approx(torch.nn.functional.l1_loss(pred, target).item())


def test_log_floor_averages_the_log_of_each_samples_error():
    target = torch.ones(2, 1, 2, 2)
    pred = torch.cat([torch.full((1, 1, 2, 2), 1.1), torch.full((1, 1, 2, 2), 2.0)])  # MSE 0.01 and 1
    loss = ForegroundWeightedLoss(log_floor=1e-4)(pred, target)
    expected = (torch.log(torch.tensor(0.01 + 1e-4)) + torch.log(torch.tensor(1.0 + 1e-4))) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_log_floor_is_blind_to_a_per_sample_intensity_scale():
    pred, target = torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    loss = ForegroundWeightedLoss(log_floor=1e-12)
    # scaling both by 3 multiplies the MSE by 9: the log moves by a constant, its gradient does not change
    assert (loss(3 * pred, 3 * target) - loss(pred, target)).item() == pytest.approx(math.log(9.0), rel=1e-4)
