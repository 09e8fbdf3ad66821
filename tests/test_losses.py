"""The loss modules: GAN objectives and the weighted sum of loss terms."""

import pytest
import torch

from mtsr_monai.losses import GanLoss, WeightedLoss


def test_gan_losses_have_expected_optima():
    loss = GanLoss("lsgan")
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert loss.discriminator(ones, zeros).item() == 0.0 and loss.generator(ones).item() == 0.0
    critic = GanLoss("critic")
    assert critic.generator(torch.full((2, 1), 20.0)).item() < 1e-6
    assert GanLoss("ragan").generator(zeros, ones).item() > GanLoss("ragan").generator(ones, zeros).item()


def test_weight_zero_term_is_not_computed():
    def boom(pred, target):
        raise AssertionError("computed")

    terms = WeightedLoss({"l1": torch.nn.L1Loss(), "vgg": boom}, {"l1": 1.0, "vgg": 0.0})(
        torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    )
    assert set(terms) == {"l1", "total"} and terms["total"].item() == 1.0


def test_bright_tail_loss_scores_only_voxels_at_or_above_the_threshold():
    from mtsr_monai.losses.reconstruction import BrightTailL1Loss, generator_loss

    target = torch.tensor([[[[0.2, 0.3], [0.7, 0.9]]]])
    pred = torch.tensor([[[[0.9, 0.0], [0.5, 0.9]]]])  # large errors below the threshold, 0.2 and 0 above
    assert BrightTailL1Loss(0.6)(pred, target).item() == pytest.approx(0.1)
    none_bright = BrightTailL1Loss(0.95)(pred.requires_grad_(), target)
    assert none_bright.item() == 0.0 and none_bright.requires_grad
    assert set(generator_loss("mae+ssim+tail").losses) == {"mae", "ssim", "tail"}


def test_gan_loss_of_a_multi_scale_discriminator_sums_its_scales():
    from mtsr_monai.losses.gan import GanLoss
    from mtsr_monai.networks.bicyclegan import PooledMultiScaleDiscriminator

    torch.manual_seed(0)
    disc, loss = PooledMultiScaleDiscriminator(ndf=8, image_size=64), GanLoss("lsgan")
    fake, real = disc(torch.rand(2, 1, 64, 64)), disc(torch.rand(2, 1, 64, 64))
    # not the coarsest scale alone
    assert torch.allclose(loss.generator(fake), sum(loss.generator(f) for f in fake))
    assert torch.allclose(loss.discriminator(real, fake), sum(map(loss.discriminator, real, fake)))
