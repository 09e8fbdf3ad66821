"""PatchGAN discriminator: one logit per 70x70 patch, measured on the network itself."""

from __future__ import annotations

import torch

from mtsr_monai.networks.patchgan import patchgan


def test_patchgan_logit_sees_a_70_pixel_patch_and_gives_patch_logits():
    torch.manual_seed(0)
    # batch norm in eval mode (running statistics) keeps each logit local; the default instance norm's
    # per-image mean and variance would make every input pixel reach every logit
    net = patchgan(features=8, norm="BATCH").eval().double()
    x = torch.rand(1, 1, 128, 128, dtype=torch.float64, requires_grad=True)
    logits = net(x)[-1]
    h, w = logits.shape[-2:]
    logits[0, 0, h // 2, w // 2].backward()
    seen = x.grad[0, 0] != 0
    rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
    inside = rows.min() > 0 and rows.max() < 127 and cols.min() > 0 and cols.max() < 127
    assert inside  # the patch is not cut by the image border, so its extent is the whole field
    assert int(rows.max() - rows.min()) + 1 == 70 and int(cols.max() - cols.min()) + 1 == 70
    assert patchgan(features=8)(torch.rand(2, 1, 64, 64))[-1].shape == (2, 1, 6, 6)
