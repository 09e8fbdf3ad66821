"""Attention-gated U-Net of the clinical SR paper (same-size restoration of registered thick-slice scans).

Why not ``monai.networks.nets.AttentionUnet``: MONAI's version uses batch norm and ReLU in its conv blocks,
batch-normalised up-convolutions and no output activation, whereas the paper (and its code) uses
conv 3x3 without bias -> InstanceNorm -> LeakyReLU, a plain transposed convolution 2/2 to go up, and a
1x1 conv + sigmoid output. So the blocks here are composed from ``monai.networks.blocks.Convolution``
with the paper's choices:

- conv block: 2 x [conv 3x3 (no bias) -> InstanceNorm -> LeakyReLU(0.2)]
- down: max-pool 2 then a conv block; up: transposed conv 2/2, additive attention gate on the skip,
  concatenation, conv block
- gate (Oktay et al. 2018): ``psi = sigmoid(norm(conv1x1(relu(norm(W_g g) + norm(W_x x)))))``,
  skip ``x * psi``, with ``g`` the up-sampled decoder feature at the skip's resolution
- head: conv 1x1 + sigmoid. ``residual=True`` (our option, off by default, not in the paper) adds the
  head's output to ``logit(input)`` before the sigmoid so that an untrained net returns its (interpolated)
  input; it needs ``in_channels == out_channels`` and is used by the CPU-trained shipped weights.

Depth (number of resolution levels) is ``min(floor(log2(min(H, W))), 5)`` as in the paper's code when
``depth`` is None and ``input_size`` given, else 5. Inputs whose size is not a multiple of ``2**(depth-1)``
are zero-padded (a slice padded to one multiple in both directions, to two in the last: a 1 x 1 bottleneck
has nothing for instance normalisation to normalise) and the output cropped back.
The attention coefficient maps of the last forward pass are kept (detached) in ``self.attention_maps``,
ordered from the finest gate to the coarsest, and ``forward(x, return_attention=True)`` returns them
alongside the output, for explainability. They lie on the padded grid (gate k: its size / 2**k, not
cropped): stretch gate k by 2**k, then keep the input's extent (``inference.explain`` does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

ACT = ("leakyrelu", {"negative_slope": 0.2, "inplace": True})


def depth_for_size(input_size: Sequence[int] | int | None, max_depth: int = 5) -> int:
    """The paper's depth: ``min(floor(log2(smallest side)), max_depth)``; ``max_depth`` when unknown."""
    if input_size is None:
        return max_depth
    side = input_size if isinstance(input_size, int) else min(int(s) for s in input_size)
    return max(1, min(int(math.log2(max(side, 1))), max_depth))


class ConvBlock(nn.Sequential):
    """Two [conv 3x3 without bias -> InstanceNorm -> LeakyReLU] layers."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__(
            *(
                Convolution(
                    spatial_dims,
                    channels_in,
                    out_channels,
                    kernel_size=3,
                    act=ACT,
                    norm="INSTANCE",
                    bias=False,
                    dropout=dropout or None,
                )
                for channels_in in (in_channels, out_channels)
            )
        )


class AttentionGate(nn.Module):
    """Additive attention gate: ``forward(g, x) -> (x * psi, psi)``, ``psi`` in [0, 1], shape (B, 1, ...)."""

    def __init__(
        self, spatial_dims: int, gate_channels: int, skip_channels: int, inter_channels: int
    ) -> None:
        super().__init__()
        # the gating signal and the skip, each projected to inter_channels by a normalised 1x1 conv
        self.w_g, self.w_x = (
            Convolution(
                spatial_dims,
                channels,
                inter_channels,
                kernel_size=1,
                norm="INSTANCE",
                conv_only=False,
                act=None,
            )
            for channels in (gate_channels, skip_channels)
        )
        self.psi = Convolution(spatial_dims, inter_channels, 1, kernel_size=1, norm="INSTANCE", act="sigmoid")

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        psi = self.psi(F.relu(self.w_g(g) + self.w_x(x)))
        return x * psi, psi


class AttentionGatedUNet(nn.Module):
    """Attention-gated U-Net mapping (B, in_channels, H, W) to (B, out_channels, H, W) in [0, 1]."""

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 3,
        filters: int = 64,
        depth: int | None = None,
        input_size: Sequence[int] | int | None = None,
        residual: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if residual and in_channels != out_channels:
            raise ValueError("residual=True needs in_channels == out_channels")
        self.spatial_dims, self.residual = spatial_dims, residual
        self.depth = depth_for_size(input_size) if depth is None else int(depth)
        if self.depth < 1:
            raise ValueError("depth must be >= 1")
        widths = [filters * 2**i for i in range(self.depth)]
        self.widths = widths
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        self.encoder = nn.ModuleList([ConvBlock(spatial_dims, in_channels, widths[0], dropout)])
        self.pools = nn.ModuleList()
        for i in range(1, self.depth):
            self.pools.append(pool(2))
            self.encoder.append(ConvBlock(spatial_dims, widths[i - 1], widths[i], dropout))
        self.ups, self.gates, self.decoder = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(self.depth - 1, 0, -1):  # coarse to fine
            self.ups.append(
                Convolution(
                    spatial_dims,
                    widths[i],
                    widths[i - 1],
                    strides=2,
                    kernel_size=2,
                    is_transposed=True,
                    conv_only=True,
                    padding=0,
                    output_padding=0,
                )
            )
            self.gates.append(
                AttentionGate(spatial_dims, widths[i - 1], widths[i - 1], max(widths[i - 1] // 2, 1))
            )
            self.decoder.append(ConvBlock(spatial_dims, 2 * widths[i - 1], widths[i - 1], dropout))
        self.head = Convolution(spatial_dims, widths[0], out_channels, kernel_size=1, conv_only=True)
        if residual:  # start as the identity on the (interpolated) input
            nn.init.zeros_(self.head.conv.weight)
            nn.init.zeros_(self.head.conv.bias)
        self.attention_maps: list[torch.Tensor] = []

    @property
    def multiple(self) -> int:
        """Spatial sizes are padded to a multiple of this (``2 ** (depth - 1)``)."""
        return 2 ** (self.depth - 1)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        size = x.shape[2:]
        m = self.multiple
        padded = [s + (-s) % m for s in size]
        if all(p == m for p in padded):  # the bottleneck would be 1 x 1, which instance norm refuses
            padded[-1] = 2 * m
        pads: list[int] = []
        for s, p in zip(reversed(size), reversed(padded), strict=True):
            pads += [0, p - s]
        xin = F.pad(x, pads) if any(pads) else x
        skips = [self.encoder[0](xin)]
        for pool, block in zip(self.pools, self.encoder[1:], strict=True):
            skips.append(block(pool(skips[-1])))
        h = skips.pop()
        maps = []
        for up, gate, block in zip(self.ups, self.gates, self.decoder, strict=True):
            h = up(h)
            skip = skips.pop()
            gated, psi = gate(h, skip)
            maps.append(psi)
            h = block(torch.cat([gated, h], dim=1))
        logits = self.head(h)
        if self.residual:
            logits = logits + torch.logit(xin.clamp(1e-3, 1 - 1e-3))
        out = torch.sigmoid(logits)
        crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in size)
        out = out[crop]
        # finest gate first, on the padded grid (see the module docstring)
        self.attention_maps = [mp.detach() for mp in reversed(maps)]
        if return_attention:
            return out, list(reversed(maps))
        return out
