"""DCGAN-like critic of the clinical SR paper: is this slice a real high-resolution scan or a restored one?

Four blocks of [conv 4x4 stride 2 -> LeakyReLU(0.2) -> dropout (0.5, as in the paper; its code used 0.2)],
then a conv with one filter, flatten, and a dense layer to one score. The paper ends with a sigmoid; here the
network returns the LOGIT and the sigmoid lives inside the loss (``GanLoss("critic")``: BCE-with-logits for
the critic, ``1 - E[sigmoid(D(y_hat))]`` for the generator), which is the same function, numerically safer.
``score(x)`` gives the sigmoid score in [0, 1].

The dense layer needs a fixed feature size: features are average-pooled to ``input_size / 16`` (identity for
inputs of ``input_size``), so full slices of other sizes can be scored too. The last conv block
(``self.features[-1]``) is the GradCAM target layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn


class Critic(nn.Module):
    """(B, C, H, W) -> (B, 1) logits."""

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        input_size: Sequence[int] | int = 64,
        filters: int = 32,
        dropout: float = 0.5,
        num_blocks: int = 4,
    ) -> None:
        super().__init__()
        size = (
            [int(input_size)] * spatial_dims if isinstance(input_size, int) else [int(s) for s in input_size]
        )
        if len(size) != spatial_dims:
            raise ValueError(f"input_size {input_size} does not match spatial_dims {spatial_dims}")
        blocks, channels = [], in_channels
        for i in range(num_blocks):
            out = filters * 2**i
            blocks.append(
                Convolution(
                    spatial_dims,
                    channels,
                    out,
                    strides=2,
                    kernel_size=4,
                    padding=1,
                    act=("leakyrelu", {"negative_slope": 0.2}),
                    norm=None,
                    dropout=dropout or None,
                    adn_ordering="AD",
                )
            )
            channels = out
        self.features = nn.Sequential(*blocks)
        self.to_one = Convolution(spatial_dims, channels, 1, kernel_size=3, conv_only=True)
        pooled = [max(s // 2**num_blocks, 1) for s in size]
        pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        self.pool = pool(pooled)
        n = 1
        for p in pooled:
            n *= p
        self.dense = nn.Linear(n, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.to_one(self.features(x)))
        return self.dense(torch.flatten(h, 1))

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's generation score sigmoid(D(x)) in [0, 1], shape (B,)."""
        return torch.sigmoid(self(x))[:, 0]
