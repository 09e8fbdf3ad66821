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
