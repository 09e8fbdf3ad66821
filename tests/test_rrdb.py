"""RRDB generator: x4 shapes, block selection (count, indices, paper variants), pruned loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtsr_monai.networks.rrdb import RRDBNet, load_pruned_state_dict, resolve_keep_blocks, variant_blocks

TINY = {"features": 8, "growth": 4}


def test_generator_upsamples_by_four():
    net = RRDBNet(num_blocks=3, **TINY)
    assert net(torch.rand(2, 1, 12, 10)).shape == (2, 1, 48, 40)


def test_every_other_keeps_even_indices_of_23():
    assert resolve_keep_blocks("every_other", 23) == list(range(0, 23, 2))
    assert resolve_keep_blocks(12, 23) == list(range(0, 23, 2))
    assert len(RRDBNet(keep_blocks="every_other", **TINY).body) == 12


def test_paper_variants_follow_their_removal_lists():
    assert len(variant_blocks("v0")) == 23
    assert variant_blocks("v1") == list(range(2, 21))
    assert variant_blocks("v2") == list(range(4, 19))
    assert variant_blocks("v3") == list(range(11, 23))
    assert variant_blocks("v4") == list(range(0, 11))
    assert variant_blocks("proposed") == list(range(0, 23, 2))


def test_explicit_indices_out_of_range_are_refused():
    with pytest.raises(ValueError):
        RRDBNet(num_blocks=4, keep_blocks=[0, 4], **TINY)


def test_pruned_loader_copies_kept_blocks_from_full_checkpoint():
    full = RRDBNet(num_blocks=5, **TINY)
    pruned = RRDBNet(num_blocks=5, keep_blocks=[0, 3], **TINY)
    dropped = load_pruned_state_dict(pruned, {"model": full.state_dict()})
    assert dropped == ["1", "2", "4"]
    for key, value in pruned.state_dict().items():
        assert torch.equal(value, full.state_dict()[key]), key


def test_pruned_net_with_all_blocks_reproduces_the_full_net():
    full = RRDBNet(num_blocks=3, **TINY).eval()
    copy = RRDBNet(num_blocks=3, keep_blocks=[0, 1, 2], **TINY).eval()
    load_pruned_state_dict(copy, {f"module.{k}": v.half() for k, v in full.state_dict().items()})
    x = torch.rand(1, 1, 8, 8)
    assert torch.allclose(copy(x), full(x), atol=1e-2)


def test_pruned_loader_refuses_checkpoint_missing_kept_block():
    small = RRDBNet(num_blocks=2, **TINY)
    wider = RRDBNet(num_blocks=4, keep_blocks=[0, 3], **TINY)
    with pytest.raises(KeyError):
        load_pruned_state_dict(wider, small.state_dict())


def test_bicubic_skip_starts_as_bicubic():
    net = RRDBNet(num_blocks=2, global_skip="bicubic", **TINY)
    x = torch.rand(1, 1, 8, 8)
    expected = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.allclose(net(x), expected, atol=1e-6)


def test_twelve_block_net_has_about_half_the_trunk_parameters():
    def count(n):
        return sum(p.numel() for p in n.parameters())

    full, pruned = RRDBNet(), RRDBNet(keep_blocks="every_other")
    trunk = count(full.body) / 23
    assert count(full) - count(pruned) == pytest.approx(11 * trunk)


def _plain_forward(net: RRDBNet, x: torch.Tensor) -> torch.Tensor:
    """ESRGAN's forward the textbook way: nearest x2 upsampling then conv, conv_last as a plain conv."""
    feat = net.conv_first(x)
    body = feat
    for block in net.body.values():
        body = block(body)
    feat = feat + net.conv_body(body)
    for up in net.upconvs:
        feat = up(F.interpolate(feat, scale_factor=2, mode="nearest"))
    return net.conv_last(net.conv_hr(feat))


@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_tail_computes_nearest_upsampling_then_conv(channels_last):
    torch.manual_seed(0)
    net = RRDBNet(num_blocks=1, **TINY).double()  # float64: the comparison is about the algebra, not rounding
    for p in net.parameters():  # non-zero everywhere, so every tap and the borders are exercised
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 1, 5, 7, dtype=torch.float64)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    fast, plain = net(x), _plain_forward(net, x)
    assert fast.shape == plain.shape == (2, 1, 20, 28)
    torch.testing.assert_close(fast, plain, rtol=1e-9, atol=1e-9)
    weights = [x, net.upconvs[0].conv.weight, net.conv_last.conv.weight]
    grad_fast = torch.autograd.grad(fast.square().sum(), weights)
    grad_plain = torch.autograd.grad(plain.square().sum(), weights)
    for a, b in zip(grad_fast, grad_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
