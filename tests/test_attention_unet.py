"""Attention-gated U-Net and DCGAN-like critic of the clinical SR paper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtsr_monai.networks.attention_unet import AttentionGatedUNet, depth_for_size
from mtsr_monai.networks.critic import Critic


def test_depth_follows_input_size_capped_at_five():
    assert depth_for_size(64) == 5
    assert depth_for_size((16, 40)) == 4
    assert depth_for_size(8) == 3
    assert AttentionGatedUNet(in_channels=1, out_channels=1, filters=4, input_size=16).depth == 4


def test_output_same_size_in_unit_range_for_odd_sizes():
    torch.manual_seed(0)
    net = AttentionGatedUNet(in_channels=3, out_channels=3, filters=4, depth=4)
    x = torch.rand(2, 3, 37, 50)
    y = net(x)
    assert y.shape == x.shape
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_attention_maps_one_per_gate_finest_first_in_unit_range():
    net = AttentionGatedUNet(in_channels=2, out_channels=2, filters=4, depth=4)
    y, maps = net(torch.rand(1, 2, 32, 32), return_attention=True)
    assert [m.shape[-1] for m in maps] == [32, 16, 8]
    assert all(m.shape[1] == 1 and float(m.min()) >= 0 and float(m.max()) <= 1 for m in maps)
    assert len(net.attention_maps) == 3  # kept for hooks-free explainability


def test_blocks_follow_the_paper_instance_norm_leaky_relu_no_bias():
    net = AttentionGatedUNet(in_channels=1, out_channels=1, filters=4, depth=3)
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.bias is None and c.kernel_size == (3, 3) for c in convs)
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in net.encoder.modules())
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in net.encoder.modules())
    assert all(isinstance(u.conv, torch.nn.ConvTranspose2d) for u in net.ups)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_residual_option_starts_as_the_identity():
    net = AttentionGatedUNet(in_channels=3, out_channels=3, filters=4, depth=3, residual=True)
    x = torch.rand(2, 3, 24, 24) * 0.9 + 0.05
    assert torch.allclose(net(x), x, atol=1e-5)
    with pytest.raises(ValueError):
        AttentionGatedUNet(in_channels=3, out_channels=1, residual=True)


def test_critic_returns_one_logit_and_scores_other_sizes():
    critic = Critic(in_channels=3, input_size=64, filters=4)
    assert critic(torch.rand(2, 3, 64, 64)).shape == (2, 1)
    assert critic(torch.rand(2, 3, 96, 80)).shape == (2, 1)
    drops = [m for m in critic.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 4 and all(d.p == 0.5 for d in drops)
    s = critic.score(torch.rand(2, 3, 64, 64))
    assert s.shape == (2,) and bool(((s > 0) & (s < 1)).all())


def test_one_trainer_epoch_with_critic_monitor_lowers_the_loss():
    """The shared engine drives the U-Net + critic; lambda_critic 0 still trains and scores the critic."""
    from mtsr_monai.engines.paired import PairedAdversarialTrainer
    from mtsr_monai.losses.reconstruction import generator_loss

    torch.manual_seed(0)
    hr = torch.rand(4, 1, 16, 16)
    lr = torch.nn.functional.avg_pool2d(hr, (5, 1), stride=1, padding=(2, 0))
    data = [{"lr": lr, "hr": hr}] * 8
    net = AttentionGatedUNet(in_channels=1, out_channels=1, filters=4, depth=3)
    critic = Critic(in_channels=1, input_size=16, filters=4)
    losses = []
    trainer = PairedAdversarialTrainer(
        "cpu",
        1,
        data,
        net,
        torch.optim.Adam(net.parameters(), 1e-2),
        generator_loss("mae"),
        discriminator=critic,
        d_optimizer=torch.optim.Adam(critic.parameters(), 2e-4),
        gan_loss="critic",
        adversarial_weight=0.0,
        critic_steps=5,
        input_key="lr",
        target_key="hr",
    )

    @trainer.on(__import__("ignite").engine.Events.ITERATION_COMPLETED)
    def keep(engine):
        losses.append(engine.state.output["g_total"])
        assert 0 < engine.state.output["critic_score"] < 1

    trainer.run()
    assert sum(losses[-2:]) < sum(losses[:2])


def test_explanations_of_a_volume_stored_in_another_axis_order_are_alike():
    from mtsr_monai.inference.explain import explain_volume

    torch.manual_seed(0)
    net = AttentionGatedUNet(in_channels=2, out_channels=2, filters=4, depth=3)
    critic = Critic(in_channels=2, input_size=32, filters=4)
    x = np.random.default_rng(0).random((2, 16, 12, 8)).astype(np.float32)
    lps, ras = np.diag([-1.0, -1.0, 1.0, 1.0]), np.eye(4)
    ref = explain_volume(net, critic, x, x, 2, ["t1", "t2"], affine=lps)
    stored = np.ascontiguousarray(x[:, ::-1, ::-1])  # the same image stored R, A, S
    got = explain_volume(net, critic, stored, stored, 2, ["t1", "t2"], affine=ras)
    np.testing.assert_allclose(got["gradcam"][::-1, ::-1], ref["gradcam"], atol=1e-5)
    np.testing.assert_allclose(got["attention"][0][::-1, ::-1], ref["attention"][0], atol=1e-5)
    assert got["critic_score"] == pytest.approx(ref["critic_score"])


def test_attention_maps_do_not_depend_on_the_padding_that_follows_a_slice():
    from mtsr_monai.inference.explain import attention_volumes

    torch.manual_seed(0)
    net = AttentionGatedUNet(in_channels=1, out_channels=1, filters=2, depth=5)
    padded = np.zeros((1, 64, 64, 1), np.float32)  # what the network pads a 50 x 50 slice to
    padded[0, :50, :50] = np.random.default_rng(0).random((50, 50, 1))
    small = attention_volumes(net, padded[:, :50, :50], axis=2)
    full = attention_volumes(net, padded, axis=2)
    for k in range(4):
        np.testing.assert_allclose(small[k], full[k][:50, :50], atol=1e-6)


def test_critic_gradcam_is_highest_where_the_critic_looks():
    import torch.nn.functional as F

    from mtsr_monai.inference.explain import gradcam_volume

    torch.manual_seed(0)
    critic = Critic(in_channels=1, input_size=32, filters=4).eval()
    y = np.random.default_rng(0).random((1, 32, 32, 2)).astype(np.float32)
    got, _ = gradcam_volume(critic, y, axis=2)
    # Selvaraju et al.: ReLU(sum_c mean(dlogit/dA_c) A_c) on the last block, upsampled
    seen = {}
    critic.features[-1].register_forward_hook(lambda m, i, o: seen.setdefault("a", o))
    logit = critic(torch.from_numpy(np.ascontiguousarray(np.moveaxis(y, 3, 0))))
    (grad,) = torch.autograd.grad(logit[:, 0].sum(), seen["a"])
    cam = F.relu((grad.mean((2, 3), keepdim=True) * seen["a"]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[:, 0].detach().numpy()
    for k in range(2):
        peak = np.unravel_index(cam[k].argmax(), cam[k].shape)
        assert got[..., k][peak] == pytest.approx(1.0) and got[..., k].min() == pytest.approx(0.0)
        assert np.corrcoef(got[..., k].ravel(), cam[k].ravel())[0, 1] > 0.999


def test_attention_maps_come_from_the_restorations_sliding_windows():
    import numpy as np

    from mtsr_monai.inference.explain import attention_volumes

    torch.manual_seed(0)
    net = AttentionGatedUNet(in_channels=1, out_channels=1, filters=4, depth=3).eval()
    x = np.random.default_rng(0).random((1, 40, 40, 2)).astype(np.float32)  # two 40 x 40 slices (axis 2)
    windowed = attention_volumes(net, x, 2, patch_size=16)[0]
    whole = attention_volumes(net, x, 2)[0]
    with torch.no_grad():  # windows at 0, 12, 24 (overlap 0.25): the corner 12 x 12 is the first one's alone
        _, gates = net(torch.from_numpy(np.moveaxis(x, 3, 0)[..., :16, :16].copy()), return_attention=True)
    corner = gates[0][:, 0, :12, :12].numpy()  # the finest gate, at full resolution
    np.testing.assert_allclose(np.moveaxis(windowed, 2, 0)[:, :12, :12], corner, atol=1e-5)
    assert np.abs(whole - windowed).max() > 1e-3  # a whole slice is normalised otherwise
    np.testing.assert_allclose(attention_volumes(net, x, 2, patch_size=40)[0], whole, atol=1e-5)


def test_a_slice_no_larger_than_one_padding_multiple_is_restored():
    # padded to 16 x 16, the bottleneck of depth 5 was 1 x 1: instance norm refused it (mtsr clinical-sr
    # --full-slices on a 14 x 14 slice exited with an internal error)
    net = AttentionGatedUNet(spatial_dims=2, in_channels=3, out_channels=3, filters=4, depth=5)
    out = net(torch.rand(2, 3, 14, 14))
    assert out.shape == (2, 3, 14, 14) and net.attention_maps[0].shape[-2:] == (16, 32)
